package consumer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// The coordinator alone, on in-memory stores and a fake clock: the first pass claims the
// role, records the initial position, creates a lease per shard and publishes
// min(cap, ceil(shards / live workers)), saying how many shards stay unowned.
func TestCoordinatorPublishesMaxLeasesForLiveWorkers(t *testing.T) {
	for _, tc := range []struct {
		shards, workers, cap   int
		wantMax, wantUnowned   int
		wantRecommendedAtLeast int
	}{
		{shards: 30, workers: 3, cap: 80, wantMax: 10},
		{shards: 60, workers: 3, cap: 80, wantMax: 20},
		{shards: 30, workers: 5, cap: 80, wantMax: 6},
		{shards: 100, workers: 5, cap: 80, wantMax: 20},
		{shards: 300, workers: 3, cap: 80, wantMax: 80, wantUnowned: 60, wantRecommendedAtLeast: 4},
	} {
		t.Run(fmt.Sprintf("%d shards %d workers", tc.shards, tc.workers), func(t *testing.T) {
			ctx := context.Background()
			fake := clock.NewFake(time.Unix(10000, 0))
			cfg, err := Config{AppName: "app", WorkerID: "w0", MaxLeasesCap: tc.cap, Clock: fake,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			leases, meta, s := memstore.NewLeases(), memstore.NewMeta(), memstore.NewStream(tc.shards)
			tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
			tn.renew(fake.Now())
			corrupt := newCorruptLog(cfg.Logger)
			members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
			for i := range tc.workers {
				if err := meta.PutWorker(ctx, lease.WorkerRecord{WorkerID: fmt.Sprintf("w%d", i), Incarnation: "x", Heartbeat: 1, State: lease.WorkerActive}); err != nil {
					t.Fatal(err)
				}
			}
			c := newCoordinator(&cfg, leases, meta, s, tn, members, corrupt, cfg.Logger)
			var rec *lease.CoordinatorRecord
			// The claim, the initial position, then the shard sync and the values: each write
			// comes from a read made after the one before.
			for range 3 {
				m, start, err := members.observe(ctx)
				if err != nil {
					t.Fatal(err)
				}
				rec = c.coordinate(ctx, fake.Now(), m, start)
				fake.Advance(time.Millisecond)
			}
			if !c.holding() || rec == nil || rec.CoordinatorID != "w0" {
				t.Fatalf("after the first pass: holding %v, record %+v; want w0 to hold the role", c.holding(), rec)
			}
			if rec.MaxLeasesPerWorker != tc.wantMax || rec.UnownedShards != tc.wantUnowned || rec.ShardCount != tc.shards || rec.LiveWorkers != tc.workers {
				t.Errorf("record = max %d unowned %d shards %d live %d; want max %d unowned %d shards %d live %d",
					rec.MaxLeasesPerWorker, rec.UnownedShards, rec.ShardCount, rec.LiveWorkers, tc.wantMax, tc.wantUnowned, tc.shards, tc.workers)
			}
			if rec.RecommendedWorkers < tc.wantRecommendedAtLeast {
				t.Errorf("recommended workers %d, want at least %d", rec.RecommendedWorkers, tc.wantRecommendedAtLeast)
			}
			if rec.InitialPosition != lease.TrimHorizon {
				t.Errorf("initial position %q, want %q recorded before any lease", rec.InitialPosition, lease.TrimHorizon)
			}
			table, err := leases.ListLeases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(table.Leases) != tc.shards {
				t.Errorf("%d leases, want one per shard (%d)", len(table.Leases), tc.shards)
			}
			// A worker that lapsed does not act as coordinator: the next pass writes nothing.
			fake.Advance(cfg.LeaseDuration)
			before := meta.Calls()["UpdateCoordinator"]
			if before == 0 {
				t.Fatal("the first pass wrote no coordinator record")
			}
			c.requestSync()
			c.coordinate(ctx, fake.Now(), lease.Meta{Coordinator: rec}, fake.Now())
			if after := meta.Calls()["UpdateCoordinator"]; after != before {
				t.Errorf("a lapsed coordinator wrote the record (%d writes)", after-before)
			}
		})
	}
}

// inFlight counts the CreateLease calls in flight and remembers the most at once.
type inFlight struct {
	*memstore.Leases
	mu       sync.Mutex
	now, max int
}

func (s *inFlight) CreateLease(ctx context.Context, l lease.Lease) error {
	s.mu.Lock()
	s.now++
	s.max = max(s.max, s.now)
	s.mu.Unlock()
	time.Sleep(time.Millisecond)
	defer func() { s.mu.Lock(); s.now--; s.mu.Unlock() }()
	return s.Leases.CreateLease(ctx, l)
}

// A shard sync creates many leases concurrently, but never more than createConcurrency
// at once.
func TestShardSyncCreatesLeasesWithBoundedConcurrency(t *testing.T) {
	ctx := context.Background()
	fake := clock.NewFake(time.Unix(10000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "w0", Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	store := &inFlight{Leases: memstore.NewLeases()}
	s := memstore.NewStream(200)
	tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
	tn.renew(fake.Now())
	corrupt := newCorruptLog(cfg.Logger)
	c := newCoordinator(&cfg, store, memstore.NewMeta(), s, tn, newMembership(memstore.NewMeta(), fake, cfg.LeaseDuration, time.Second, time.Second, corrupt), corrupt, cfg.Logger)
	c.syncShards(ctx, lease.CoordinatorRecord{InitialPosition: lease.TrimHorizon})
	table, _ := store.ListLeases(ctx)
	if len(table.Leases) != 200 {
		t.Fatalf("%d leases, want 200", len(table.Leases))
	}
	if store.max > createConcurrency || store.max < 2 {
		t.Fatalf("at most %d creations in flight, want between 2 and %d", store.max, createConcurrency)
	}
}
