package consumer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// renewer writes this worker's record in the metadata table: its heartbeat, which earns
// the tenure its validity. It is safe for concurrent use by the heartbeat goroutine and
// (before and after it runs) the control loop.
type renewer struct {
	meta     MetaStore
	tenure   *tenure
	clock    clock.Clock
	log      *slog.Logger
	workerID string
	interval time.Duration // HeartbeatInterval: between renewals
	timeout  time.Duration // of each write
	// incarnation identifies this run of the process; started is when it began.
	incarnation string
	started     time.Time
	// leaseCount returns how many leases the worker runs, for its record.
	leaseCount func() int
	// onLapse is called when a renewal landed after the deadline.
	onLapse func()

	heartbeat atomic.Int64
	// lastBeat is when the last renewal succeeded, as Unix nanoseconds of the clock (0:
	// never), for Worker.Check.
	lastBeat atomic.Int64
	// lastAttempt is when the last write ended, successful or not, as Unix nanoseconds of
	// the clock (0: never), for Worker.Alive: it stops moving only when a write hangs (past
	// its deadline) or the loop does.
	lastAttempt atomic.Int64
}

func newRenewer(meta MetaStore, t *tenure, clk clock.Clock, log *slog.Logger, workerID string, interval, timeout time.Duration, leaseCount func() int, onLapse func()) *renewer {
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &renewer{meta: meta, tenure: t, clock: clk, log: log, workerID: workerID, interval: interval, timeout: timeout,
		incarnation: hex.EncodeToString(id[:]), started: clk.Now(), leaseCount: leaseCount, onLapse: onLapse}
}

// beat writes the worker's record. A successful write started at t lets the worker act
// until t + LeaseDuration - LeaseDuration/5, if it returned before the current deadline
// (see tenure): no observer can see the heartbeat stale for a lease duration before then,
// because each observer starts counting only after it read the new value, which is after
// the write started. Whatever its outcome, beat records when it ended (lastAttempt).
func (r *renewer) beat(ctx context.Context, state lease.WorkerState) error {
	start := r.clock.Now()
	defer func() { r.lastAttempt.Store(r.clock.Now().UnixNano()) }()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := r.meta.PutWorker(ctx, lease.WorkerRecord{
		WorkerID:    r.workerID,
		Incarnation: r.incarnation,
		Heartbeat:   r.heartbeat.Add(1),
		State:       state,
		LeasesHeld:  r.leaseCount(),
		LastSeen:    time.Now().UTC(),
		StartedAt:   r.started.UTC(),
	})
	if err != nil {
		return err
	}
	if state == lease.WorkerActive && r.tenure.renew(start) {
		// Renewed after the deadline: other workers may have taken our leases meanwhile.
		// Consumers from before are stopped; the leases are taken again with new epochs.
		r.log.Warn("heartbeat renewed only after the deadline: counted as a lapse", "write_took", r.clock.Now().Sub(start))
		r.onLapse()
	}
	r.lastBeat.Store(r.clock.Now().UnixNano())
	return nil
}

// loop renews the heartbeat every interval until ctx ends, and retries a failed write
// after interval/8. Fencing does not wait for it: the tenure's own timer fences the worker
// at its deadline.
func (r *renewer) loop(ctx context.Context) {
	failures := 0
	for {
		wait := r.interval
		if failures > 0 {
			wait = r.interval / 8
		}
		if clock.Sleep(ctx, r.clock, wait) != nil {
			return
		}
		if err := r.beat(ctx, lease.WorkerActive); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			r.log.Warn("heartbeat failed", "err", err, "consecutive_failures", failures)
		} else if failures > 0 {
			r.log.Info("heartbeat renewed again", "after_failures", failures)
			failures = 0
		}
	}
}

// lastRenewal returns when the last renewal succeeded (zero: never).
func (r *renewer) lastRenewal() time.Time {
	if ns := r.lastBeat.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
