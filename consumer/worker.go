package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Worker holds leases for some of a stream's shards and runs a RecordProcessor on each.
// Create it with New and run it with Run. It wires the parts that each do one job and
// runs their loops: the heartbeat (renewer) that earns the tenure, the tenure's fencing
// timer, and the control loop that reads the metadata table (membership), does the
// coordinator's duty (coordinator), takes and releases leases (balancer) and starts and
// forgets the shard consumers (consumerSet).
type Worker struct {
	cfg     Config
	log     *slog.Logger
	stream  Stream
	tenure  *tenure
	renewal *renewer
	members *membership
	coord   *coordinator
	bal     *balancer
	running *consumerSet
	status  statusBoard
	// lastPass is when the control loop last completed a pass, as Unix nanoseconds of the
	// worker's clock (0: never), for Check and Alive.
	lastPass atomic.Int64
	pace     pace
}

// Status is a snapshot of a worker for health checks, metrics and operators. The
// application-wide figures are as of the worker's last read of the metadata table.
type Status struct {
	WorkerID    string
	Ready       bool
	Coordinator bool
	// Target is the number of leases this worker obeys (max leases per worker).
	Target int
	// Leases are the shards this worker holds.
	Leases []string
	// StoppedShards are the shards of Leases that FailureStop stopped: their processor
	// kept failing on a batch, and nothing is read from them until the lease moves or the
	// worker restarts.
	StoppedShards []string
	// MaxLeasesPerWorker, ShardCount (open shards), WorkerCount (desired), LiveWorkers,
	// UnownedShards and RecommendedWorkers are the coordinator record's values.
	MaxLeasesPerWorker int
	ShardCount         int
	WorkerCount        int
	LiveWorkers        int
	UnownedShards      int
	RecommendedWorkers int
	// OwnedLeases is the sum of the leases live workers report holding, as the
	// coordinator last published it.
	OwnedLeases   int
	LastHeartbeat time.Time
}

// New checks cfg and returns a Worker. It does no I/O.
func New(cfg Config, leases LeaseStore, meta MetaStore, s Stream, factory ProcessorFactory) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if leases == nil || meta == nil || s == nil || factory == nil {
		return nil, errors.New("consumer.New: lease store, metadata store, stream and processor factory are all required")
	}
	w := &Worker{cfg: cfg, log: cfg.Logger.With("worker", cfg.WorkerID), stream: s}
	c := &w.cfg
	w.tenure = newTenure(c.Clock, c.LeaseDuration, c.fenceMargin())
	corrupt := newCorruptLog(w.log)
	w.members = newMembership(meta, c.Clock, c.LeaseDuration, c.callTimeout(), c.viewStallAfter(), corrupt)
	w.running = newConsumerSet(&consumerEnv{cfg: c, leases: leases, stream: s, clock: c.Clock, hooks: c.Hooks,
		tenure: w.tenure, exits: make(chan consumerExit, 2*c.MaxLeasesCap+16)}, factory, w.log)
	w.renewal = newRenewer(meta, w.tenure, c.Clock, w.log, c.WorkerID, c.HeartbeatInterval, c.heartbeatTimeout(), w.running.len, w.fence)
	w.coord = newCoordinator(c, leases, meta, s, w.tenure, w.members, corrupt, w.log)
	w.bal = newBalancer(c, leases, w.tenure, w.members, corrupt, w.running, w.log)
	w.status.s.WorkerID = c.WorkerID
	return w, nil
}

// Status returns a snapshot of the worker's state.
func (w *Worker) Status() Status {
	s := w.status.get()
	s.LastHeartbeat = w.renewal.lastRenewal()
	return s
}

