package consumer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// listing is a Stream that only lists its shards.
type listing struct{ shards *[]stream.Shard }

func (l listing) ListShards(context.Context) ([]stream.Shard, error) { return *l.shards, nil }
func (listing) GetShardIterator(context.Context, string, stream.Position) (string, error) {
	return "", stream.ErrStreamNotFound
}
func (listing) GetRecords(context.Context, string, int) (stream.Batch, error) {
	return stream.Batch{}, stream.ErrStreamNotFound
}

// newTestCleaner returns a cleaner alone for worker "coord", on in-memory stores, a fake
// clock and a stream listing *shards, with the default delays.
func newTestCleaner(t *testing.T, shards *[]stream.Shard) (*cleaner, *memstore.Leases, *memstore.Meta, *clock.Fake) {
	t.Helper()
	fake := clock.NewFake(time.Unix(50000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "coord", Clock: fake,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	leases, meta := memstore.NewLeases(), memstore.NewMeta()
	corrupt := newCorruptLog(cfg.Logger)
	members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	return newCleaner(&cfg, leases, meta, listing{shards}, members, corrupt, cfg.Logger), leases, meta, fake
}

// A finished lease is deleted FinishedLeaseDelay after the coordinator first saw a lease
// for every child (listed by the stream or named in the table), not before; and a later
// shard sync does not create it again.
func TestFinishedLeaseIsDeletedOnceEveryChildHasALease(t *testing.T) {
	ctx := context.Background()
	shards := []stream.Shard{{ID: "p", Closed: true}, {ID: "c1", ParentShardID: "p"}, {ID: "c2", ParentShardID: "p"}, {ID: "open"}}
	k, leases, _, fake := newTestCleaner(t, &shards)
	leases.Put(lease.Lease{ShardID: "p", Epoch: 4, Checkpoint: lease.ShardEnd})
	leases.Put(lease.Lease{ShardID: "c1", Epoch: 2, Owner: "w1", Checkpoint: "17", ParentShardIDs: []string{"p"}})
	leases.Put(lease.Lease{ShardID: "open", Epoch: 1, Owner: "w1", Checkpoint: "9"})
	present := func(id string) bool { _, err := leases.GetLease(ctx, id); return err == nil }

	step := func(d time.Duration) { fake.Advance(d); k.run(ctx, fake.Now(), nil) }
	step(0)
	step(k.cfg.CleanupInterval + k.cfg.FinishedLeaseDelay)
	if !present("p") {
		t.Fatal("the parent was deleted while a child the stream lists had no lease yet")
	}
	leases.PutCorrupt("c2", "leaseCounter: missing")
	step(k.cfg.CleanupInterval + k.cfg.FinishedLeaseDelay)
	if !present("p") {
		t.Fatal("the parent was deleted while a child's lease was unreadable")
	}
	leases.Put(lease.Lease{ShardID: "c2", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"p"}})
	step(k.cfg.CleanupInterval) // first seen outgrown: an idle child that never checkpointed counts
	step(k.cfg.FinishedLeaseDelay - time.Second)
	if !present("p") {
		t.Fatal("the parent was deleted before FinishedLeaseDelay")
	}
	step(k.cfg.CleanupInterval)
	if present("p") {
		t.Fatal("the parent is still there FinishedLeaseDelay after its children started")
	}
	for _, id := range []string{"c1", "c2", "open"} {
		if !present(id) {
			t.Errorf("lease %s was deleted", id)
		}
	}
	// The shard sync does not create the deleted parent again: its children have leases.
	have := map[string]bool{"c1": true, "c2": true, "open": true}
	if need := unleased(shards, have); len(need) != 0 {
		t.Fatalf("unleased = %v, want none", need)
	}
}

// The shard sync creates leases for the open shards that have none and for their
// ancestors up to the first one with a lease, never for another closed shard: that one
// was processed and its lease deleted, even when its children aged out of the stream.
func TestUnleasedShardsAreOpenOnesAndTheirUnleasedAncestors(t *testing.T) {
	shards := []stream.Shard{
		{ID: "a", Closed: true}, {ID: "b", ParentShardID: "a", Closed: true},
		{ID: "c", ParentShardID: "b"}, {ID: "x", Closed: true}, {ID: "y", ParentShardID: "x"},
		{ID: "m1", Closed: true}, {ID: "m2", Closed: true}, {ID: "m", ParentShardID: "m1", AdjacentParentShardID: "m2"},
		{ID: "orphan", Closed: true}, // its children aged out of the listing
	}
	for _, tc := range []struct {
		name string
		have []string
		want string
	}{
		{"first sync: every ancestor of an open shard", nil, "a b c x y m1 m2 m"},
		{"parents created, children not yet", []string{"a", "x", "m1", "m2"}, "b c y m"},
		{"new children of leased parents", []string{"a", "b", "x", "m1", "m2"}, "c y m"},
		{"children of a split and a merge", []string{"b", "x", "m1", "m2"}, "c y m"},
		{"two generations processed and deleted", []string{"c", "y", "m"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have := map[string]bool{}
			for _, id := range tc.have {
				have[id] = true
			}
			var got []string
			for _, s := range unleased(shards, have) {
				got = append(got, s.ID)
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("unleased = %q, want %q", strings.Join(got, " "), tc.want)
			}
		})
	}
}

// A gone or expired worker's record is deleted DeadWorkerDelay after the coordinator first
// saw it dead; a live one's never, and one that wrote again is judged afresh.
func TestDeadWorkersRecordsAreDeletedAfterTheDelay(t *testing.T) {
	ctx := context.Background()
	k, _, meta, fake := newTestCleaner(t, &[]stream.Shard{})
	put := func(id string, hb int64, st lease.WorkerState) {
		if err := meta.PutWorker(ctx, lease.WorkerRecord{WorkerID: id, Incarnation: "i", Heartbeat: hb, State: st}); err != nil {
			t.Fatal(err)
		}
	}
	put("coord", 1, lease.WorkerActive)
	put("gone", 3, lease.WorkerGone)
	put("silent", 7, lease.WorkerActive)
	put("live", 1, lease.WorkerActive)
	live := int64(1)
	step := func(d time.Duration) {
		fake.Advance(d)
		live++
		put("live", live, lease.WorkerActive)
		m, _, err := k.members.observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k.run(ctx, fake.Now(), m.Workers)
	}
	records := func() map[string]bool {
		out := map[string]bool{}
		for _, r := range meta.Snapshot().Workers {
			out[r.WorkerID] = true
		}
		return out
	}
	every := k.cfg.CleanupInterval
	step(0)     // gone is dead from the first read
	step(every) // silent is expired from the second (reads a lease duration apart)
	for elapsed := every; elapsed+every < k.cfg.DeadWorkerDelay; elapsed += every {
		step(every)
		if r := records(); !r["gone"] || !r["silent"] {
			t.Fatalf("records %v after %s: deleted before DeadWorkerDelay", r, elapsed+every)
		}
	}
	step(every) // DeadWorkerDelay after gone was first seen gone
	if r := records(); r["gone"] || !r["silent"] {
		t.Fatalf("records %v: want gone deleted after DeadWorkerDelay, silent not yet", r)
	}
	put("silent", 8, lease.WorkerActive) // it comes back just before its deletion
	step(every)
	if r := records(); !r["silent"] || !r["live"] || !r["coord"] {
		t.Fatalf("records %v: want silent (it wrote again), live and coord kept", r)
	}
}

// Across any number of reshards the lease table holds the open shards' leases and those
// finished within FinishedLeaseDelay, nothing more; every record is still processed once
// its parents ended, and no deleted lease comes back.
func TestLeaseTableStaysAsLargeAsTheOpenShardsAcrossReshards(t *testing.T) {
	c := newCluster(t, 4)
	c.base.CleanupInterval = 200 * time.Millisecond
	c.base.FinishedLeaseDelay = 300 * time.Millisecond
	// A child whose parents ended on a worker at its target is taken by the others' lease
	// scan, at the latest after LeaseScanInterval (30 s by default): shorten it here.
	c.base.LeaseScanInterval = time.Second
	c.start("w0")
	c.start("w1")
	var all []map[string]bool
	for i, n := range []int{8, 4, 8, 16, 8, 4} {
		all = append(all, c.produce(fmt.Sprintf("r%d-", i), 100))
		if err := c.stream.UpdateShardCount(n); err != nil {
			t.Fatal(err)
		}
		c.waitFor(fmt.Sprintf("%d open shards owned", n), 15*time.Second, func() bool {
			counts, free := c.owners()
			return counts["w0"]+counts["w1"] == n && free == 0
		})
	}
	for _, seqs := range all {
		c.waitFor("every record", 15*time.Second, c.allProcessed(seqs))
	}
	open := c.stream.OpenShards()
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range c.leases.Snapshot().Leases {
				t.Logf("lease %s owner %q checkpoint %s parents %v", l.ShardID, l.Owner, l.Checkpoint, l.ParentShardIDs)
			}
		}
	})
	c.waitFor("only the open shards' leases", 10*time.Second, func() bool {
		return len(c.leases.Snapshot().Leases) == open
	})
	for _, l := range c.leases.Snapshot().Leases {
		if l.Finished() {
			t.Errorf("finished lease %s still in the table", l.ShardID)
		}
	}
	if total := len(c.stream.Shards()); total <= open {
		t.Fatalf("the stream lists %d shards, %d open: the test resharded nothing", total, open)
	}
}

