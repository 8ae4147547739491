package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// startBalanced starts workers on a 30-shard cluster and waits for 10 leases each.
func startBalanced(t *testing.T, c *cluster, names ...string) []*worker {
	t.Helper()
	ws, _ := c.startWorkers(names...)
	c.waitBalanced(60*time.Second, 30, 30/len(names), names...)
	return ws
}

// balancedWithRecords is the common start: 30 shards, records flowing to every shard (20
// per second), and the workers started and balanced.
func balancedWithRecords(t *testing.T, names ...string) (*cluster, *producer, []*worker) {
	t.Helper()
	c := newCluster(t, 30, defaultLeaseDuration)
	p := newProducer(t, c)
	p.Start(5)
	return c, p, startBalanced(t, c, names...)
}

// pickVictim picks a worker other than the coordinator and returns it, the others' ids
// and the shards it holds with their lease counters.
func pickVictim(t *testing.T, c *cluster, ws []*worker) (victim *worker, survivors []string, held map[string]int64) {
	t.Helper()
	_, others, _ := roles(t, c, ws)
	victim = others[0]
	for _, w := range ws {
		if w != victim {
			survivors = append(survivors, w.ID)
		}
	}
	return victim, survivors, heldBy(t, c, victim.ID)
}

// roles splits the workers into the coordinator and the others, from the coordinator item.
func roles(t *testing.T, c *cluster, ws []*worker) (coord *worker, others []*worker, rec lease.CoordinatorRecord) {
	t.Helper()
	r, err := c.coordinator()
	if err != nil || r == nil {
		t.Fatalf("read coordinator item: %v (%s)", err, coordString(r))
	}
	for _, w := range ws {
		if w.ID == r.CoordinatorID {
			coord = w
		} else {
			others = append(others, w)
		}
	}
	if coord == nil {
		t.Fatalf("coordinator %q is none of the workers %v", r.CoordinatorID, ids(ws))
	}
	return coord, others, *r
}

// heldBy returns the shards a worker owns with their lease counters.
func heldBy(t *testing.T, c *cluster, id string) map[string]int64 {
	t.Helper()
	o, err := c.ownership()
	if err != nil {
		t.Fatal(err)
	}
	held := make(map[string]int64)
	for _, s := range o.ownedBy(id) {
		held[s] = o.counter[s]
	}
	if len(held) == 0 {
		t.Fatalf("%s holds no lease: %s", id, o)
	}
	return held
}

// TestCoordinatorKilled proves that when the coordinator dies without a word (kill -9),
// another worker claims the role (coordinator_id changes, epoch increments) and writes
// the values for the survivors: 2 workers, max 15 for 30 shards, and the survivors
// take the dead worker's leases, 15 each.
func TestCoordinatorKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 30, defaultLeaseDuration)
	ws := startBalanced(t, c, "w1", "w2", "w3")
	coord, survivors, old := roles(t, c, ws)

	c.kill9(coord)
	killed := time.Now()

	claimed := waitFor(t, 60*time.Second, "another worker to claim the coordinator role", func() (bool, string) {
		r, err := c.coordinator()
		if err != nil {
			return false, err.Error()
		}
		return r != nil && r.CoordinatorID != old.CoordinatorID && r.CoordinatorID != "" && r.Epoch > old.Epoch, coordString(r)
	})
	written := waitFor(t, 30*time.Second, "the new coordinator to write 2 workers and max 15", func() (bool, string) {
		r, err := c.coordinator()
		if err != nil {
			return false, err.Error()
		}
		return r != nil && r.WorkerCount == 2 && r.MaxLeasesPerWorker == 15 && r.ShardCount == 30, coordString(r)
	})
	t.Logf("MEASURED coordinator kill -9 -> new coordinator claimed: %s", since(killed, claimed))
	t.Logf("MEASURED coordinator kill -9 -> new coordinator record (2 workers, max 15) written: %s", since(killed, written))

	r, err := c.coordinator()
	if err != nil {
		t.Fatal(err)
	}
	if r.CoordinatorID == old.CoordinatorID || r.Epoch <= old.Epoch {
		t.Errorf("coordinator item %s after the kill; was %q at epoch %d", coordString(r), old.CoordinatorID, old.Epoch)
	}
	balanced := c.waitBalanced(30*time.Second, 30, 15, ids(survivors)...)
	t.Logf("MEASURED coordinator kill -9 -> survivors own 15/15: %s", since(killed, balanced))

	became := countLogs(survivors, func(e logEntry) bool {
		return e.Msg == "became coordinator" && e.Attrs["previous"] == old.CoordinatorID
	})
	if became[r.CoordinatorID] != 1 {
		t.Errorf(`new coordinator %s logged "became coordinator" (previous %s) %d times, want 1 (all: %v)`,
			r.CoordinatorID, old.CoordinatorID, became[r.CoordinatorID], became)
	}
}