// Run registers the worker, takes part in lease coordination and processes shards until
// ctx is done; then it shuts down gracefully: in-flight batches finish, processors
// checkpoint, leases are released, the coordinator role is handed back and the worker
// is marked gone, so that other workers take its shards at once. Run returns an error
// only when the worker cannot start (stream missing, tables missing, access denied).
func (w *Worker) Run(ctx context.Context) error {
	clk := w.cfg.Clock
	// The start-up check has the deadline of a start-up (a loaded machine, a cold
	// connection), not of a control-loop call.
	lctx, cancel := context.WithTimeout(ctx, max(w.cfg.callTimeout(), startupTimeout))
	_, err := w.stream.ListShards(lctx)
	cancel()
	if err != nil {
		if errors.Is(err, stream.ErrStreamNotFound) {
			return fmt.Errorf("worker %s: stream %q not found: create it (kdsctl create-stream) or set the stream name: %w", w.cfg.WorkerID, w.cfg.StreamName, err)
		}
		return fmt.Errorf("worker %s: cannot read stream %q: %w", w.cfg.WorkerID, w.cfg.StreamName, err)
	}
	if err := w.waitForOtherProcess(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := w.renewal.beat(ctx, lease.WorkerActive); err != nil {
		return fmt.Errorf("worker %s: cannot register in the metadata table: %w", w.cfg.WorkerID, err)
	}
	// The settle period counts from when others can see this worker, not from when the
	// process began its start-up checks.
	w.bal.settleUntil = clk.Now().Add(w.cfg.StartupSettle)
	w.log.Info("worker started", "app", w.cfg.AppName, "stream", w.cfg.StreamName,
		"incarnation", w.renewal.incarnation, "lease_duration", w.cfg.LeaseDuration)

	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.renewal.loop(hbCtx)
	}()
	fenceDone := make(chan struct{})
	go func() {
		defer close(fenceDone)
		w.tenure.fenceAtDeadlines(hbCtx, w.fence)
	}()
	defer func() { <-fenceDone }()
	// Consumers outlive ctx so that they can drain during shutdown; hardStop ends them.
	hardStop := w.running.open(ctx)
	defer hardStop()

	next := clk.Now()
	for {
		if d := next.Sub(clk.Now()); d > 0 {
			select {
			case <-ctx.Done():
				w.shutdown(ctx, hardStop, stopHeartbeat, hbDone)
				return nil
			case e := <-w.running.exits():
				w.handleExit(ctx, e)
				continue
			case <-clk.After(d):
			}
		}
		if ctx.Err() != nil {
			w.shutdown(ctx, hardStop, stopHeartbeat, hbDone)
			return nil
		}
		w.tick(ctx)
		now := clk.Now()
		next = now.Add(w.pace.interval(now, w.cfg.PollInterval))
	}
}

// waitForOtherProcess waits, before this process writes its first heartbeat, while
// another process with the same worker id is alive: its record shows another incarnation
// that is neither gone nor expired on this process's reads. A StatefulSet pod replaced
// while the old one still runs (force-deleted on a partitioned node) would otherwise take
// the old one's leases as "an earlier run" of itself while the old one still processes
// them. It returns an error only when the metadata table cannot be read at all.
func (w *Worker) waitForOtherProcess(ctx context.Context) error {
	waiting := false
	for ctx.Err() == nil {
		_, _, err := w.members.observeWorkers(ctx, []string{w.cfg.WorkerID})
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, lease.ErrTableNotFound):
			return fmt.Errorf("worker %s: cannot read the metadata table: %w", w.cfg.WorkerID, err)
		case err != nil:
			w.log.Warn("cannot read the metadata table; retrying", "err", err)
			_ = clock.Sleep(ctx, w.cfg.Clock, w.cfg.PollInterval)
			continue
		}
		rec, ok := w.members.record(w.cfg.WorkerID)
		if !ok || rec.Incarnation == w.renewal.incarnation || w.members.expired(w.cfg.WorkerID) {
			if waiting {
				w.log.Info("the other process with this worker id stopped; starting")
			}
			return nil
		}
		if !waiting {
			waiting = true
			w.log.Error("another process is running with this worker id: waiting until it stops (worker ids must be unique)",
				"other_incarnation", rec.Incarnation, "other_started_at", rec.StartedAt, "other_heartbeat", rec.Heartbeat)
		}
		_ = clock.Sleep(ctx, w.cfg.Clock, w.cfg.PollInterval)
	}
	return nil
}

