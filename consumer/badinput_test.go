package consumer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// A coordinator item written by hand with impossible values (a target of 100000, a
// maximum above the cap, shard_count 0 while leases exist, worker_count 0) is not obeyed
// beyond the worker's own cap, and the coordinator rewrites correct values.
func TestImpossibleCoordinatorValuesAreClampedAndRewritten(t *testing.T) {
	c := newCluster(t, 10)
	capped := func(cfg *Config) { cfg.MaxLeasesCap = 4 }
	c.start("w0", capped)
	c.start("w1", capped)
	// min(4, ceil(10/2)) = 4 each: two shards stay free, so a worker obeying more than its
	// cap would show by taking them.
	c.waitFor("4/4 with 2 free", 10*time.Second, func() bool {
		counts, free := c.owners()
		return counts["w0"] == 4 && counts["w1"] == 4 && free == 2
	})
	good := c.coordinator()
	bogus := good
	// A coordinator that is not running holds the role, so every worker obeys the bogus
	// values until the role is claimed again after the lease duration.
	bogus.CoordinatorID, bogus.Epoch = "ghost", good.Epoch+1
	bogus.TargetLeasesPerWorker, bogus.MaxLeasesPerWorker = 100000, 5000
	bogus.ShardCount, bogus.WorkerCount, bogus.LiveWorkers, bogus.Cap = 0, 0, 0, 100000
	c.meta.PutCoordinator(&bogus)
	deadline := time.Now().Add(c.base.LeaseDuration)
	for time.Now().Before(deadline) {
		counts, _ := c.owners()
		for id, n := range counts {
			if n > 4 {
				t.Fatalf("%s holds %d leases, above its cap 4, obeying a bogus coordinator record", id, n)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.waitFor("correct values rewritten", 10*time.Second, func() bool {
		r := c.coordinator()
		return r.CoordinatorID != "ghost" && r.ShardCount == 10 && r.WorkerCount == 2 && r.MaxLeasesPerWorker == 4 &&
			r.TargetLeasesPerWorker == 4 && r.Cap == 4 && r.UnownedShards == 2
	})
	seqs := c.produce("a", 50)
	c.waitFor("records after the repair", 10*time.Second, func() bool {
		got := c.processedCounts()
		n := 0
		for s := range seqs {
			if got[s] > 0 {
				n++
			}
		}
		return n > 0
	})
}

// A corrupt coordinator item (reported by the store, so no record): workers keep the
// leases and the target they had, and keep processing.
func TestCorruptCoordinatorItemKeepsLastGoodValues(t *testing.T) {
	c := newCluster(t, 6)
	c.start("w0")
	c.start("w1")
	c.waitFor("3/3", 10*time.Second, c.balanced(map[string]int{"w0": 3, "w1": 3}))
	c.meta.PutCorrupt(memstore.CoordinatorKey, "max_leases_per_worker: is a string (S), expected an integer (N)")
	time.Sleep(3 * c.base.LeaseDuration / 2)
	if counts, free := c.owners(); counts["w0"] != 3 || counts["w1"] != 3 || free != 0 {
		t.Fatalf("owners %v, free %d after the coordinator item broke: want 3/3 kept", counts, free)
	}
	for _, id := range []string{"w0", "w1"} {
		if st := c.workers[id].w.Status(); st.Target != 3 || len(st.Leases) != 3 {
			t.Errorf("%s status %+v: want target 3 and 3 leases kept", id, st)
		}
	}
	seqs := c.produce("a", 60)
	c.waitFor("records with a corrupt coordinator item", 10*time.Second, c.allProcessed(seqs))
}

var errStreamGone = errors.New("stream \"s\" not found (test)")

// The stream deleted mid-run: workers keep running, heartbeating and holding their
// leases with their checkpoints, and resume when the stream is back.
func TestStreamDeletedMidRunKeepsLeasesAndRecovers(t *testing.T) {
	c := newCluster(t, 4)
	w0, w1 := c.start("w0"), c.start("w1")
	c.waitFor("2/2", 10*time.Second, c.balanced(map[string]int{"w0": 2, "w1": 2}))
	before := c.produce("a", 40)
	c.waitFor("records before", 10*time.Second, c.allProcessed(before))
	time.Sleep(200 * time.Millisecond) // checkpoints written
	cps := map[string]lease.Lease{}
	for _, l := range c.leases.Snapshot().Leases {
		cps[l.ShardID] = l
	}
	c.stream.InjectError(memstore.AnyOp, errors.Join(stream.ErrStreamNotFound, errStreamGone), -1)
	time.Sleep(3 * c.base.LeaseDuration)
	for _, rw := range []*runningWorker{w0, w1} {
		select {
		case err := <-rw.done:
			t.Fatalf("worker stopped with the stream gone: %v", err)
		default:
		}
		if st := rw.w.Status(); time.Since(st.LastHeartbeat) > c.base.LeaseDuration/2 || len(st.Leases) != 2 {
			t.Errorf("status %+v: want fresh heartbeats and 2 leases kept", st)
		}
	}
	for _, l := range c.leases.Snapshot().Leases {
		if old := cps[l.ShardID]; l.Owner != old.Owner || l.Epoch != old.Epoch || l.Checkpoint != old.Checkpoint {
			t.Errorf("lease %s changed while the stream was gone: %+v -> %+v", l.ShardID, old, l)
		}
	}
	c.stream.ClearErrors()
	after := c.produce("b", 40)
	c.waitFor("records after the stream is back", 15*time.Second, c.allProcessed(after))
	for seq, n := range c.processedCounts() {
		if n != 1 {
			t.Errorf("record %s processed %d times", seq, n)
		}
	}
}

var errTableGone = errors.New("dynamodb table not found (test)")

// The metadata table deleted mid-run: heartbeats fail, so the worker fences itself
// (every consumer stopped as lost) within the lease duration instead of processing
// blindly; it keeps running and resumes when the table is back.
func TestMetaTableMissingFencesTheWorker(t *testing.T) {
	c := newCluster(t, 4)
	w0 := c.start("w0")
	c.waitFor("4 leases", 10*time.Second, c.balanced(map[string]int{"w0": 4}))
	cut := time.Now()
	c.meta.InjectError(memstore.AnyOp, errTableGone, -1)
	c.waitFor("every consumer fenced", 2*c.base.LeaseDuration, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lost["w0"] == 4
	})
	if took := time.Since(cut); took > c.base.LeaseDuration {
		t.Errorf("fenced after %s, later than the lease duration %s", took, c.base.LeaseDuration)
	}
	fenced := c.produce("during", 20)
	time.Sleep(c.base.LeaseDuration)
	got := c.processedCounts()
	for s := range fenced {
		if got[s] != 0 {
			t.Fatalf("record %s processed by a fenced worker", s)
		}
	}
	select {
	case err := <-w0.done:
		t.Fatalf("worker exited with the metadata table gone: %v", err)
	default:
	}
	c.meta.ClearErrors()
	c.waitFor("records after the table is back", 15*time.Second, c.allProcessed(fenced))
}

// Config validation never panics, and whatever it accepts keeps the safety margins.
func FuzzConfigValidate(f *testing.F) {
	f.Add("app", "w", int64(10e9), int64(0), int64(0), int64(0), 80, 0, false, "TRIM_HORIZON", 0)
	f.Add("ab", "ab_coordinator", int64(1e9), int64(4e8), int64(-1), int64(1), -1, 90, true, "AT_TIMESTAMP", 10001)
	f.Fuzz(func(t *testing.T, app, worker string, lease, hb, poll, sync int64, capV, static int, noDyn bool, pos string, perGet int) {
		cfg := Config{AppName: app, WorkerID: worker, LeaseDuration: time.Duration(lease), HeartbeatInterval: time.Duration(hb),
			PollInterval: time.Duration(poll), ShardSyncInterval: time.Duration(sync), MaxLeasesCap: capV,
			StaticMaxLeases: static, DisableDynamicMaxLeases: noDyn, InitialPosition: pos, MaxRecordsPerGet: perGet}
		err := cfg.Validate()
		d, err2 := cfg.withDefaults()
		if (err == nil) != (err2 == nil) {
			t.Fatalf("Validate %v but withDefaults %v", err, err2)
		}
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field == "" || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not a ConfigError naming a field", err)
			}
			return
		}
		if d.LeaseDuration < time.Second || d.HeartbeatInterval <= 0 || d.HeartbeatInterval > d.LeaseDuration/3 ||
			d.PollInterval <= 0 || d.PollInterval > d.LeaseDuration/3 || d.MaxLeasesCap < 1 ||
			d.StaticMaxLeases < 1 || d.StaticMaxLeases > d.MaxLeasesCap || d.MaxRecordsPerGet < 1 || d.MaxRecordsPerGet > 10000 {
			t.Fatalf("accepted a configuration without its safety margins: %+v", d)
		}
	})
}