// hungListing is a stream whose shard listing answers only when its context ends; it
// reports the context's deadline.
type hungListing struct {
	Stream
	deadline chan time.Time
}

func (h hungListing) ListShards(ctx context.Context) ([]stream.Shard, error) {
	d, _ := ctx.Deadline()
	h.deadline <- d
	<-ctx.Done()
	return nil, ctx.Err()
}

// A hung cleanup costs the control loop at most one DynamoDB call's deadline: it runs
// after the takes and releases of the pass, within a deadline of its own. A stream
// listing gets the deadline of a Kinesis call (3 lease durations: a loaded stream lists
// slowly; under the cleanup's own deadline it failed every time on a saturated engine)
// and holds the pass up for a poll at most: the deletions wait for it on later passes.
func TestCleanupHasADeadlineOfItsOwn(t *testing.T) {
	cfg, err := Config{AppName: "app", WorkerID: "coord", LeaseDuration: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		hangs  int64
		stream Stream
	}{
		{"lease table read", 1 << 30, memstore.NewStream(1)},
		{"stream listing", 0, hungListing{memstore.NewStream(1), make(chan time.Time, 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta := memstore.NewMeta()
			tn := newTenure(cfg.Clock, cfg.LeaseDuration, cfg.fenceMargin())
			tn.renew(cfg.Clock.Now())
			corrupt := newCorruptLog(cfg.Logger)
			members := newMembership(meta, cfg.Clock, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
			var hangs atomic.Int64
			hangs.Store(tc.hangs)
			c := newCoordinator(&cfg, hangingList{LeaseStore: memstore.NewLeases(), hang: &hangs}, meta, tc.stream, tn, members, corrupt, cfg.Logger)
			c.role.epoch, c.role.shardsKnown = 1, true
			start := time.Now()
			c.cleanup(context.Background(), cfg.Clock.Now(), nil)
			if took := time.Since(start); took > 2*cfg.callTimeout() {
				t.Fatalf("a hung cleanup held the control loop for %s; want at most %s", took, cfg.callTimeout())
			}
			if h, ok := tc.stream.(hungListing); ok {
				if left := time.Until(<-h.deadline); left < cfg.streamTimeout()-time.Second {
					t.Errorf("the listing had %s left after the pass; want a Kinesis call's deadline (%s)", left, cfg.streamTimeout())
				}
			}
			c.endRole() // stops a listing still in flight
		})
	}
}

// A live worker that reports running more leases than the lease table gives it is asked
// to recheck only when two reads of the table in a row show it (one read may fall between
// a take and the heartbeat that reports it), and no longer once the counts agree.
func TestWorkersRunningLeasesTheyDoNotOwnAreAskedToRecheck(t *testing.T) {
	ctx := t.Context()
	k, leases, meta, fake := newTestCleaner(t, &[]stream.Shard{{ID: "s1"}, {ID: "s2"}})
	for _, id := range []string{"s1", "s2"} {
		if err := leases.CreateLease(ctx, lease.Lease{ShardID: id, Checkpoint: lease.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
		l, _ := leases.GetLease(ctx, id)
		if _, err := leases.TakeLease(ctx, l, "w1"); err != nil {
			t.Fatal(err)
		}
	}
	held := 2
	step := func() []string {
		t.Helper()
		fake.Advance(k.cfg.CleanupInterval)
		if err := meta.PutWorker(ctx, lease.WorkerRecord{WorkerID: "w1", Incarnation: "i", Heartbeat: fake.Now().Unix(), State: lease.WorkerActive, LeasesHeld: held}); err != nil {
			t.Fatal(err)
		}
		m, _, err := k.members.observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k.run(ctx, fake.Now(), m.Workers)
		return k.rechecks()
	}
	if got := step(); len(got) != 0 {
		t.Fatalf("recheck %v while the counts agree", got)
	}
	l, _ := leases.GetLease(ctx, "s1")
	if _, err := leases.TakeLease(ctx, l, "operator"); err != nil {
		t.Fatal(err)
	}
	if got := step(); len(got) != 0 {
		t.Fatalf("recheck %v after one read", got)
	}
	if got := step(); !slices.Equal(got, []string{"w1"}) {
		t.Fatalf("recheck %v after two reads, want [w1]", got)
	}
	held = 1 // w1 found the lease lost
	if got := step(); len(got) != 0 {
		t.Fatalf("recheck %v once the counts agree again", got)
	}
}

// unlisted is a Stream too busy to list its shards.
type unlisted struct{ listing }

func (unlisted) ListShards(ctx context.Context) ([]stream.Shard, error) {
	return nil, context.DeadlineExceeded
}

// The coordinator counts the closed shards that wait for a worker: free (or a dead
// worker's), their own parents finished, their children unfinished, seen so on two reads
// of the lease table in a row. The count needs the lease table only: a stream too busy
// to list its shards (a saturated engine timed every listing out) does not hide it.
func TestClosedShardsWaitingForAWorkerAreCounted(t *testing.T) {
	ctx := t.Context()
	k, leases, meta, fake := newTestCleaner(t, &[]stream.Shard{})
	k.stream = unlisted{}
	for _, l := range []lease.Lease{
		{ShardID: "done", Checkpoint: lease.ShardEnd},
		{ShardID: "free", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"done"}},
		{ShardID: "held", Checkpoint: lease.TrimHorizon},
		{ShardID: "of-dead", Checkpoint: lease.TrimHorizon},
		{ShardID: "blocked", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"held"}},
		{ShardID: "leaf", Checkpoint: lease.TrimHorizon},
	} {
		if err := leases.CreateLease(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"free", "held", "of-dead", "blocked"} {
		if err := leases.CreateLease(ctx, lease.Lease{ShardID: id + "-child", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{id}}); err != nil {
			t.Fatal(err)
		}
	}
	for id, owner := range map[string]string{"held": "w1", "of-dead": "w2"} {
		l, _ := leases.GetLease(ctx, id)
		if _, err := leases.TakeLease(ctx, l, owner); err != nil {
			t.Fatal(err)
		}
	}
	step := func() int {
		t.Helper()
		fake.Advance(k.cfg.CleanupInterval)
		if err := meta.PutWorker(ctx, lease.WorkerRecord{WorkerID: "w1", Incarnation: "i", Heartbeat: fake.Now().Unix(), State: lease.WorkerActive, LeasesHeld: 1}); err != nil {
			t.Fatal(err)
		}
		m, _, err := k.members.observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k.run(ctx, fake.Now(), m.Workers)
		return k.waitingParents()
	}
	if got := step(); got != 0 {
		t.Fatalf("%d waiting after one read, want 0", got)
	}
	if got := step(); got != 1 {
		t.Fatalf("%d waiting after two reads, want 1 (free; w2 is not judged dead yet)", got)
	}
	fake.Advance(k.cfg.LeaseDuration) // w2 never wrote a record: dead once watched this long
	if got := step(); got != 1 {
		t.Fatalf("%d waiting on the first read that finds w2 dead, want 1", got)
	}
	if got := step(); got != 2 {
		t.Fatalf("%d waiting once w2 is dead, want 2 (free, of-dead)", got)
	}
	l, _ := leases.GetLease(ctx, "free")
	if _, err := leases.TakeLease(ctx, l, "w1"); err != nil {
		t.Fatal(err)
	}
	if got := step(); got != 1 {
		t.Fatalf("%d waiting once free is taken, want 1", got)
	}
}
