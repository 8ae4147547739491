package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// A busy shard is read at most 5 times a second, as Kinesis allows: the stream refuses
// faster reads, and none is refused.
func TestReadsRespectFivePerSecondPerShard(t *testing.T) {
	c := newCluster(t, 1)
	c.stream.ReadsPerSecond = 5
	c.base.IdleTimeBetweenReads = time.Millisecond // only MinTimeBetweenReads paces the reads
	c.start("w0")
	stop := time.After(3 * time.Second)
	var want []map[string]bool
loop:
	for i := 0; ; i++ {
		select {
		case <-stop:
			break loop
		case <-time.After(20 * time.Millisecond):
			want = append(want, c.produce(fmt.Sprintf("k%d", i), 1))
		}
	}
	for _, w := range want {
		c.waitFor("records", 5*time.Second, c.allProcessed(w))
	}
	if n := c.stream.Calls()["GetRecords.throttled"]; n != 0 {
		t.Fatalf("%d GetRecords calls exceeded 5 per second per shard", n)
	}
}

// Throttling and expired iterators are absorbed: every record is processed exactly once.
func TestThrottlingAndExpiredIteratorsLoseNothing(t *testing.T) {
	c := newCluster(t, 2)
	c.stream.IteratorTTL = 300 * time.Millisecond
	c.stream.InjectError("GetRecords", stream.ErrThrottled, 10)
	c.start("w0")
	seqs := c.produce("a", 100)
	time.Sleep(time.Second) // iterators issued before this have expired
	more := c.produce("b", 100)
	c.waitFor("records", 15*time.Second, c.allProcessed(seqs))
	c.waitFor("more records", 15*time.Second, c.allProcessed(more))
	for seq, n := range c.processedCounts() {
		if n != 1 {
			t.Errorf("record %s processed %d times", seq, n)
		}
	}
}

func TestInitialPositions(t *testing.T) {
	for _, pos := range []string{lease.Latest, lease.AtTimestamp} {
		t.Run(pos, func(t *testing.T) {
			c := newCluster(t, 2)
			old := c.produce("old", 50)
			time.Sleep(50 * time.Millisecond)
			at := time.Now()
			time.Sleep(50 * time.Millisecond)
			c.start("w0", func(cfg *Config) { cfg.InitialPosition = pos; cfg.InitialTimestamp = at })
			c.waitFor("2 leases", 5*time.Second, c.balanced(map[string]int{"w0": 2}))
			time.Sleep(300 * time.Millisecond) // the consumers have their iterators
			fresh := c.produce("new", 50)
			c.waitFor("new records", 10*time.Second, c.allProcessed(fresh))
			got := c.processedCounts()
			for s := range old {
				if got[s] != 0 {
					t.Fatalf("record %s from before the start was processed with %s", s, pos)
				}
			}
		})
	}
}

// slowProcessor takes delay over every batch and fails its first call.
type slowProcessor struct {
	testProcessor
	delay time.Duration
	calls atomic.Int64
}

func (p *slowProcessor) ProcessRecords(ctx context.Context, in ProcessRecordsInput) error {
	time.Sleep(p.delay)
	if p.calls.Add(1) == 1 {
		return errors.New("first call fails")
	}
	return p.testProcessor.ProcessRecords(ctx, in)
}

