// Package clock hides time behind a small interface so that lease logic can run on the
// real clock in production and on a fake, manually advanced clock in unit tests. (The
// simulator, internal/sim, runs the real clock inside testing/synctest bubbles, whose
// time is virtual.)
//
// Lease expiry in this project is decided only from durations measured on the local
// monotonic clock (time.Time values returned by Now carry a monotonic reading, and
// Sub/Since use it), never by comparing wall-clock times written by other workers.
package clock

import (
	"context"
	"time"
)

// Clock is the source of time for all lease decisions.
type Clock interface {
	// Now returns the current time, with a monotonic reading.
	Now() time.Time
	// After returns a channel that receives once d has elapsed.
	After(d time.Duration) <-chan time.Time
}

// Real is the system clock.
type Real struct{}

// Now implements Clock.
func (Real) Now() time.Time { return time.Now() }

// After implements Clock.
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Sleep waits for d on c, or until ctx is done, whichever comes first. It returns
// ctx.Err() when the context ended the wait.
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.After(d):
		return nil
	}
}
