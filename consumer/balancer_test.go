package consumer

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// newTestBalancer returns a balancer alone, with cfg's defaults, on in-memory stores.
func newTestBalancer(t *testing.T, cfg Config) *balancer {
	t.Helper()
	if cfg.AppName == "" {
		cfg.AppName, cfg.WorkerID = "app", "w0"
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	leases := memstore.NewLeases()
	tn := newTenure(cfg.Clock, cfg.LeaseDuration, cfg.fenceMargin())
	corrupt := newCorruptLog(log)
	members := newMembership(memstore.NewMeta(), cfg.Clock, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	running := newConsumerSet(&consumerEnv{cfg: &cfg, leases: leases, clock: cfg.Clock, tenure: tn,
		exits: make(chan consumerExit, 8)}, func(string) RecordProcessor { return nil }, log)
	return newBalancer(&cfg, leases, tn, members, corrupt, running, log)
}

// The target a worker obeys comes from the coordinator record, never beyond the worker's
// own cap and never negative, whatever the record says; without a record (and without a
// static maximum) it neither takes nor releases.
func TestTargetObeysTheRecordWithinTheCap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		rec       *lease.CoordinatorRecord
		want      int
		wantKnown bool
	}{
		{"no record yet", Config{}, nil, 0, false},
		{"record without a cap (not computed yet)", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 5}, 0, false},
		{"max leases", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, Cap: 80}, 10, true},
		{"target wins over max while workers are missing", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, TargetLeasesPerWorker: 15, Cap: 80}, 15, true},
		{"target above this worker's cap", Config{MaxLeasesCap: 12}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, TargetLeasesPerWorker: 100000, Cap: 100000}, 12, true},
		{"max above this worker's cap", Config{MaxLeasesCap: 12}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 5000, Cap: 100000}, 12, true},
		{"negative max means none", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: -3, Cap: 80}, 0, true},
		{"static maximum ignores the record", Config{DisableDynamicMaxLeases: true, StaticMaxLeases: 7}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, Cap: 80}, 7, true},
		{"static maximum without a record", Config{DisableDynamicMaxLeases: true, StaticMaxLeases: 7}, nil, 7, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBalancer(t, tc.cfg)
			got, known := b.targetFrom(tc.rec)
			if got != tc.want || known != tc.wantKnown {
				t.Fatalf("targetFrom = %d, %v; want %d, %v", got, known, tc.want, tc.wantKnown)
			}
		})
	}
}

// idleProcessor processes nothing and checkpoints nothing.
type idleProcessor struct{}

func (idleProcessor) Initialize(context.Context, InitializeInput) error         { return nil }
func (idleProcessor) ProcessRecords(context.Context, ProcessRecordsInput) error { return nil }
func (idleProcessor) ShardEnded(context.Context, Checkpointer) error            { return nil }
func (idleProcessor) ShutdownRequested(context.Context, Checkpointer) error     { return nil }
func (idleProcessor) LeaseLost(context.Context)                                 {}