// Every GetRecords response reaches the RecordsRead hook with its MillisBehindLatest,
// empty ones included (an idle shard reports that it is caught up), and every call of
// ProcessRecords the ProcessorReturned hook, with its duration and its error.
func TestReadAndProcessorHooks(t *testing.T) {
	const delay = 30 * time.Millisecond
	for _, tc := range []struct {
		name    string
		records int
		// wantReads: the records of the first reads (4 a read), then empty ones; the first
		// wantBehind of them are behind the tip (records are left after them).
		wantReads  []int
		wantBehind int
		wantCalls  []int // records handed over per ProcessRecords call
	}{
		{name: "idle shard", records: 0, wantReads: []int{0, 0, 0}},
		{name: "backlog", records: 10, wantReads: []int{4, 4, 2, 0, 0}, wantBehind: 2, wantCalls: []int{4, 4, 4, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			seqs := c.produce("k", tc.records)
			type read struct {
				records int
				behind  int64
			}
			type call struct {
				records int
				took    time.Duration
				err     error
			}
			var (
				mu    sync.Mutex
				reads []read
				calls []call
			)
			c.proc = func(id, shard string) RecordProcessor {
				return &slowProcessor{testProcessor: testProcessor{c: c, worker: id, shard: shard}, delay: delay}
			}
			c.start("w0", func(cfg *Config) {
				cfg.MaxRecordsPerGet = 4
				cfg.Hooks.RecordsRead = func(_ string, n int, behind int64) {
					mu.Lock()
					reads = append(reads, read{n, behind})
					mu.Unlock()
				}
				cfg.Hooks.ProcessorReturned = func(_ string, n int, took time.Duration, err error) {
					mu.Lock()
					calls = append(calls, call{n, took, err})
					mu.Unlock()
				}
			})
			c.waitFor("records", 10*time.Second, c.allProcessed(seqs))
			c.waitFor("reads", 10*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(reads) >= len(tc.wantReads)
			})
			mu.Lock()
			defer mu.Unlock()
			for i, want := range tc.wantReads {
				r := reads[i]
				if r.records != want || (r.behind > 0) != (i < tc.wantBehind) {
					t.Errorf("read %d: %d records, %d ms behind; want %d records, behind: %v", i, r.records, r.behind, want, i < tc.wantBehind)
				}
			}
			if len(calls) != len(tc.wantCalls) {
				t.Fatalf("%d ProcessRecords calls reported, want %d: %v", len(calls), len(tc.wantCalls), calls)
			}
			for i, cl := range calls {
				if cl.records != tc.wantCalls[i] || cl.took < delay || (cl.err != nil) != (i == 0) {
					t.Errorf("call %d: %d records, took %s, err %v; want %d records, at least %s, an error only first",
						i, cl.records, cl.took, cl.err, tc.wantCalls[i], delay)
				}
			}
		})
	}
}

// A lease the KCL created at AT_TIMESTAMP has no start timestamp (the KCL keeps it in its
// configuration): it starts at this worker's INITIAL_TIMESTAMP when it starts at a
// timestamp too, else at the oldest record.
func TestKCLAtTimestampLeaseWithoutTimestamp(t *testing.T) {
	for _, tc := range []struct {
		position string
		wantOld  bool
	}{
		{lease.AtTimestamp, false},
		{lease.TrimHorizon, true},
		{lease.Latest, true},
	} {
		t.Run(tc.position, func(t *testing.T) {
			c := newCluster(t, 1)
			old := c.produce("old", 20)
			time.Sleep(50 * time.Millisecond)
			at := time.Now()
			time.Sleep(50 * time.Millisecond)
			c.leases.Put(lease.Lease{ShardID: c.stream.Shards()[0].ID, Checkpoint: lease.AtTimestamp})
			c.start("w0", func(cfg *Config) { cfg.InitialPosition = tc.position; cfg.InitialTimestamp = at })
			c.waitFor("1 lease", 5*time.Second, c.balanced(map[string]int{"w0": 1}))
			time.Sleep(300 * time.Millisecond) // the consumer has its iterator
			fresh := c.produce("new", 20)
			c.waitFor("new records", 10*time.Second, c.allProcessed(fresh))
			if tc.wantOld {
				c.waitFor("old records", 5*time.Second, c.allProcessed(old))
				return
			}
			got := c.processedCounts()
			for s := range old {
				if got[s] != 0 {
					t.Fatalf("record %s from before INITIAL_TIMESTAMP was processed", s)
				}
			}
		})
	}
}