// Check reports whether the worker is healthy: nil while it is starting, or while its
// control loop completes passes (successful or not) within six lease durations
// (passStallLimit) and its heartbeat succeeds within three (renewalStallLimit), on the
// worker's clock. It is the readiness check: unlike Alive it also fails while heartbeats
// fail (a DynamoDB outage), when the worker cannot hold leases.
func (w *Worker) Check() error {
	return w.overdue(
		w.passes(),
		progress{"heartbeat has not succeeded", w.renewal.lastBeat.Load(), w.cfg.renewalStallLimit()},
	)
}

// Alive reports whether the worker's loops still run: nil while it is starting, or
// while its control loop completes passes (successful or not) within six lease durations,
// as for Check, and its heartbeat loop ends writes (successful or failed) within the
// write's deadline plus three heartbeat intervals (attemptStallLimit), on the worker's
// clock. It is the liveness check: it catches a hung loop (every remote call has a
// deadline, so a hang is a bug a restart may cure) and never restarts a worker for a
// DynamoDB outage, whose calls fail but end. The error names the loop that hung.
func (w *Worker) Alive() error {
	return w.overdue(
		w.passes(),
		progress{"heartbeat loop has not ended a write", w.renewal.lastAttempt.Load(), w.cfg.attemptStallLimit()},
	)
}

// progress is what Check and Alive judge of one loop: when it last did what it should
// (Unix nanoseconds of the worker's clock, 0: never) and how long it may go without.
type progress struct {
	missing string // what the error says has not happened
	at      int64
	limit   time.Duration
}

// passes is the control loop's progress, judged alike by Check and Alive.
func (w *Worker) passes() progress {
	return progress{"control loop has not completed a pass", w.lastPass.Load(), w.cfg.passStallLimit()}
}

// overdue returns an error naming the first of ps that is older than its limit on the
// worker's clock, or nil. One that never happened is starting, not overdue.
func (w *Worker) overdue(ps ...progress) error {
	now := w.cfg.Clock.Now().UnixNano()
	for _, p := range ps {
		if p.at != 0 && now-p.at > int64(p.limit) {
			return fmt.Errorf("worker %s: %s for %s (limit %s)",
				w.cfg.WorkerID, p.missing, time.Duration(now-p.at).Round(time.Millisecond), p.limit.Round(time.Millisecond))
		}
	}
	return nil
}

// fence stops every consumer as lost: this worker could not renew in time. It is called
// by the tenure's timer and by a late renewal, on their goroutines.
func (w *Worker) fence() {
	if n := w.running.stopAll(stopLost); n > 0 {
		w.log.Error("could not renew the heartbeat in time: stopped processing every shard before other workers may take them",
			"leases", n, "lease_duration", w.cfg.LeaseDuration)
	}
}

// handleExit forgets a consumer that ended and follows up on its reason.
func (w *Worker) handleExit(ctx context.Context, e consumerExit) {
	w.running.forget(e)
	if e.reason == exitEnded {
		w.coord.requestSync()
	}
	w.bal.afterExit(ctx, e)
}

// shutdown drains and releases every lease, hands back the coordinator role and marks
// the worker gone. It ends within ShutdownTimeout + LeaseDuration/5 even when a processor
// ignores its context: such a shard's lease is left to expire, and the worker is not
// marked gone, so nobody takes the lease while that processor may still run.
func (w *Worker) shutdown(ctx context.Context, hardStop, stopHeartbeat context.CancelFunc, hbDone <-chan struct{}) {
	clk := w.cfg.Clock
	start := clk.Now()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ShutdownTimeout)
	defer cancel()
	w.log.Info("shutting down: releasing leases", "leases", w.running.len())
	for _, c := range w.running.all() {
		c.requestStop(stopPlanned)
	}
	timeout := sctx.Done()
	var grace <-chan time.Time
	for over := false; w.running.len() > 0 && !over; {
		select {
		case e := <-w.running.exits():
			w.handleExit(sctx, e)
		case <-timeout:
			w.log.Error("shutdown timed out; stopping the remaining shards without releasing them", "leases", w.running.len())
			hardStop()
			timeout, grace = nil, clk.After(w.cfg.fenceMargin())
		case <-grace:
			over = true
		}
	}
	abandoned := w.running.shardIDs()
	if len(abandoned) > 0 {
		w.log.Error("record processors did not return after their context was cancelled: leaving their leases to expire after the lease duration",
			"shards", abandoned)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.callTimeout())
	w.coord.resign(rctx)
	rcancel()
	stopHeartbeat()
	<-hbDone
	// From here on nothing may act on a lease; then others may take them at once.
	w.tenure.end()
	if len(abandoned) == 0 {
		gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.callTimeout())
		if err := w.renewal.beat(gctx, lease.WorkerGone); err != nil {
			w.log.Warn("could not mark the worker gone; others will take over after the lease duration", "err", err)
		}
		gcancel()
	}
	w.status.set(func(s *Status) { s.Ready = false; s.Leases, s.StoppedShards = nil, nil; s.Coordinator = false })
	w.log.Info("worker stopped", "took", clk.Now().Sub(start).Round(time.Millisecond))
}

