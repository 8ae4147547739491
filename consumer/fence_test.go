package consumer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// The owner must stop acting on its leases strictly before any observer may treat them
// as expired, whatever the latency of the heartbeat write and of the observer's read,
// and whatever the wall clocks say. Both sides are driven by one fake clock here.
func TestSelfFenceComesBeforeAnyObserverExpiry(t *testing.T) {
	const ld = 10 * time.Second
	for _, tc := range []struct {
		name                    string
		writeLatency, readDelay time.Duration
	}{
		{"instant", 0, 0},
		{"slow write", 3 * time.Second, 0},
		{"slow observer", 0, 2 * time.Second},
		{"both slow", 4 * time.Second, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := clock.NewFake(time.Unix(5000, 0))
			meta := memstore.NewMeta()
			delay := tc.writeLatency
			owner := newTenure(fake, ld, ld/5)
			r := newRenewer(slowPut{meta, fake, &delay}, owner, fake, slog.New(slog.NewTextHandler(io.Discard, nil)),
				"owner", ld/3, ld/5, func() int { return 0 }, func() {})
			// The heartbeat write starts now and lands after writeLatency.
			if err := r.beat(context.Background(), lease.WorkerActive); err != nil {
				t.Fatal(err)
			}
			// An observer reads the new value readDelay after it landed (a read that took
			// readDelay), then reads again every 10ms.
			obs := newLiveness(ld)
			readStart := fake.Now()
			fake.Advance(tc.readDelay)
			m, _ := meta.ReadMeta(context.Background())
			obs.observe(readStart, fake.Now(), m.Workers)
			// Walk forward in small steps: the owner must be fenced before the observer
			// may take its leases.
			fencedAt, expiredAt := time.Time{}, time.Time{}
			for range 2000 {
				fake.Advance(10 * time.Millisecond)
				now := fake.Now()
				m, _ := meta.ReadMeta(context.Background())
				obs.observe(now, now, m.Workers)
				if fencedAt.IsZero() && !owner.holding() {
					fencedAt = now
				}
				if expiredAt.IsZero() && obs.expired("owner") {
					expiredAt = now
				}
			}
			if fencedAt.IsZero() || expiredAt.IsZero() {
				t.Fatalf("fenced at %v, expired at %v: both must happen", fencedAt, expiredAt)
			}
			if gap := expiredAt.Sub(fencedAt); gap < ld/5 {
				t.Fatalf("owner fenced only %s before observers may take over; want at least %s", gap, ld/5)
			}
		})
	}
}

// slowPut makes PutWorker take *delay on the fake clock, like a slow network.
type slowPut struct {
	*memstore.Meta
	clk   *clock.Fake
	delay *time.Duration
}

func (s slowPut) PutWorker(ctx context.Context, r lease.WorkerRecord) error {
	s.clk.Advance(*s.delay)
	return s.Meta.PutWorker(ctx, r)
}

