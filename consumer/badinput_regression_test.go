// Regression tests for three bad-input bugs found by the bad-input suite: a negative max
// leases value crashed the worker, an undecodable coordinator item blocked every claim, and
// a missing lease table made a shard reprocess its batch forever.
package consumer

import (
	"fmt"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// balance.go targetFrom: a negative max_leases_per_worker (target 0) is obeyed as a
// negative target, and releaseExcess then slices past the held consumers: the control
// loop panics and the worker process dies (a crash loop while the item stays).
// Fix: clamp the target to [0, MaxLeasesCap] in targetFrom.
func TestReproNegativeMaxLeasesIsObeyed(t *testing.T) {
	c := newCluster(t, 1)
	w, err := New(Config{AppName: "app", WorkerID: "w0"}, c.leases, c.meta, c.stream, func(string) RecordProcessor { return nil })
	if err != nil {
		t.Fatal(err)
	}
	target, known := w.targetFrom(&lease.CoordinatorRecord{CoordinatorID: "x", Epoch: 1, MaxLeasesPerWorker: -3, Cap: 80})
	if known && target < 0 {
		t.Errorf("target %d from max_leases_per_worker -3: a worker obeys a negative maximum", target)
	}
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("balance with a negative target panics: %v", r)
		}
	}()
	w.releaseExcess(nil, 0-target)
}

// dynamostore/meta.go ReadMeta + ClaimCoordinator (mirrored by memstore): a coordinator
// item that cannot be decoded at all (e.g. epoch as a string) is reported as corrupt and
// never replaced: ClaimCoordinator(nil) fails its attribute_not_exists condition, so no
// worker is ever coordinator and fresh workers never take a lease. Fix: let a claim
// overwrite an undecodable coordinator item (conditional on its observed raw value).
func TestReproUndecodableCoordinatorItemBlocksFreshWorkers(t *testing.T) {
	c := newCluster(t, 4)
	c.meta.PutCorrupt(memstore.CoordinatorKey, "epoch: is a string (S), expected an integer (N)")
	c.start("w0")
	c.start("w1")
	c.waitFor("2/2 despite a corrupt coordinator item", 10*time.Second, c.balanced(map[string]int{"w0": 2, "w1": 2}))
}

// shardconsumer.go / checkpointer.go: with the lease table gone, every checkpoint fails
// with a non-conflict error, so the batch is handed to the processor again and again
// (every back-off, forever) while the heartbeat keeps the lease: the application
// reprocesses the same records blindly. Fix: treat a missing lease table (or item) on
// checkpoint as a lost lease and stop the consumer until the table is back.
func TestReproLeaseTableMissingReprocessesBatchForever(t *testing.T) {
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
