package kinesisstream_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Dead-lettered records land on the dead-letter stream with their data and partition
// keys, on the real engine.
func TestDeadLetterStreamOnTheEngine(t *testing.T) {
	k, client := newStream(t, 1)
	dl := &kinesisstream.DeadLetterStream{API: client, Stream: k.StreamName()}
	var recs []stream.Record
	for i := range 3 {
		recs = append(recs, stream.Record{SequenceNumber: fmt.Sprint(i), PartitionKey: fmt.Sprintf("key-%d", i), Data: fmt.Appendf(nil, "bad-%d", i)})
	}
	if err := dl.Put(t.Context(), "shardId-000000000007", recs, fmt.Errorf("cannot parse")); err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, k, "shardId-000000000000", stream.Position{Type: stream.TrimHorizon})
	if len(got) != 3 {
		t.Fatalf("read %d records, want 3", len(got))
	}
	for i, r := range got {
		if string(r.Data) != string(recs[i].Data) || r.PartitionKey != recs[i].PartitionKey {
			t.Errorf("record %d: %q with key %q, want %q with %q", i, r.Data, r.PartitionKey, recs[i].Data, recs[i].PartitionKey)
		}
	}
}

// throttlingPuts fails the records whose data is in fail once each, and keeps what it
// accepted.
type throttlingPuts struct {
	fail     map[string]bool
	calls    int
	accepted []string
}

func (p *throttlingPuts) PutRecords(_ context.Context, in *kinesis.PutRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	p.calls++
	out := &kinesis.PutRecordsOutput{}
	for _, e := range in.Records {
		res := types.PutRecordsResultEntry{}
		if d := string(e.Data); p.fail[d] {
			delete(p.fail, d)
			res.ErrorCode, res.ErrorMessage = aws.String("ProvisionedThroughputExceededException"), aws.String("slow down")
		} else {
			p.accepted = append(p.accepted, d)
		}
		out.Records = append(out.Records, res)
	}
	return out, nil
}

// More records than one call takes go in several calls, and those the service failed
// are put again.
func TestDeadLetterStreamPutsAgainWhatFailed(t *testing.T) {
	var recs []stream.Record
	var want []string
	for i := range 1200 {
		d := fmt.Sprint(i)
		recs = append(recs, stream.Record{PartitionKey: "k", Data: []byte(d)})
		want = append(want, d)
	}
	api := &throttlingPuts{fail: map[string]bool{"3": true, "700": true}}
	if err := (&kinesisstream.DeadLetterStream{API: api, Stream: "dlq"}).Put(t.Context(), "s", recs, nil); err != nil {
		t.Fatal(err)
	}
	slices.Sort(api.accepted)
	slices.Sort(want)
	if !slices.Equal(api.accepted, want) || api.calls != 3 {
		t.Errorf("%d calls accepted %d records, want 3 calls (500, 500, 202) and all %d once", api.calls, len(api.accepted), len(want))
	}
}
