package consumer

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// poisonProcessor processes the records before a record whose data is "poison" (and
// checkpoints them), then fails: it can never get past that record.
type poisonProcessor struct {
	testProcessor
	calls atomic.Int64
}

func (p *poisonProcessor) ProcessRecords(ctx context.Context, in ProcessRecordsInput) error {
	p.calls.Add(1)
	i := slices.IndexFunc(in.Records, func(r stream.Record) bool { return string(r.Data) == "poison" })
	if i < 0 {
		return p.testProcessor.ProcessRecords(ctx, in)
	}
	if i > 0 {
		in.Records = in.Records[:i]
		if err := p.testProcessor.ProcessRecords(ctx, in); err != nil {
			return err
		}
	}
	return errors.New("cannot parse the poison record")
}

// deadLetters keeps what FailureDeadLetter puts, failing the first put.
type deadLetters struct {
	mu      sync.Mutex
	failed  bool
	records []stream.Record
	causes  []error
}

func (d *deadLetters) Put(_ context.Context, shardID string, records []stream.Record, cause error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.failed {
		d.failed = true
		return errors.New("dead-letter stream throttled")
	}
	d.records = append(d.records, records...)
	d.causes = append(d.causes, cause)
	return nil
}

// A batch the processor keeps failing on is retried ProcessorRetries times, then handled
// as OnProcessorFailure says: retried forever, the shard stopped (lease held, nothing
// more read), or the rest of the batch skipped or dead-lettered and checkpointed past,
// after which later records flow again.
func TestAFailingBatchIsHandledAsThePolicySays(t *testing.T) {
	const shard = "shardId-000000000000"
	for _, policy := range []FailurePolicy{FailureRetry, FailureStop, FailureSkip, FailureDeadLetter} {
		t.Run(string(policy), func(t *testing.T) {
			c := newCluster(t, 1)
			before := c.produce("a", 5)
			_, poison := c.stream.Put("p", []byte("poison"))
			rest := c.produce("b", 5)
			p := &poisonProcessor{testProcessor: testProcessor{c: c, worker: "w0", shard: shard}}
			c.proc = func(string, string) RecordProcessor { return p }
			dl := &deadLetters{}
			var abandoned atomic.Value
			rw := c.start("w0", func(cfg *Config) {
				cfg.OnProcessorFailure, cfg.ProcessorRetries, cfg.DeadLetter = policy, 2, dl
				cfg.Hooks.BatchAbandoned = func(s string, pol FailurePolicy, n int) {
					abandoned.Store([]any{s, pol, n})
				}
			})
			c.waitFor("the records before the poison", 10*time.Second, c.allProcessed(before))
			if policy == FailureRetry {
				c.waitFor("retries past ProcessorRetries", 10*time.Second, func() bool { return p.calls.Load() > 4 })
				if got := abandoned.Load(); got != nil {
					t.Fatalf("abandoned %v under retry", got)
				}
				return
			}
			c.waitFor("the batch abandoned", 10*time.Second, func() bool { return abandoned.Load() != nil })
			if got, want := abandoned.Load().([]any), []any{shard, policy, 6}; !slices.Equal(got, want) {
				t.Errorf("abandoned %v, want %v (the poison and the 5 after it)", got, want)
			}
			if calls := p.calls.Load(); calls != 3 {
				t.Errorf("%d calls with the poison, want 3 (a first try and 2 retries)", calls)
			}
			later := c.produce("c", 3)
			switch policy {
			case FailureStop:
				time.Sleep(time.Second)
				if got := c.processedCounts(); len(got) != len(before) {
					t.Errorf("%d records processed after the stop, want only the %d before the poison", len(got), len(before))
				}
				if st := rw.w.Status(); !slices.Equal(st.StoppedShards, []string{shard}) || !slices.Equal(st.Leases, []string{shard}) {
					t.Errorf("status: leases %v, stopped %v; want the shard held and stopped", st.Leases, st.StoppedShards)
				}
				return
			case FailureDeadLetter:
				dl.mu.Lock()
				var got []string
				for _, r := range dl.records {
					got = append(got, r.SequenceNumber)
				}
				dl.mu.Unlock()
				want := []string{poison}
				for s := range rest {
					want = append(want, s)
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("dead-lettered %v, want the poison and the rest %v", got, want)
				}
			}
			c.waitFor("the later records", 10*time.Second, c.allProcessed(later))
			counts := c.processedCounts()
			if counts[poison] != 0 {
				t.Errorf("the poison was processed")
			}
			for s := range rest {
				if counts[s] != 0 {
					t.Errorf("record %s of the abandoned batch was processed", s)
				}
			}
			if l, _ := c.leases.GetLease(t.Context(), shard); l.Checkpoint < maxKey(rest) {
				t.Errorf("checkpoint %s is before the abandoned batch's last record %s", l.Checkpoint, maxKey(rest))
			}
		})
	}
}

func maxKey(m map[string]bool) string {
	var out string
	for k := range m {
		out = max(out, k)
	}
	return out
}