// A lease of a worker the view lists dead is taken only from a view two versions after
// the one read after the lease table: an older view may list dead an owner that came back
// and took the lease again since, which the lease table already shows.
func TestLeasesOfDeadWorkersWaitForAViewComputedAfterTheLeaseRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		// views are the records the balancer obeys on the passes after its scan (the
		// stored version at the scan is 5).
		views    []lease.CoordinatorRecord
		wantTake bool
	}{
		{"the next version still lists the owner dead: not yet", []lease.CoordinatorRecord{{Version: 6, DeadWorkers: dead("x")}}, false},
		{"two versions later the owner is alive again: never", []lease.CoordinatorRecord{
			{Version: 6, DeadWorkers: dead("x")}, {Version: 7}}, false},
		{"two versions later the owner is still dead: taken", []lease.CoordinatorRecord{
			{Version: 6, DeadWorkers: dead("x")}, {Version: 7, DeadWorkers: dead("x")}}, true},
		{"a later version that lists it dead: taken", []lease.CoordinatorRecord{{Version: 12, DeadWorkers: dead("y", "x")}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			fake := clock.NewFake(time.Unix(10000, 0))
			cfg, err := Config{AppName: "app", WorkerID: "w0", Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			leases, meta, s := memstore.NewLeases(), memstore.NewMeta(), memstore.NewStream(1)
			shard := s.Shards()[0].ID
			if err := leases.CreateLease(ctx, lease.Lease{ShardID: shard, Checkpoint: lease.TrimHorizon}); err != nil {
				t.Fatal(err)
			}
			if _, err := leases.TakeLease(ctx, lease.Lease{ShardID: shard}, "x"); err != nil {
				t.Fatal(err)
			}
			view := lease.CoordinatorRecord{CoordinatorID: "c", Epoch: 1, Version: 5, MaxLeasesPerWorker: 1, Cap: 80, DeadWorkers: dead("x")}
			meta.PutCoordinator(&view)
			tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
			tn.renew(fake.Now())
			corrupt := newCorruptLog(cfg.Logger)
			members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
			running := newConsumerSet(&consumerEnv{cfg: &cfg, leases: leases, stream: s, clock: fake, tenure: tn,
				exits: make(chan consumerExit, 8)}, func(string) RecordProcessor { return idleProcessor{} }, cfg.Logger)
			stop := running.open(ctx)
			defer func() { stop(); running.stopAll(stopLost) }()
			b := newBalancer(&cfg, leases, tn, members, corrupt, running, cfg.Logger)

			b.balance(ctx, fake.Now(), b.fingerprint(&view), &view)
			if running.running(shard) {
				t.Fatal("took the lease of a worker listed dead in a view read before the lease table")
			}
			for _, v := range tc.views {
				v.CoordinatorID, v.Epoch, v.MaxLeasesPerWorker, v.Cap = "c", 1, 1, 80
				fake.Advance(cfg.PollInterval)
				b.balance(ctx, fake.Now(), b.fingerprint(&v), &v)
			}
			if got := running.running(shard); got != tc.wantTake {
				t.Fatalf("taken = %v, want %v", got, tc.wantTake)
			}
			l, err := leases.GetLease(ctx, shard)
			if err != nil {
				t.Fatal(err)
			}
			if wantOwner := map[bool]string{true: "w0", false: "x"}[tc.wantTake]; l.Owner != wantOwner {
				t.Fatalf("lease owner %q, want %q", l.Owner, wantOwner)
			}
		})
	}
}

