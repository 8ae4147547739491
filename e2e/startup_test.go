package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestStartupBalancedWithoutChurn proves that three workers started together on a
// 30-shard stream split it 10/10/10 at once: the coordinator publishes max 10 for 30
// shards and 3 workers, every shard's records are processed, each lease is taken exactly
// once (30 "lease taken" lines in all) and no worker ever releases a lease to rebalance.
func TestStartupBalancedWithoutChurn(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 30, defaultLeaseDuration)
	p := newProducer(t, c)
	p.putRound(3) // 3 records on every shard

	ws, lastStart := c.startWorkers("w1", "w2", "w3")

	var first map[string]int64
	waitFor(t, 60*time.Second, "a processed record from every one of the 30 shards", func() (bool, string) {
		recs, err := c.records()
		if err != nil {
			return false, err.Error()
		}
		first = firstPerShard(recs, nil)
		return len(first) == 30, fmt.Sprintf("%d of 30 shards processed", len(first))
	})
	var last int64
	for _, ts := range first {
		last = max(last, ts)
	}
	t.Logf("MEASURED startup (last worker started -> every shard has a processed record): %s", since(lastStart, time.Unix(0, last)))

	balanced := c.waitBalanced(30*time.Second, 30, 10, ids(ws)...)
	t.Logf("MEASURED startup (last worker started -> lease table 10/10/10 and max 10): %s", since(lastStart, balanced))

	for _, w := range ws {
		r, err := w.ready()
		if err != nil {
			t.Fatal(err)
		}
		if !r.Ready || r.Leases != 10 || r.MaxLeases != 10 || r.ShardCount != 30 || r.WorkerCount != 3 {
			t.Errorf("/ready of %s = %+v, want ready with 10 leases, max 10, 30 shards, 3 workers", w.ID, r)
		}
	}

	// Give churn a chance to show: several poll intervals after balance.
	time.Sleep(3 * time.Second)
	o, err := c.ownership()
	if err != nil {
		t.Fatal(err)
	}
	if !o.balanced(10, ids(ws)...) {
		t.Errorf("ownership changed after balance: %s", o)
	}
	taken := countLogs(ws, msgIs("lease taken"))
	if n := sum(taken); n != 30 {
		t.Errorf(`%d "lease taken" log lines (%v), want exactly 30: leases moved during start-up`, n, taken)
	}
	releases := countLogs(ws, func(e logEntry) bool { return strings.Contains(e.Msg, "releasing leases") })
	if n := sum(releases); n != 0 {
		t.Errorf(`%d "releasing leases" log lines (%v), want none during start-up`, n, releases)
	}

	d, _ := c.waitDelivered(30*time.Second, p.Sent())
	if len(d.Duplicated) != 0 {
		t.Errorf("%d records processed more than once on a start without failures: %v", len(d.Duplicated), d.Duplicated)
	}
}

// TestSingleCoordinatorUnderConcurrentStart proves that when five workers start at the
// same moment, exactly one of them wins the coordinator role (one "became coordinator"
// log line across all workers) and the coordinator item is at epoch 1: no other worker
// claimed it in between.
func TestSingleCoordinatorUnderConcurrentStart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 10, defaultLeaseDuration)
	ws, _ := c.startWorkers("w1", "w2", "w3", "w4", "w5")
	c.waitBalanced(60*time.Second, 10, 2, ids(ws)...)
	time.Sleep(2 * time.Second) // a late claim would show by now

	became := countLogs(ws, msgIs("became coordinator"))
	if n := sum(became); n != 1 {
		t.Fatalf(`%d "became coordinator" log lines (%v), want exactly 1`, n, became)
	}
	r, err := c.coordinator()
	if err != nil {
		t.Fatal(err)
	}
	if r == nil || r.Epoch != 1 || became[r.CoordinatorID] != 1 {
		t.Errorf("coordinator item: %s; want epoch 1 held by the worker that logged it (%v)", coordString(r), became)
	}
}

// TestCapLeavesShardsUnownedLoudly is the seed's scenario 4 (300 shards, 3 workers, cap 80)
// scaled down for the default run: 20 shards, 3 workers, cap 5 -> max 5, 5 shards unowned,
// 4 workers needed. It proves the system says so loudly: the worker logs a `max leases`
// warning, the coordinator logs SHARDS LEFT UNOWNED, and /metrics exports the unowned
// shards and the recommended worker count. The full-size run is in scenarios_test.go.
func TestCapLeavesShardsUnownedLoudly(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 20, defaultLeaseDuration)
	ids := names(3)
	var ws []*worker
	for _, id := range ids {
		ws = append(ws, c.startWorker(id, "MAX_LEASES_CAP=5"))
	}
	took := c.waitConverged(60*time.Second, 20, 3, 5, 5)
	t.Logf("MEASURED capped start (20 shards, 3 workers, cap 5) converged: %s", took)

	warned := countLogs(ws, func(e logEntry) bool {
		return strings.Contains(e.Msg, "max leases") && strings.Contains(e.Msg, "unowned")
	})
	if sum(warned) != 3 {
		t.Errorf("workers logging the capped max leases warning: %v, want all 3", warned)
	}
	if n := sum(countLogs(ws, func(e logEntry) bool { return strings.Contains(e.Msg, "SHARDS LEFT UNOWNED") })); n < 1 {
		t.Error("the coordinator did not log SHARDS LEFT UNOWNED")
	}
	// A worker publishes its status at the end of a pass: the table may show its last take
	// a moment before its metrics do.
	for _, w := range ws {
		waitFor(t, 10*time.Second, w.ID+"'s metrics", func() (bool, string) {
			unowned, recommended, held := w.metric(t, "kds_shards_unowned"), w.metric(t, "kds_recommended_workers"), w.metric(t, "kds_leases_held")
			return unowned == 5 && recommended == 4 && held == 5,
				fmt.Sprintf("kds_shards_unowned %v (want 5), kds_recommended_workers %v (want 4), kds_leases_held %v (want 5)", unowned, recommended, held)
		})
	}
}