// TestWorkerKilledWhileRecordsFlow proves fail-over after a crash: a non-coordinator
// worker is killed (kill -9) while records are produced; the survivors take all its
// shards (15/15) and process them under newer lease epochs, and in the end every
// produced record was processed (none lost). Records may be processed twice only on the
// killed worker's shards (those after its last checkpoint).
func TestWorkerKilledWhileRecordsFlow(t *testing.T) {
	t.Parallel()
	c, p, ws := balancedWithRecords(t, "w1", "w2", "w3")
	victim, survivors, victimShards := pickVictim(t, c, ws)

	c.kill9(victim)
	killed := time.Now()
	p.putRound(1) // a record on every shard right after the kill

	balanced := c.waitBalanced(60*time.Second, 30, 15, survivors...)
	resumed := c.waitProcessedElsewhere(60*time.Second, victim.ID, victimShards)
	t.Logf("MEASURED kill -9 -> survivors own 15/15: %s", since(killed, balanced))
	t.Logf("MEASURED kill -9 -> every shard of the victim processing on a survivor: %s", since(killed, resumed))

	sent, d, _ := c.drain(p, time.Second, 60*time.Second)
	var foreign []string
	for k, n := range d.Duplicated {
		if _, ok := victimShards[k.Shard]; !ok {
			foreign = append(foreign, fmt.Sprintf("%s/%s x%d", k.Shard, k.Seq, n))
		}
	}
	if len(foreign) > 0 {
		t.Errorf("%d records processed twice on shards the killed worker did not own: %v", len(foreign), foreign)
	}
	t.Logf("%d records produced, 0 lost, %d processed twice (all on the killed worker's shards)", len(sent), len(d.Duplicated))
}

// TestGracefulShutdownMovesLeasesWithoutDuplicates proves the planned path: on SIGTERM a
// worker exits with status 0 within seconds, has released every lease by then (none is
// still owned by it), marks itself gone, the coordinator recomputes max 15 for 2
// workers, the survivors process its shards at once, and not a single record is lost or
// processed twice.
func TestGracefulShutdownMovesLeasesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	c, p, ws := balancedWithRecords(t, "w1", "w2", "w3")
	victim, survivors, victimShards := pickVictim(t, c, ws)

	termAt := time.Now()
	took := c.sigterm(victim, 15*time.Second)
	t.Logf("MEASURED SIGTERM -> process exited (status 0): %s", took.Round(10*time.Millisecond))
	for _, e := range logEntries(victim.LogPath()) {
		if ns, ok := e.Attrs["took"].(float64); ok && e.Msg == "worker stopped" {
			t.Logf("MEASURED SIGTERM: the worker's own shutdown (drain, release, mark gone) took %s", time.Duration(ns))
		}
	}
	if took > 10*time.Second {
		t.Errorf("worker took %s to exit after SIGTERM, want a few seconds", took)
	}
	o, err := c.ownership()
	if err != nil {
		t.Fatal(err)
	}
	if still := o.ownedBy(victim.ID); len(still) > 0 {
		t.Errorf("after exiting, %s still owns %d leases: %v", victim.ID, len(still), still)
	}
	m, err := c.meta()
	if err != nil {
		t.Fatal(err)
	}
	state := lease.WorkerState("(no item)")
	for _, w := range m.Workers {
		if w.WorkerID == victim.ID {
			state = w.State
		}
	}
	if state != lease.WorkerGone {
		t.Errorf("metadata item of %s has state %q after shutdown, want %q", victim.ID, state, lease.WorkerGone)
	}
	p.putRound(1)

	balanced := c.waitBalanced(30*time.Second, 30, 15, survivors...)
	resumed := c.waitProcessedElsewhere(30*time.Second, victim.ID, victimShards)
	t.Logf("MEASURED SIGTERM -> survivors own 15/15 and max 15: %s", since(termAt, balanced))
	t.Logf("MEASURED SIGTERM -> every shard of the stopped worker processing elsewhere: %s", since(termAt, resumed))

	sent, d, _ := c.drain(p, time.Second, 60*time.Second)
	if len(d.Duplicated) > 0 {
		t.Errorf("%d records processed more than once across a graceful shutdown, want 0: %v", len(d.Duplicated), d.Duplicated)
	}
	t.Logf("%d records produced, 0 lost, %d duplicates", len(sent), len(d.Duplicated))
}
