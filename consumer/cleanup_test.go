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
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// newTestCleaner returns a cleaner alone for worker "coord", on in-memory stores and a
// fake clock, with the default delays.
func newTestCleaner(t *testing.T) (*cleaner, *memstore.Leases, *memstore.Meta, *clock.Fake) {
	t.Helper()
	fake := clock.NewFake(time.Unix(50000, 0))
	cfg, err := Config{AppName: "app", WorkerID: "coord", Clock: fake,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	leases, meta := memstore.NewLeases(), memstore.NewMeta()
	corrupt := newCorruptLog(cfg.Logger)
	members := newMembership(meta, fake, cfg.LeaseDuration, cfg.callTimeout(), corrupt)
	return newCleaner(&cfg, leases, meta, members, corrupt, cfg.Logger), leases, meta, fake
}

// A finished lease is deleted FinishedLeaseDelay after the coordinator first saw every
// child started, not before; and a later shard sync does not create it again.
func TestFinishedLeaseIsDeletedOnceEveryChildStarted(t *testing.T) {
	ctx := context.Background()
	k, leases, _, fake := newTestCleaner(t)
	leases.Put(lease.Lease{ShardID: "p", Epoch: 4, Checkpoint: lease.ShardEnd})
	leases.Put(lease.Lease{ShardID: "c1", Epoch: 2, Owner: "w1", Checkpoint: "17", ParentShardIDs: []string{"p"}})
	leases.Put(lease.Lease{ShardID: "c2", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"p"}})
	leases.Put(lease.Lease{ShardID: "open", Epoch: 1, Owner: "w1", Checkpoint: "9"})
	shards := []stream.Shard{{ID: "p", Closed: true}, {ID: "c1", ParentShardID: "p"}, {ID: "c2", ParentShardID: "p"}, {ID: "open"}}
	present := func(id string) bool { _, err := leases.GetLease(ctx, id); return err == nil }

	step := func(d time.Duration) { fake.Advance(d); k.run(ctx, fake.Now(), nil, shards) }
	step(0)
	step(k.cfg.CleanupInterval + k.cfg.FinishedLeaseDelay)
	if !present("p") {
		t.Fatal("the parent was deleted while a child had not started")
	}
	c2, _ := leases.GetLease(ctx, "c2")
	c2, _ = leases.TakeLease(ctx, c2, "w2")
	if err := leases.Checkpoint(ctx, c2, "3", -1); err != nil {
		t.Fatal(err)
	}
	step(k.cfg.CleanupInterval) // first seen outgrown
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
	if done := outgrownShards(shards, have); !done["p"] || done["c1"] || done["open"] {
		t.Fatalf("outgrownShards = %v, want only p", done)
	}
}

// A closed shard whose children have no lease yet is created (the first sync, or a sync
// after a failed one): only a processed shard is skipped, also across generations.
func TestOutgrownShardsNeedALeasedDescendant(t *testing.T) {
	shards := []stream.Shard{
		{ID: "a", Closed: true}, {ID: "b", ParentShardID: "a", Closed: true},
		{ID: "c", ParentShardID: "b"}, {ID: "x", Closed: true}, {ID: "y", ParentShardID: "x"},
	}
	for _, tc := range []struct {
		name string
		have map[string]bool
		want []string
	}{
		{"no leases yet", map[string]bool{}, nil},
		{"parents created, children not yet", map[string]bool{"a": true, "x": true}, nil},
		{"grandchild leased, two generations deleted", map[string]bool{"c": true, "x": true, "y": true}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := outgrownShards(shards, tc.have)
			if len(got) != len(tc.want) {
				t.Fatalf("outgrownShards = %v, want %v", got, tc.want)
			}
			for _, id := range tc.want {
				if !got[id] {
					t.Fatalf("outgrownShards = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// A gone or expired worker's record is deleted DeadWorkerDelay after the coordinator first
// saw it dead; a live one's never, and one that wrote again is judged afresh.
func TestDeadWorkersRecordsAreDeletedAfterTheDelay(t *testing.T) {
	ctx := context.Background()
	k, _, meta, fake := newTestCleaner(t)
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
		m, err := k.members.observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k.run(ctx, fake.Now(), m.Workers, nil)
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