// A worker at its target that holds only closed shards whose children wait has no open
// shard to trade: asked to trade for waiting parents, it takes none of the leases of dead
// workers it was waiting to take (it would go over its target and give them back next
// pass).
func TestATradeWithoutAnOpenShardTakesNothing(t *testing.T) {
	ctx := t.Context()
	fake := clock.NewFake(time.Unix(10000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "w0", Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	leases, meta, s := memstore.NewLeases(), memstore.NewMeta(), memstore.NewStream(3)
	ids := []string{s.Shards()[0].ID, s.Shards()[1].ID, s.Shards()[2].ID}
	// ids[0] and ids[1]: free, each the parent of a waiting lease; ids[2]: an open shard
	// of the dead worker x.
	for i, l := range []lease.Lease{{ShardID: ids[0]}, {ShardID: ids[1]}, {ShardID: ids[2]},
		{ShardID: "child-0", ParentShardIDs: ids[:1]}, {ShardID: "child-1", ParentShardIDs: ids[1:2]}} {
		l.Checkpoint = lease.TrimHorizon
		if err := leases.CreateLease(ctx, l); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if _, err := leases.TakeLease(ctx, l, "x"); err != nil {
				t.Fatal(err)
			}
		}
	}
	view := lease.CoordinatorRecord{CoordinatorID: "c", Epoch: 1, Version: 5, MaxLeasesPerWorker: 3, Cap: 80, DeadWorkers: dead("x")}
	meta.PutCoordinator(&view)
	tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
	tn.renew(fake.Now())
	corrupt := newCorruptLog(cfg.Logger)
	members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	running := newConsumerSet(&consumerEnv{cfg: &cfg, leases: leases, stream: s, clock: fake, tenure: tn,
		exits: make(chan consumerExit, 8)}, func(string) RecordProcessor { return idleProcessor{} }, cfg.Logger)
	stop := running.open(ctx)
	defer func() { stop(); running.stopAll(stopLost) }()
	b := newBalancer(&cfg, leases, tn, members, corrupt, running, cfg.Logger)

	// Below its target of 3: it takes both free parents and waits for the view to take x's.
	b.balance(ctx, fake.Now(), b.fingerprint(&view), &view)
	if !running.running(ids[0]) || !running.running(ids[1]) || b.fromDead == nil {
		t.Fatalf("after the first pass: running %v, waiting for the view %v", running.active(), b.fromDead != nil)
	}
	// The target drops to 2 while closed shards wait elsewhere, in a view late enough for
	// x's lease: the worker is at its target with nothing open to give up.
	next := view
	next.Version, next.MaxLeasesPerWorker, next.WaitingParents = 7, 2, 1
	fake.Advance(cfg.PollInterval)
	b.balance(ctx, fake.Now(), b.fingerprint(&next), &next)
	if n := len(running.active()); running.running(ids[2]) || n != 2 {
		t.Fatalf("took the dead worker's open shard without one to give: %d leases for a target of 2", n)
	}
	if l, err := leases.GetLease(ctx, ids[2]); err != nil || l.Owner != "x" {
		t.Fatalf("lease %s: owner %q (%v), want x's still", ids[2], l.Owner, err)
	}
}

// dead lists ids as dead workers without records.
func dead(ids ...string) []lease.DeadWorker {
	out := make([]lease.DeadWorker, len(ids))
	for i, id := range ids {
		out[i] = lease.DeadWorker{WorkerID: id}
	}
	return out
}

// staleList serves a copy of the lease table as it was before others took the leases.
type staleList struct {
	*memstore.Leases
	table lease.Table
}

func (s staleList) ListLeases(context.Context) (lease.Table, error) { return s.table, nil }

// A worker whose read of the lease table turns out stale (takes fail one after the
// other: others took those leases since) stops after staleAfterConflicts failures and
// reads the table again, instead of failing once per lease it read as free.
func TestTakesStopAfterConflictsInARowAndTheTableIsReadAgain(t *testing.T) {
	ctx := t.Context()
	fake := clock.NewFake(time.Unix(10000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "w0", Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	mem, s := memstore.NewLeases(), memstore.NewStream(40)
	for _, sh := range s.Shards() {
		if err := mem.CreateLease(ctx, lease.Lease{ShardID: sh.ID, Checkpoint: lease.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	stale, err := mem.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range stale.Leases {
		if _, err := mem.TakeLease(ctx, l, "other"); err != nil {
			t.Fatal(err)
		}
	}
	leases := staleList{Leases: mem, table: stale}
	tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
	tn.renew(fake.Now())
	corrupt := newCorruptLog(cfg.Logger)
	members := newMembership(memstore.NewMeta(), fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	running := newConsumerSet(&consumerEnv{cfg: &cfg, leases: leases, stream: s, clock: fake, tenure: tn,
		exits: make(chan consumerExit, 8)}, func(string) RecordProcessor { return idleProcessor{} }, cfg.Logger)
	stop := running.open(ctx)
	defer func() { stop(); running.stopAll(stopLost) }()
	b := newBalancer(&cfg, leases, tn, members, corrupt, running, cfg.Logger)
	view := lease.CoordinatorRecord{CoordinatorID: "c", Epoch: 1, Version: 1, MaxLeasesPerWorker: 20, Cap: 80}
	before := mem.Calls()["TakeLease"]
	b.balance(ctx, fake.Now(), b.fingerprint(&view), &view)
	if n := mem.Calls()["TakeLease"] - before; n != staleAfterConflicts {
		t.Fatalf("%d takes tried on a stale read of 40 leases, want %d", n, staleAfterConflicts)
	}
	if !b.forceScan {
		t.Fatal("the table is not read again next pass")
	}
}

// A consumer whose processor failed and whose release did not succeed (a lapse cancelled
// it) leaves a lease the table says is this worker's: it is read back and released (the
// shard cools down after the failure), never left owned and unprocessed.
func TestAFailedConsumerWhoseReleaseFailedIsNotOrphaned(t *testing.T) {
	ctx := t.Context()
	b := newTestBalancer(t, Config{})
	b.tenure.renew(b.clock.Now())
	b.target, b.targetKnown = 2, true
	leases := b.leases.(*memstore.Leases)
	if err := leases.CreateLease(ctx, lease.Lease{ShardID: "s", Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	l, _ := leases.GetLease(ctx, "s")
	held, err := leases.TakeLease(ctx, l, "w0")
	if err != nil {
		t.Fatal(err)
	}
	b.afterExit(ctx, consumerExit{lease: held, reason: exitFailed, kept: true})
	b.resolveUnsure(ctx)
	if cur, _ := leases.GetLease(ctx, "s"); cur.Owner != "" {
		t.Fatalf("lease owned by %q after the failed consumer's lease was resolved; want it released", cur.Owner)
	}
}
