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
				"owner", ld/4, func() int { return 0 }, func() {})
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

func TestCheckpointerFencing(t *testing.T) {
	ctx := context.Background()
	store := memstore.NewLeases()
	if err := store.CreateLease(ctx, lease.Lease{ShardID: "s", Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	l, _ := store.GetLease(ctx, "s")
	a, err := store.TakeLease(ctx, l, "a")
	if err != nil {
		t.Fatal(err)
	}
	cp := newCheckpointer(store, a, Hooks{}, clock.Real{}, time.Second)
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
