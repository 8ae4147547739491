package consumer

import (
	"fmt"
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
