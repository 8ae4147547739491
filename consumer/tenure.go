package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
)

// tenure is a worker's right to act on the leases it holds: the validity that heartbeat
// renewals earn, the lapse generation that outlives every lapse, and the timer that fences
// the worker at its deadline. It is safe for concurrent use.
//
// A renewal whose write started at s earns validity until s + LeaseDuration - margin, but
// only if it returns before the current deadline. A renewal that returns after the
// deadline (a slow write, a retry, a pause) is a lapse like a failed one: other workers
// may have taken the leases in between, so every consumer started before it may never act
// again, even though the new write makes the worker valid once more.
type tenure struct {
	clock    clock.Clock
	validFor time.Duration // LeaseDuration - margin

	mu       sync.Mutex
	deadline time.Time // zero: not valid (before the first renewal, after the end)
	lapses   int64     // lapse generation: how many lapses so far
	counted  time.Time // the deadline whose lapse is already counted
	renewed  chan struct{}
}

func newTenure(c clock.Clock, leaseDuration, margin time.Duration) *tenure {
	return &tenure{clock: c, validFor: leaseDuration - margin, renewed: make(chan struct{}, 1)}
}

// before reports whether now is before deadline on both the monotonic and the wall clock.
// The monotonic clock does not advance while a virtual machine is suspended; the wall
// clock does (and may step): a worker is valid only while both say so, so a suspended
// worker wakes up fenced. A wall clock stepped forward costs a needless lapse, never
// safety; one stepped back is overruled by the monotonic reading.
func before(now, deadline time.Time) bool {
	return now.Before(deadline) && now.Round(0).Before(deadline.Round(0))
}

// generation returns the current lapse generation; a consumer records it when it starts.
func (t *tenure) generation() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.countLapseLocked(t.clock.Now())
	return t.lapses
}

// valid reports whether a consumer started at lapse generation lapses may still act.
func (t *tenure) valid(lapses int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	t.countLapseLocked(now)
	return lapses == t.lapses && !t.deadline.IsZero() && before(now, t.deadline)
}

// holding reports whether the worker itself is valid now (for any new work).
func (t *tenure) holding() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	t.countLapseLocked(now)
	return !t.deadline.IsZero() && before(now, t.deadline)
}

// countLapseLocked bumps the generation once per deadline that passed.
func (t *tenure) countLapseLocked(now time.Time) {
	if !t.deadline.IsZero() && !before(now, t.deadline) && !t.counted.Equal(t.deadline) {
		t.lapses++
		t.counted = t.deadline
	}
}

// renew records a successful renewal write that started at start. It reports whether the
// renewal came too late (after the deadline): then it counted a lapse first.
func (t *tenure) renew(start time.Time) (lapsed bool) {
	t.mu.Lock()
	prev := t.lapses
	t.countLapseLocked(t.clock.Now())
	lapsed = t.lapses != prev
	if next := start.Add(t.validFor); lapsed || next.After(t.deadline) {
		t.deadline = next
	}
	t.mu.Unlock()
	select {
	case t.renewed <- struct{}{}:
	default:
	}
	return lapsed
}

// end gives the tenure up (a clean shutdown): every consumer is invalid from now on.
func (t *tenure) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.deadline.IsZero() {
		t.lapses++
		t.counted = t.deadline
		t.deadline = time.Time{}
	}
}

// deadlineNow returns the current deadline (zero when not valid).
func (t *tenure) deadlineNow() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deadline
}

// fenceAtDeadlines calls fence each time the deadline passes without a renewal, on its
// own timer: fencing never waits for a heartbeat write in flight. It returns when ctx ends.
func (t *tenure) fenceAtDeadlines(ctx context.Context, fence func()) {
	for {
		d := t.deadlineNow()
		var wake <-chan time.Time
		if !d.IsZero() {
			wait := d.Sub(t.clock.Now())
			if w := d.Round(0).Sub(t.clock.Now().Round(0)); w < wait {
				wait = w
			}
			if wait <= 0 {
				if !t.holding() {
					fence()
				}
				// Wait for the next renewal: the worker stays fenced until then.
				select {
				case <-ctx.Done():
					return
				case <-t.renewed:
				}
				continue
			}
			wake = t.clock.After(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.renewed:
		case <-wake:
		}
	}
}
