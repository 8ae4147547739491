package takeover_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/takeover"
)

const window = 10 * time.Second

type tables struct {
	leases *memstore.Leases
	meta   *memstore.Meta
}

func (tb tables) put(shard, owner string, counter int64) {
	tb.leases.Put(lease.Lease{ShardID: shard, Owner: owner, Epoch: counter, Checkpoint: lease.TrimHorizon})
}

func (tb tables) register(t *testing.T, ids ...string) {
	for _, id := range ids {
		if err := tb.meta.PutWorker(t.Context(), lease.WorkerRecord{WorkerID: id, Incarnation: "i", Heartbeat: 1, State: lease.WorkerActive}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitLogs counts the check's "waiting" warnings, one a round in wait mode.
type waitLogs struct {
	slog.Handler
	rounds chan<- struct{} // buffered: one element a round
}

func (h waitLogs) Enabled(context.Context, slog.Level) bool { return true }

func (h waitLogs) WithAttrs(as []slog.Attr) slog.Handler {
	return waitLogs{h.Handler.WithAttrs(as), h.rounds}
}

func (h waitLogs) WithGroup(name string) slog.Handler {
	return waitLogs{h.Handler.WithGroup(name), h.rounds}
}

func (h waitLogs) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "KCL workers are still renewing leases; waiting for them to stop" {
		h.rounds <- struct{}{}
	}
	return h.Handler.Handle(ctx, r)
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		wait  bool
		setup func(t *testing.T, tb tables)
		// rounds are what happens during each window the check waits; the check must
		// wait exactly len(rounds) windows.
		rounds []func(t *testing.T, tb tables)
		// want is nil, or the renewals of the expected StillRenewingError.
		want []takeover.Renewal
	}{
		{name: "an empty table starts at once", setup: func(*testing.T, tables) {}},
		{name: "leases held by our workers start at once, even with counters moving",
			setup: func(t *testing.T, tb tables) {
				tb.register(t, "kds-0", "kds-1")
				tb.put("s0", "kds-0", 4)
				tb.put("s1", "kds-1", 9)
				tb.put("s2", "", 2)
			}},
		{name: "a stopped KCL fleet: counters still for a window, then start",
			setup: func(t *testing.T, tb tables) {
				tb.put("s0", "kcl-a", 40)
				tb.put("s1", "kcl-b", 7)
			},
			rounds: []func(*testing.T, tables){func(*testing.T, tables) {}}},
		{name: "a live KCL fleet: counters moved, refused with owners and counters",
			setup: func(t *testing.T, tb tables) {
				tb.put("s0", "kcl-a", 40)
				tb.put("s1", "kcl-b", 7)
				tb.put("s2", "kcl-b", 3)
			},
			rounds: []func(*testing.T, tables){func(_ *testing.T, tb tables) {
				tb.put("s0", "kcl-a", 42)
				tb.put("s2", "kcl-b", 4)
				tb.put("s3", "kcl-a", 1) // created and taken during the window
			}},
			want: []takeover.Renewal{{ShardID: "s0", Owner: "kcl-a", From: 40, To: 42}, {ShardID: "s3", Owner: "kcl-a", From: -1, To: 1},
				{ShardID: "s2", Owner: "kcl-b", From: 3, To: 4}}},
		{name: "a KCL take from another KCL worker is a renewal",
			setup:  func(t *testing.T, tb tables) { tb.put("s0", "kcl-a", 40) },
			rounds: []func(*testing.T, tables){func(_ *testing.T, tb tables) { tb.put("s0", "kcl-b", 41) }},
			want:   []takeover.Renewal{{ShardID: "s0", Owner: "kcl-b", From: 40, To: 41}}},
		{name: "a KCL fleet releasing its leases as it stops is not renewing",
			setup:  func(t *testing.T, tb tables) { tb.put("s0", "kcl-a", 40) },
			rounds: []func(*testing.T, tables){func(_ *testing.T, tb tables) { tb.put("s0", "", 41) }}},
		{name: "a worker of ours taking a KCL lease during the window is not a renewal",
			setup: func(t *testing.T, tb tables) { tb.put("s0", "kcl-a", 40) },
			rounds: []func(*testing.T, tables){func(t *testing.T, tb tables) {
				tb.register(t, "kds-1")
				tb.put("s0", "kds-1", 41)
			}}},
		{name: "wait: refused in the first window, still in the second, then start", wait: true,
			setup: func(t *testing.T, tb tables) { tb.put("s0", "kcl-a", 40) },
			rounds: []func(*testing.T, tables){
				func(_ *testing.T, tb tables) { tb.put("s0", "kcl-a", 41) },
				func(_ *testing.T, tb tables) { tb.put("s0", "kcl-a", 42) },
				func(*testing.T, tables) {},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := tables{memstore.NewLeases(), memstore.NewMeta()}
			tc.setup(t, tb)
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			rounds := make(chan struct{}, 16)
			check := takeover.Check{Leases: tb.leases, Meta: tb.meta, Table: "kcl-app", Window: window, Wait: tc.wait,
				Clock: clk, Logger: slog.New(waitLogs{slog.DiscardHandler, rounds})}
			done := make(chan error, 1)
			go func() { done <- check.Run(t.Context()) }()
			for _, during := range tc.rounds {
				waitForTimer(t, clk, done)
				during(t, tb)
				clk.Advance(window)
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("the check did not return after %d windows", len(tc.rounds))
			}
			if clk.Waiters() != 0 {
				t.Errorf("the check left %d timers", clk.Waiters())
			}
			if n := len(rounds); tc.wait && n != len(tc.rounds)-1 {
				t.Errorf("%d rounds logged as waiting, want %d", n, len(tc.rounds)-1)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Run: %v, want nil", err)
				}
				return
			}
			var still *takeover.StillRenewingError
			if !errors.As(err, &still) || !errors.Is(err, takeover.ErrStillRenewing) {
				t.Fatalf("Run: %v, want a StillRenewingError", err)
			}
			if !slices.Equal(still.Renewals, tc.want) {
				t.Errorf("renewals %+v, want %+v", still.Renewals, tc.want)
			}
			msg := err.Error()
			for _, w := range append(still.Owners(), "kcl-app", "stop the KCL fleet first") {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not name %q", msg, w)
				}
			}
		})
	}
}

