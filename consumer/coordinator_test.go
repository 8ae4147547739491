package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
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
			// The claim, the initial position, then the shard sync (listed apart from the
			// pass) and the values: each write comes from a read made after the one before.
			for i := 0; i < 200 && (rec == nil || rec.ShardCount == 0); i++ {
				m, start, err := members.observe(ctx)
				if err != nil {
					t.Fatal(err)
				}
				rec = c.coordinate(ctx, fake.Now(), m, start)
				fake.Advance(time.Millisecond)
				time.Sleep(time.Millisecond) // for the listing in flight
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
	shards, err := s.ListShards(ctx)
	c.syncShards(ctx, lease.CoordinatorRecord{InitialPosition: lease.TrimHorizon}, shards, err)
	table, _ := store.ListLeases(ctx)
	if len(table.Leases) != 200 {
		t.Fatalf("%d leases, want 200", len(table.Leases))
	}
	if store.max > createConcurrency || store.max < 2 {
		t.Fatalf("at most %d creations in flight, want between 2 and %d", store.max, createConcurrency)
	}
}

// lostAnswer applies UpdateCoordinator but reports an error while lose is positive: the
// answer of a write that did apply was lost.
type lostAnswer struct {
	*memstore.Meta
	lose int
}

func (s *lostAnswer) UpdateCoordinator(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	w, err := s.Meta.UpdateCoordinator(ctx, rec)
	if err == nil && s.lose > 0 {
		s.lose--
		return lease.CoordinatorRecord{}, errors.New("timeout: the answer was lost")
	}
	return w, err
}

// The coordinator publishes the membership view on every pass, but only from a read of
// the metadata table that started after it knew the version it writes over: not from the
// read before its claim, and not from the read after a write whose answer was lost (that
// read may have read the workers before the write applied). Workers rely on it to take a
// dead worker's leases (see TestLeasesOfDeadWorkersWaitForAViewComputedAfterTheLeaseRead).
func TestCoordinatorPublishesTheViewOnlyFromReadsAfterItsLastWrite(t *testing.T) {
	ctx := context.Background()
	fake := clock.NewFake(time.Unix(10000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "w0", Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	meta := &lostAnswer{Meta: memstore.NewMeta()}
	tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
	corrupt := newCorruptLog(cfg.Logger)
	members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	c := newCoordinator(&cfg, memstore.NewLeases(), meta, memstore.NewStream(4), tn, members, corrupt, cfg.Logger)
	put := func(id string, hb int64) {
		if err := meta.PutWorker(ctx, lease.WorkerRecord{WorkerID: id, Incarnation: "i", Heartbeat: hb, State: lease.WorkerActive}); err != nil {
			t.Fatal(err)
		}
	}
	put("x", 1) // never heard from again
	hb := int64(0)
	pass := func() (*lease.CoordinatorRecord, int) {
		t.Helper()
		fake.Advance(cfg.LeaseDuration / 4)
		hb++
		put("w0", hb)
		tn.renew(fake.Now())
		before := meta.Calls()["UpdateCoordinator"]
		m, start, err := members.observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rec := c.coordinate(ctx, fake.Now(), m, start)
		return rec, meta.Calls()["UpdateCoordinator"] - before
	}
	if _, writes := pass(); writes != 0 || !c.holding() {
		t.Fatalf("the claiming pass wrote %d times (holding %v): its read started before the claim", writes, c.holding())
	}
	for i := range 3 { // the initial position, then the values, then the view
		if _, writes := pass(); writes != 1 {
			t.Fatalf("pass %d after the claim wrote %d times, want 1", i+1, writes)
		}
	}
	meta.lose = 1
	if _, writes := pass(); writes != 1 {
		t.Fatalf("wrote %d times, want 1 (whose answer is lost)", writes)
	}
	applied := meta.Snapshot().Coordinator.Version
	if _, writes := pass(); writes != 0 || !c.holding() {
		t.Fatalf("after a lost answer: wrote %d times (holding %v); want no write from a read that may predate it, and the role kept", writes, c.holding())
	}
	rec, writes := pass()
	if writes != 1 || rec == nil || rec.Version != applied+1 {
		t.Fatalf("the next pass wrote %d times, record %+v; want one write over version %d", writes, rec, applied)
	}
	if want := []lease.DeadWorker{{WorkerID: "x", Incarnation: "i", Heartbeat: 1}}; !slices.Equal(rec.DeadWorkers, want) {
		t.Errorf("dead workers %v, want %v: silent for more than a lease duration", rec.DeadWorkers, want)
	}
}

// blockedListing is a stream whose ListShards waits until released (a throttled or hung
// Kinesis).
type blockedListing struct {
	*memstore.Stream
	release chan struct{}
}

func (s blockedListing) ListShards(ctx context.Context) ([]stream.Shard, error) {
	select {
	case <-s.release:
		return s.Stream.ListShards(ctx)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// A slow ListShards does not hold up the coordinator's pass: the view is still written on
// every pass (a stalled view would make every worker read the whole metadata table), and
// the sync completes on a later pass.
func TestASlowShardListingDoesNotStallTheView(t *testing.T) {
	ctx := t.Context()
	fake := clock.NewFake(time.Unix(10000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "w0", Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	meta := memstore.NewMeta()
	s := blockedListing{Stream: memstore.NewStream(3), release: make(chan struct{})}
	tn := newTenure(fake, cfg.LeaseDuration, cfg.fenceMargin())
	corrupt := newCorruptLog(cfg.Logger)
	members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	c := newCoordinator(&cfg, memstore.NewLeases(), meta, s, tn, members, corrupt, cfg.Logger)
	defer c.endRole()
	pass := func() (*lease.CoordinatorRecord, int) {
		t.Helper()
		fake.Advance(cfg.PollInterval)
		tn.renew(fake.Now())
		before := meta.Calls()["UpdateCoordinator"]
		m, start, err := members.observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan *lease.CoordinatorRecord, 1)
		go func() { done <- c.coordinate(ctx, fake.Now(), m, start) }()
		select {
		case rec := <-done:
			return rec, meta.Calls()["UpdateCoordinator"] - before
		case <-time.After(5 * time.Second):
			t.Fatal("a pass waited for ListShards")
			return nil, 0
		}
	}
	pass() // the claim
	for i := range 4 {
		if _, writes := pass(); writes != 1 {
			t.Fatalf("pass %d while ListShards hangs wrote %d times, want 1", i+1, writes)
		}
	}
	close(s.release)
	var rec *lease.CoordinatorRecord
	for i := 0; i < 200 && (rec == nil || rec.ShardCount != 3); i++ {
		rec, _ = pass()
		time.Sleep(time.Millisecond)
	}
	if rec.ShardCount != 3 {
		t.Fatalf("after the listing returned: shard count %d, want 3", rec.ShardCount)
	}
}
