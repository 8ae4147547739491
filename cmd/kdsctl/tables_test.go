package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// seededStore returns a store on fresh tables of a new application.
func seededStore(t *testing.T) *dynamostore.Store {
	t.Helper()
	st, err := dynamostore.New(enginetest.DynamoDB(t), enginetest.UniqueName(t, "app"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.DeleteTables(ctx); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return st
}

// seedCoordinator writes the coordinator item as worker w1 would.
func seedCoordinator(t *testing.T, st *dynamostore.Store, rec lease.CoordinatorRecord) {
	t.Helper()
	c, err := st.ClaimCoordinator(t.Context(), "w1", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec.CoordinatorID, rec.Epoch, rec.Version = c.CoordinatorID, c.Epoch, c.Version
	if _, err := st.UpdateCoordinator(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// seedLease creates a lease and, with an owner, takes it for them.
func seedLease(t *testing.T, st *dynamostore.Store, shard, owner, checkpoint string, parents ...string) {
	t.Helper()
	l := lease.Lease{ShardID: shard, Checkpoint: checkpoint, ParentShardIDs: parents}
	if err := st.CreateLease(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	if owner != "" {
		if _, err := st.TakeLease(t.Context(), l, owner); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMetadataAndLeases(t *testing.T) {
	st := seededStore(t)
	app := st.LeaseTable()
	now := time.Now().UTC()
	for _, id := range []string{"w2", "w1"} {
		if err := st.PutWorker(t.Context(), lease.WorkerRecord{WorkerID: id, Incarnation: "i-" + id, Heartbeat: 7,
			State: lease.WorkerActive, LeasesHeld: 1, LastSeen: now, StartedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	seedCoordinator(t, st, lease.CoordinatorRecord{ShardCount: 5, WorkerCount: 2, LiveWorkers: 2, MaxLeasesPerWorker: 2,
		TargetLeasesPerWorker: 2, Cap: 2, UnownedShards: 1, RecommendedWorkers: 3,
		DeadWorkers: []lease.DeadWorker{{WorkerID: "w9", Incarnation: "i", Heartbeat: 3}}, OwnedLeases: 3, RecheckWorkers: []string{"w2"}})
	seedLease(t, st, "s0", "", lease.ShardEnd)
	seedLease(t, st, "s1", "w1", lease.TrimHorizon, "s0")
	seedLease(t, st, "s2", "w1", lease.TrimHorizon, "s0")
	seedLease(t, st, "s3", "w2", lease.TrimHorizon)
	seedLease(t, st, "s4", "", lease.TrimHorizon)
	seedLease(t, st, "s5", "", lease.TrimHorizon, "s4")
	seedLease(t, st, "s6", "", lease.TrimHorizon, "aged-out")
	// The owner of s1 checkpointed 1.5 s behind the tip; s2's owner has not checkpointed yet.
	held, err := st.GetLease(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Checkpoint(t.Context(), held, lease.ExtendedSequenceNumber{SequenceNumber: "49650000000000000000000000000000000000000000000000000001"}, 1500); err != nil {
		t.Fatal(err)
	}

	t.Run("metadata", func(t *testing.T) {
		r := kdsctlOK(t, "--app", app, "metadata")
		for _, want := range []string{"WARNING", "1 of 5 shards are UNOWNED", "run 3 workers", "worker count (desired)",
			"2 (cap 2)", "epoch / version", "dead workers", "w9", "asked to recheck their leases"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if strings.Index(r.stdout, "\nw1 ") > strings.Index(r.stdout, "\nw2 ") {
			t.Error("workers not sorted by id")
		}
	})
	t.Run("metadata json", func(t *testing.T) {
		r := kdsctlOK(t, "--app", app, "metadata", "-o", "json")
		var v metaView
		mustJSON(t, r, &v)
		c := v.Coordinator
		if c == nil || c.CoordinatorID != "w1" || c.ShardCount != 5 || c.WorkerCount != 2 || c.MaxLeasesPerWorker != 2 ||
			c.UnownedShards != 1 || c.RecommendedWorkers != 3 || c.Epoch != 1 || c.UpdatedAt == "" ||
			!slices.Equal(c.DeadWorkers, []string{"w9"}) || c.OwnedLeases != 3 || !slices.Equal(c.RecheckWorkers, []string{"w2"}) {
			t.Errorf("coordinator %+v", c)
		}
		if len(v.Workers) != 2 || v.Workers[0].WorkerID != "w1" || v.Workers[1].Heartbeat != 7 || v.Workers[0].State != "active" {
			t.Errorf("workers %+v", v.Workers)
		}
		if len(v.Warnings) != 1 || !strings.Contains(r.stderr, "WARNING: 1 of 5 shards are UNOWNED") {
			t.Errorf("warnings %v; stderr %q", v.Warnings, r.stderr)
		}
	})
	t.Run("leases", func(t *testing.T) {
		r := kdsctlOK(t, "--app", app, "leases")
		for _, want := range []string{"LAG", "1.5s", "waiting for parent", "7 leases: 3 active, 2 unowned, 1 waiting for parent, 1 finished"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
	t.Run("leases json", func(t *testing.T) {
		r := kdsctlOK(t, "--app", app, "-o", "json", "leases")
		var v leaseView
		mustJSON(t, r, &v)
		want := map[string]string{"s0": "finished", "s1": "active", "s2": "active", "s3": "active",
			"s4": "unowned", "s5": "waiting for parent", "s6": "unowned"}
		for i, l := range v.Leases {
			if l.Shard != "s"+string(rune('0'+i)) || l.State != want[l.Shard] {
				t.Errorf("lease %d: %s %q, want s%d %q", i, l.Shard, l.State, i, want[l.Shard])
			}
			if (l.MillisBehindLatest != nil) != (l.Shard == "s1") || l.Shard == "s1" && *l.MillisBehindLatest != 1500 {
				t.Errorf("lease %s: lag %v", l.Shard, l.MillisBehindLatest)
			}
		}
		if len(v.Leases) != 7 {
			t.Errorf("%d leases, want 7", len(v.Leases))
		}
		wantLoad := []workerLoad{{Worker: "w1", Leases: 2}, {Worker: "w2", Leases: 1}}
		if len(v.Workers) != 2 || v.Workers[0] != wantLoad[0] || v.Workers[1] != wantLoad[1] {
			t.Errorf("workers %+v, want %+v", v.Workers, wantLoad)
		}
		if v.Summary != (leaseSummary{Total: 7, Active: 3, Unowned: 2, Waiting: 1, Finished: 1}) {
			t.Errorf("summary %+v", v.Summary)
		}
	})
	t.Run("monitor", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 1200*time.Millisecond)
		defer cancel()
		// Stopping it is how Ctrl+C ends it: a clean exit.
		r := kdsctlCtx(ctx, t, "--app", app, "monitor", "--interval", "500ms", "-o", "json")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		frames := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(frames) < 2 {
			t.Fatalf("%d frames in 1.2s at 500ms", len(frames))
		}
		var f monitorFrame
		if err := json.Unmarshal([]byte(frames[0]), &f); err != nil {
			t.Fatal(err)
		}
		if f.Metadata == nil || f.Metadata.Coordinator == nil || f.Leases == nil || len(f.Leases.Workers) != 2 || len(f.Errors) > 0 {
			t.Errorf("frame %+v", f)
		}
		ctx, cancel = context.WithTimeout(t.Context(), 700*time.Millisecond)
		defer cancel()
		r = kdsctlCtx(ctx, t, "--app", app, "monitor", "--interval", "500ms")
		if r.code != 0 || !strings.Contains(r.stdout, "Coordinator") {
			t.Errorf("table monitor: exit %d", r.code)
		}
	})
	t.Run("missing tables", func(t *testing.T) {
		if r := kdsctl(t, "--app", app+"-none", "leases"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("exit %d, want 1 with table not found", r.code)
		}
	})
}