// waitForTimer waits until the check sleeps on the fake clock; it fails if the check
// returned instead.
func waitForTimer(t *testing.T, clk *clock.Fake, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for clk.Waiters() == 0 {
		select {
		case err := <-done:
			t.Fatalf("the check returned (%v) before waiting for a window", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the check never waited for a window")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCheckMessageNamesCounters(t *testing.T) {
	err := &takeover.StillRenewingError{Table: "orders", Window: window, Renewals: []takeover.Renewal{
		{ShardID: "s0", Owner: "a", From: 1, To: 2}, {ShardID: "s1", Owner: "a", From: 5, To: 6},
		{ShardID: "s2", Owner: "a", From: 1, To: 3}, {ShardID: "s3", Owner: "a", From: 1, To: 3}, {ShardID: "s4", Owner: "b", From: -1, To: 1}}}
	want := "KCL workers (or other lease managers) are still renewing leases in orders: 5 lease counters moved in 10s while held by owners " +
		"that are not workers of this application (owner a: s0 (counter 1 -> 2), s1 (counter 5 -> 6), s2 (counter 1 -> 3) and 1 more; " +
		"owner b: s4 (new, counter 1)): stop the KCL fleet first"
	if got := err.Error(); got != want {
		t.Errorf("message\n got %s\nwant %s", got, want)
	}
}

func TestCheckEnds(t *testing.T) {
	t.Run("when its context ends while waiting", func(t *testing.T) {
		tb := tables{memstore.NewLeases(), memstore.NewMeta()}
		tb.put("s0", "kcl-a", 1)
		clk := clock.NewFake(time.Now())
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- takeover.Check{Leases: tb.leases, Meta: tb.meta, Window: window, Wait: true, Clock: clk}.Run(ctx)
		}()
		waitForTimer(t, clk, done)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v, want context.Canceled", err)
		}
	})
	t.Run("when a read fails", func(t *testing.T) {
		tb := tables{memstore.NewLeases(), memstore.NewMeta()}
		boom := errors.New("boom")
		tb.leases.InjectError("ListLeases", boom, 1)
		err := takeover.Check{Leases: tb.leases, Meta: tb.meta, Table: "t", Window: window}.Run(t.Context())
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "reading lease table t") {
			t.Errorf("Run: %v, want the read's error naming the table", err)
		}
	})
	for _, c := range []takeover.Check{{Window: window}, {Leases: memstore.NewLeases(), Meta: memstore.NewMeta()}} {
		if err := c.Run(t.Context()); err == nil {
			t.Errorf("Run of %+v: nil, want a configuration error", c)
		}
	}
}