// tick is one pass of the control loop: read the metadata table (all of it while this
// worker holds the coordinator role, else the membership view), do the coordinator's duty
// if this worker has the role, then take or release leases. The pass as a whole has a
// deadline (passTimeout), and each call its own.
func (w *Worker) tick(ctx context.Context) {
	ctx, cancelPass := context.WithTimeout(ctx, w.cfg.passTimeout())
	defer cancelPass()
	// A pass that ends, even on an error, shows the loop is not stuck.
	defer func() { w.lastPass.Store(w.cfg.Clock.Now().UnixNano()) }()
	var meta lease.Meta
	var readStart time.Time
	var err error
	if w.coord.holding() {
		meta, readStart, err = w.members.observe(ctx)
	} else {
		meta, readStart, err = w.members.readView(ctx, w.cfg.WorkerID)
	}
	if err != nil {
		if ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded) {
			w.log.Warn("cannot read the metadata table", "err", err)
		}
		return
	}
	now := w.cfg.Clock.Now()
	rec := w.coord.coordinate(ctx, now, meta, readStart)
	fp := w.bal.fingerprint(rec)
	w.pace.saw(fp, now, w.cfg.PollInterval)
	w.bal.resolveUnsure(ctx)
	w.bal.balance(ctx, now, fp, rec)
	w.bal.recheck(ctx, now, rec)
	// Published before the cleanup, whose reads may take a while: the status (and the
	// metrics) follow the takes and releases of this pass at once.
	w.publish(rec)
	w.coord.cleanup(ctx, now, meta.Workers)
}

// publish updates the Status after a pass that read rec.
func (w *Worker) publish(rec *lease.CoordinatorRecord) {
	w.status.set(func(s *Status) {
		s.Ready = true
		s.Coordinator = w.coord.holding()
		s.Target = w.bal.target
		s.Leases = w.running.shardIDs()
		s.StoppedShards = w.running.stoppedIDs()
		if rec != nil {
			s.OwnedLeases = rec.OwnedLeases
			s.MaxLeasesPerWorker, s.RecommendedWorkers = rec.MaxLeasesPerWorker, rec.RecommendedWorkers
			s.ShardCount, s.WorkerCount, s.LiveWorkers, s.UnownedShards = rec.ShardCount, rec.WorkerCount, rec.LiveWorkers, rec.UnownedShards
		}
	})
}

// pace makes the control loop poll faster for a moment after it saw a change, so that
// chains of reactions (a worker expires, the coordinator raises the target, the others
// take) complete in a fraction of PollInterval per step.
type pace struct {
	fastUntil time.Time
	last      string // the fingerprint of the last pass
}

func (p *pace) saw(fingerprint string, now time.Time, poll time.Duration) {
	if fingerprint != p.last {
		p.last = fingerprint
		p.fastUntil = now.Add(3 * poll)
	}
}

func (p *pace) interval(now time.Time, poll time.Duration) time.Duration {
	if now.Before(p.fastUntil) {
		return poll / 5
	}
	return poll
}

// statusBoard holds the Status the control loop publishes for other goroutines.
type statusBoard struct {
	mu sync.Mutex
	s  Status
}

func (b *statusBoard) get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.s
	s.Leases = append([]string(nil), s.Leases...)
	s.StoppedShards = append([]string(nil), s.StoppedShards...)
	return s
}

func (b *statusBoard) set(f func(*Status)) {
	b.mu.Lock()
	f(&b.s)
	b.mu.Unlock()
}
