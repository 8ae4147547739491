package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
)

// flakyKinesis accepts PutRecords but fails a share of the entries, and now and then a
// whole call with throttling, recording what was written in order.
type flakyKinesis struct {
	mu      sync.Mutex
	rnd     *rand.Rand
	written []payload
	calls   int
	// dupInBatch records a batch that carried two records of one key.
	dupInBatch bool
}

func (f *flakyKinesis) PutRecords(_ context.Context, in *kinesis.PutRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls%7 == 0 {
		return nil, &types.ProvisionedThroughputExceededException{Message: aws.String("slow down")}
	}
	keys := map[string]bool{}
	out := &kinesis.PutRecordsOutput{}
	for _, e := range in.Records {
		if keys[aws.ToString(e.PartitionKey)] {
			f.dupInBatch = true
		}
		keys[aws.ToString(e.PartitionKey)] = true
		if f.rnd.IntN(4) == 0 {
			out.Records = append(out.Records, types.PutRecordsResultEntry{ErrorCode: aws.String("ProvisionedThroughputExceededException")})
			out.FailedRecordCount = aws.Int32(aws.ToInt32(out.FailedRecordCount) + 1)
			continue
		}
		var p payload
		if err := json.Unmarshal(e.Data, &p); err != nil {
			return nil, err
		}
		f.written = append(f.written, p)
		out.Records = append(out.Records, types.PutRecordsResultEntry{SequenceNumber: aws.String("1")})
	}
	return out, nil
}

func TestProducerKeepsKeyOrderThroughFailures(t *testing.T) {
	for _, keys := range []int{1, 7, 1000} {
		t.Run(fmt.Sprintf("%d keys", keys), func(t *testing.T) {
			fake := &flakyKinesis{rnd: rand.New(rand.NewPCG(1, uint64(keys)))}
			p := newProducer(fake, "s", produceOptions{count: 1500, keys: keys, run: "r"}, io.Discard)
			// Quick retries: the order logic is under test, not the pacing.
			p.backoff, p.minBackoff, p.maxBackoff = time.Microsecond, time.Microsecond, time.Microsecond
			stats, err := p.run(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if stats.Written != 1500 || len(fake.written) != 1500 {
				t.Errorf("written %d (fake saw %d), want 1500", stats.Written, len(fake.written))
			}
			if stats.FailedRetried == 0 {
				t.Error("no failures were retried: the fake should have failed some")
			}
			if fake.dupInBatch {
				t.Error("a batch carried two records of one key")
			}
			next := map[string]int{}
			for _, w := range fake.written {
				if w.N != next[w.Key] {
					t.Fatalf("key %s: wrote n=%d, want n=%d", w.Key, w.N, next[w.Key])
				}
				next[w.Key]++
			}
			if len(next) != keys {
				t.Errorf("%d keys used, want %d", len(next), keys)
			}
		})
	}
}

func TestProducerKeyNames(t *testing.T) {
	for _, tt := range []struct {
		keys        int
		first, last string
	}{{1000, "pk-0000", "pk-0999"}, {3, "pk-0000", "pk-0002"}, {20000, "pk-00000", "pk-19999"}} {
		p := newProducer(nil, "s", produceOptions{keys: tt.keys}, io.Discard)
		if p.keys[0] != tt.first || p.keys[tt.keys-1] != tt.last {
			t.Errorf("%d keys: %s..%s, want %s..%s", tt.keys, p.keys[0], p.keys[tt.keys-1], tt.first, tt.last)
		}
	}
}

// failingKinesis fails every call with an error retrying cannot fix.
type failingKinesis struct{}

func (failingKinesis) PutRecords(context.Context, *kinesis.PutRecordsInput, ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	return nil, &types.ResourceNotFoundException{Message: aws.String("no such stream")}
}

func TestProducerStopsOnPermanentError(t *testing.T) {
	p := newProducer(failingKinesis{}, "s", produceOptions{count: 10, keys: 10, run: "r"}, io.Discard)
	_, err := p.run(t.Context())
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("err = %v, want the ResourceNotFoundException", err)
	}
}

func TestProduceRate(t *testing.T) {
	name := enginetest.UniqueName(t, "rate")
	enginetest.CreateStream(t, name, 2)
	start := time.Now()
	r := kdsctl(t, "--stream", name, "produce", "--rate", "200", "--duration", "1500ms", "--keys", "10", "-o", "json")
	el := time.Since(start)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	var s produceStats
	mustJSON(t, r, &s)
	// 200/s for 1.5 s is 300, with slack for the ticker's first period; more would mean
	// the rate is ignored. Fewer is no fault: a batch carries one record per key (10 here),
	// so a busy engine's slow PutRecords bound the rate from below (CI saw 110).
	if s.Written < 1 || s.Written > 320 {
		t.Errorf("written %d at 200/s for 1.5s", s.Written)
	}
	if el < 1400*time.Millisecond {
		t.Errorf("finished after %s, before the duration", el)
	}
	if !strings.Contains(r.stderr, "written") {
		t.Errorf("no progress on stderr")
	}
}

// streamPayloads reads the stream back and returns its records, and run's n per key in
// stream order.
func streamPayloads(t *testing.T, name, run string) ([]streamRecord, map[string][]int) {
	t.Helper()
	recs, err := readStream(t.Context(), kinesisstream.New(enginetest.Kinesis(t), name))
	if err != nil {
		t.Fatal(err)
	}
	perKey := map[string][]int{}
	for _, r := range recs {
		var p payload
		if json.Unmarshal(r.Data, &p) == nil && p.Run == run {
			if p.Key != r.PartitionKey {
				t.Errorf("record of key %s has partition key %s", p.Key, r.PartitionKey)
			}
			perKey[p.Key] = append(perKey[p.Key], p.N)
		}
	}
	return recs, perKey
}