// A coordinator item that cannot be decoded at all (e.g. epoch as a string) is reported as
// corrupt and replaced by a claim (conditional on its observed raw value), so fresh workers
// still elect a coordinator and take leases.
func TestUndecodableCoordinatorItemIsReplacedByAClaim(t *testing.T) {
	c := newCluster(t, 4)
	c.meta.PutCorrupt(memstore.CoordinatorKey, "epoch: is a string (S), expected an integer (N)")
	c.start("w0")
	c.start("w1")
	c.waitFor("2/2 despite a corrupt coordinator item", 10*time.Second, c.balanced(map[string]int{"w0": 2, "w1": 2}))
}

// With the lease table gone, a checkpoint counts as a lost lease: the consumer stops until
// the table is back instead of handing the same batch to the processor again and again.
func TestMissingLeaseTableStopsTheShardInsteadOfReprocessing(t *testing.T) {
	c := newCluster(t, 1)
	c.start("w0")
	c.waitFor("1 lease", 10*time.Second, c.balanced(map[string]int{"w0": 1}))
	c.leases.InjectError(memstore.AnyOp, fmt.Errorf("dynamostore: UpdateItem: table \"app\": %w", lease.ErrTableNotFound), -1)
	c.produce("a", 1)
	time.Sleep(5 * time.Second)
	if n := len(c.processedCounts()); n != 1 {
		t.Fatalf("%d records", n)
	}
	for seq, n := range c.processedCounts() {
		if n > 2 {
			t.Errorf("record %s handed to the processor %d times while its checkpoint cannot be written", seq, n)
		}
	}
}