// heldByA returns a lease table with the lease of shard "s", at TRIM_HORIZON, held by "a".
func heldByA(t *testing.T) (*memstore.Leases, lease.Lease) {
	t.Helper()
	store := memstore.NewLeases()
	if err := store.CreateLease(t.Context(), lease.Lease{ShardID: "s", Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	l, _ := store.GetLease(t.Context(), "s")
	held, err := store.TakeLease(t.Context(), l, "a")
	if err != nil {
		t.Fatal(err)
	}
	return store, held
}

func TestCheckpointerFencing(t *testing.T) {
	ctx := context.Background()
	store, a := heldByA(t)
	cp := newCheckpointer(store, a, Hooks{}, clock.Real{}, time.Second, 0)
	if err := cp.Checkpoint(ctx, "100"); err != nil {
		t.Fatal(err)
	}
	if err := cp.Checkpoint(ctx, "99"); !errors.Is(err, ErrCheckpointBackwards) {
		t.Fatalf("backwards checkpoint: %v, want ErrCheckpointBackwards", err)
	}
	if err := cp.Checkpoint(ctx, "not-a-number"); !errors.Is(err, ErrInvalidSequenceNumber) {
		t.Fatalf("bad checkpoint: %v, want ErrInvalidSequenceNumber", err)
	}
	// Another worker takes the lease; a's next checkpoint is refused and changes nothing.
	cur, _ := store.GetLease(ctx, "s")
	if _, err := store.TakeLease(ctx, cur, "b"); err != nil {
		t.Fatal(err)
	}
	if err := cp.Checkpoint(ctx, "200"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale checkpoint: %v, want ErrLeaseLost", err)
	}
	if got, _ := store.GetLease(ctx, "s"); got.Checkpoint != "100" || got.Owner != "b" {
		t.Fatalf("lease after stale checkpoint = %+v, want checkpoint 100 owned by b", got)
	}
	// Once lost, no more writes are even attempted.
	before := store.Calls()["Checkpoint"]
	_ = cp.Checkpoint(ctx, "300")
	if store.Calls()["Checkpoint"] != before {
		t.Fatal("a lost checkpointer still wrote")
	}
}

// With a coalescing interval a checkpointer writes at most once per interval: checkpoints
// in between are accepted and kept pending, flushed after the interval, handed to the
// release, and never written below a write that may have applied.
func TestCheckpointerCoalescesWrites(t *testing.T) {
	ctx := context.Background()
	fake := clock.NewFake(time.Unix(7000, 0))
	store, held := heldByA(t)
	cp := newCheckpointer(store, held, Hooks{}, fake, time.Second, time.Second)
	stored := func() string { cur, _ := store.GetLease(ctx, "s"); return cur.Checkpoint }
	writes := func() int { return store.Calls()["Checkpoint"] }

	for _, step := range []struct {
		advance     time.Duration
		checkpoint  string // "" : flush instead
		wantStored  string
		wantWrites  int
		wantPending string // "": none
	}{
		{0, "10", "10", 1, ""},                        // the first one is written at once
		{100 * time.Millisecond, "20", "10", 1, "20"}, // within the interval: pending
		{100 * time.Millisecond, "30", "10", 1, "30"},
		{500 * time.Millisecond, "", "10", 1, "30"}, // flush before the interval: nothing
		{400 * time.Millisecond, "", "30", 2, ""},   // flush after it: one write
		{100 * time.Millisecond, "40", "30", 2, "40"},
	} {
		fake.Advance(step.advance)
		if step.checkpoint != "" {
			if err := cp.Checkpoint(ctx, step.checkpoint); err != nil {
				t.Fatalf("Checkpoint(%s): %v", step.checkpoint, err)
			}
		} else if err := cp.flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if got, n := stored(), writes(); got != step.wantStored || n != step.wantWrites || cp.pending != (lease.ExtendedSequenceNumber{SequenceNumber: step.wantPending}) {
			t.Fatalf("after %q: stored %s in %d writes, pending %q; want %s in %d, pending %q",
				step.checkpoint, got, n, cp.pending, step.wantStored, step.wantWrites, step.wantPending)
		}
	}
	if got := cp.LastCheckpoint(); got != "40" {
		t.Fatalf("LastCheckpoint = %s, want the pending 40: a retried batch starts after it", got)
	}
	if err := cp.Checkpoint(ctx, "35"); !errors.Is(err, ErrCheckpointBackwards) {
		t.Fatalf("checkpoint below the pending one: %v, want ErrCheckpointBackwards", err)
	}
	if p := cp.takePending(); p != (lease.ExtendedSequenceNumber{SequenceNumber: "40"}) || !cp.takePending().IsZero() {
		t.Fatalf("takePending = %q, want 40 once", p)
	}
	// A write that failed and may have applied: an older pending one is never written.
	fake.Advance(2 * time.Second)
	store.InjectError("Checkpoint", errors.New("timeout"), 1)
	store.InjectError("GetLease", errors.New("timeout"), 1)
	if err := cp.Checkpoint(ctx, "50"); err == nil {
		t.Fatal("a failed write reported success")
	}
	fake.Advance(100 * time.Millisecond)
	if err := cp.Checkpoint(ctx, "45"); !errors.Is(err, ErrCheckpointBackwards) {
		t.Fatalf("checkpoint below a write that may have applied: %v, want ErrCheckpointBackwards", err)
	}
	// A lost lease: the due flush reports it.
	if err := cp.Checkpoint(ctx, "60"); err != nil {
		t.Fatal(err)
	}
	cur, _ := store.GetLease(ctx, "s")
	if _, err := store.TakeLease(ctx, cur, "b"); err != nil {
		t.Fatal(err)
	}
	fake.Advance(2 * time.Second)
	if err := cp.Checkpoint(ctx, "70"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("checkpoint after the lease was taken: %v, want ErrLeaseLost", err)
	}
	if got := stored(); got != "30" && got != "60" {
		t.Fatalf("stored checkpoint %s after the steal", got)
	}
}
