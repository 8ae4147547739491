package consumer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Worker holds leases for some of a stream's shards and runs a RecordProcessor on each.
// Create it with New and run it with Run.
type Worker struct {
	cfg     Config
	leases  LeaseStore
	meta    MetaStore
	stream  Stream
	factory ProcessorFactory
	clock   clock.Clock
	log     *slog.Logger
	hooks   Hooks

	incarnation string
	started     time.Time
	exits       chan consumerExit

	// Written by the heartbeat goroutine (and by Run before and after it).
	heartbeat int64
	// tenure is this worker's right to act on its leases: validity, lapses, fencing.
	tenure     *tenure
	leasesHeld atomic.Int64
	// lastPass and lastBeat are when the control loop last completed a pass and the last
	// heartbeat succeeded, as Unix nanoseconds of the worker's clock (0: never), for Check.
	lastPass atomic.Int64
	lastBeat atomic.Int64

	// mu guards held against the heartbeat goroutine, which stops consumers when the
	// worker fences itself. Only the control loop changes held.
	mu   sync.Mutex
	held map[string]*shardConsumer

	// Control-loop state: used by the Run goroutine only.
	live            *liveness
	target          int
	targetKnown     bool
	settleUntil     time.Time
	lastScan        time.Time
	lastFingerprint string
	forceScan       bool
	// fastUntil makes the control loop poll faster for a moment after it saw a change,
	// so that chains of reactions (a worker expires, the coordinator raises the target,
	// the others take) complete in a fraction of PollInterval per step.
	fastUntil   time.Time
	lastChanges string
	cooldown    map[string]time.Time
	reported    map[string]bool
	// unsure holds shards whose take reported an error: the write may have applied
	// anyway. Each pass reads them back until it knows.
	unsure map[string]bool
	// startPos is the application's initial position as recorded in the coordinator item.
	startPos lease.CoordinatorRecord
	coord    coordinatorState
	// procCtx is the parent of every consumer's context. It outlives Run's context so
	// that consumers can drain during shutdown.
	procCtx context.Context

	statusMu sync.Mutex
	status   Status
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
	// MaxLeasesPerWorker, ShardCount (open shards), WorkerCount (desired), LiveWorkers,
	// UnownedShards and RecommendedWorkers are the coordinator record's values.
	MaxLeasesPerWorker int
	ShardCount         int
	WorkerCount        int
	LiveWorkers        int
	UnownedShards      int
	RecommendedWorkers int
	// OwnedLeases is the sum of the leases live workers report holding.
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
	var id [8]byte
	_, _ = rand.Read(id[:])
	w := &Worker{
		cfg:         cfg,
		leases:      leases,
		meta:        meta,
		stream:      s,
		factory:     factory,
		clock:       cfg.Clock,
		log:         cfg.Logger.With("worker", cfg.WorkerID),
		hooks:       cfg.Hooks,
		incarnation: hex.EncodeToString(id[:]),
		exits:       make(chan consumerExit, 2*cfg.MaxLeasesCap+16),
		held:        make(map[string]*shardConsumer),
		live:        newLiveness(cfg.LeaseDuration),
		cooldown:    make(map[string]time.Time),
		reported:    make(map[string]bool),
		unsure:      make(map[string]bool),
		tenure:      newTenure(cfg.Clock, cfg.LeaseDuration, cfg.LeaseDuration/5),
	}
	w.status.WorkerID = cfg.WorkerID
	return w, nil
}

// Status returns a snapshot of the worker's state.
func (w *Worker) Status() Status {
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	s := w.status
	s.Leases = append([]string(nil), s.Leases...)
	return s
}

// Run registers the worker, takes part in lease coordination and processes shards until
// ctx is done; then it shuts down gracefully: in-flight batches finish, processors
// checkpoint, leases are released, the coordinator role is handed back and the worker
// is marked gone, so that other workers take its shards at once. Run returns an error
// only when the worker cannot start (stream missing, tables missing, access denied).
func (w *Worker) Run(ctx context.Context) error {
	w.started = w.clock.Now()
	// The start-up check has the deadline of a start-up (a loaded machine, a cold
	// connection), not of a control-loop call.
	lctx, cancel := context.WithTimeout(ctx, max(w.callTimeout(), startupTimeout))
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
	if err := w.beat(ctx, lease.WorkerActive); err != nil {
		return fmt.Errorf("worker %s: cannot register in the metadata table: %w", w.cfg.WorkerID, err)
	}
	// The settle period counts from when others can see this worker, not from when the
	// process began its start-up checks.
	w.settleUntil = w.clock.Now().Add(w.cfg.StartupSettle)
	w.log.Info("worker started", "app", w.cfg.AppName, "stream", w.cfg.StreamName,
		"incarnation", w.incarnation, "lease_duration", w.cfg.LeaseDuration)

	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeatLoop(hbCtx)
	}()
	fenceDone := make(chan struct{})
	go func() {
		defer close(fenceDone)
		w.tenure.fenceAtDeadlines(hbCtx, w.fence)
	}()
	defer func() { <-fenceDone }()
	// Consumers outlive ctx so that they can drain during shutdown; hardStop ends them.
	var hardStop context.CancelFunc
	w.procCtx, hardStop = context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()

	next := w.clock.Now()
	for {
		if d := next.Sub(w.clock.Now()); d > 0 {
			select {
			case <-ctx.Done():
				w.shutdown(ctx, hardStop, stopHeartbeat, hbDone)
				return nil
			case e := <-w.exits:
				w.handleExit(ctx, e)
				continue
			case <-w.clock.After(d):
			}
		}
		if ctx.Err() != nil {
			w.shutdown(ctx, hardStop, stopHeartbeat, hbDone)
			return nil
		}
		w.tick(ctx)
		now := w.clock.Now()
		if now.Before(w.fastUntil) {
			next = now.Add(w.cfg.PollInterval / 5)
		} else {
			next = now.Add(w.cfg.PollInterval)
		}
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
		_, err := w.observe(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, lease.ErrTableNotFound):
			return fmt.Errorf("worker %s: cannot read the metadata table: %w", w.cfg.WorkerID, err)
		case err != nil:
			w.log.Warn("cannot read the metadata table; retrying", "err", err)
			_ = clock.Sleep(ctx, w.clock, w.cfg.PollInterval)
			continue
		}
		rec, ok := w.live.record(w.cfg.WorkerID)
		if !ok || rec.Incarnation == w.incarnation || w.live.expired(w.cfg.WorkerID) {
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
		_ = clock.Sleep(ctx, w.clock, w.cfg.PollInterval)
	}
	return nil
}

// startupTimeout bounds the stream check at start.
const startupTimeout = 30 * time.Second

// callTimeout bounds every DynamoDB call of the control loop and the consumers (heartbeat
// writes have HeartbeatInterval): a hung call ends, is retried, and never holds a loop.
func (w *Worker) callTimeout() time.Duration { return w.cfg.LeaseDuration / 2 }

// streamTimeout bounds every Kinesis call. It is longer than callTimeout on purpose: a
// deadline shorter than a loaded stream's answer abandons work the stream still does,
// and the retries that follow add to its load (seen on a saturated local engine). Kinesis
// calls decide nothing about ownership, so their length costs no safety.
func (w *Worker) streamTimeout() time.Duration { return 3 * w.cfg.LeaseDuration }

// passTimeout bounds one pass of the control loop (the coordinator's shard sync
// included).
func (w *Worker) passTimeout() time.Duration { return 3 * w.cfg.LeaseDuration }

// beat writes the worker's record. A successful write started at t lets the worker act
// until t + LeaseDuration - LeaseDuration/5, if it returned before the current deadline
// (see tenure): no observer can see the heartbeat stale for a lease duration before then,
// because each observer starts counting only after it read the new value, which is after
// the write started.
func (w *Worker) beat(ctx context.Context, state lease.WorkerState) error {
	start := w.clock.Now()
	w.heartbeat++
	ctx, cancel := context.WithTimeout(ctx, w.cfg.HeartbeatInterval)
	defer cancel()
	err := w.meta.PutWorker(ctx, lease.WorkerRecord{
		WorkerID:    w.cfg.WorkerID,
		Incarnation: w.incarnation,
		Heartbeat:   w.heartbeat,
		State:       state,
		LeasesHeld:  int(w.leasesHeld.Load()),
		LastSeen:    time.Now().UTC(),
		StartedAt:   w.started.UTC(),
	})
	if err != nil {
		return err
	}
	if state == lease.WorkerActive && w.tenure.renew(start) {
		// Renewed after the deadline: other workers may have taken our leases meanwhile.
		// Consumers from before are stopped; the leases are taken again with new epochs.
		w.log.Warn("heartbeat renewed only after the deadline: counted as a lapse", "write_took", w.clock.Now().Sub(start))
		w.fence()
	}
	w.lastBeat.Store(w.clock.Now().UnixNano())
	w.statusMu.Lock()
	w.status.LastHeartbeat = time.Now()
	w.statusMu.Unlock()
	return nil
}

// heartbeatLoop renews the heartbeat every HeartbeatInterval. Fencing does not wait for
// it: the tenure's own timer fences the worker at its deadline.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	failures := 0
	for {
		if clock.Sleep(ctx, w.clock, w.cfg.HeartbeatInterval) != nil {
			return
		}
		if err := w.beat(ctx, lease.WorkerActive); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			w.log.Warn("heartbeat failed", "err", err, "consecutive_failures", failures)
		} else if failures > 0 {
			w.log.Info("heartbeat renewed again", "after_failures", failures)
			failures = 0
		}
	}
}

// Check reports whether the worker is healthy: nil while it is starting, or while its
// control loop completes passes (successful or not: a hung call is what it catches)
// within six lease durations and its heartbeat succeeds within three, on the worker's
// clock. A worker stuck that long cannot hold leases anyway. It is meant for a liveness
// probe.
func (w *Worker) Check() error {
	now := w.clock.Now().UnixNano()
	for _, c := range []struct {
		what  string
		at    int64
		limit time.Duration
	}{
		{"control loop", w.lastPass.Load(), w.passTimeout() + 3*w.cfg.LeaseDuration},
		{"heartbeat", w.lastBeat.Load(), 3 * w.cfg.LeaseDuration},
	} {
		if c.at != 0 && now-c.at > int64(c.limit) {
			return fmt.Errorf("worker %s: %s has not completed for %s (limit %s)",
				w.cfg.WorkerID, c.what, time.Duration(now-c.at).Round(time.Millisecond), c.limit)
		}
	}
	return nil
}

// fence stops every consumer as lost: this worker could not renew in time.
func (w *Worker) fence() {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.held {
		select {
		case <-c.done:
			continue
		default:
		}
		c.requestStop(stopLost)
		n++
	}
	if n > 0 {
		w.log.Error("could not renew the heartbeat in time: stopped processing every shard before other workers may take them",
			"leases", n, "lease_duration", w.cfg.LeaseDuration)
	}
}

// startConsumer begins processing a lease just taken.
func (w *Worker) startConsumer(held lease.Lease) {
	cctx, cancel := context.WithCancel(w.procCtx)
	c := &shardConsumer{
		w:      w,
		held:   held,
		cp:     newCheckpointer(w.leases, held, w.hooks, w.clock, w.callTimeout()),
		gen:    w.tenure.generation(),
		proc:   w.factory(held.ShardID),
		log:    w.log.With("shard", held.ShardID, "epoch", held.Epoch),
		stopCh: make(chan stopKind, 1),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	w.mu.Lock()
	w.held[held.ShardID] = c
	w.mu.Unlock()
	w.leasesHeld.Store(int64(len(w.held)))
	w.hooks.leaseTaken(held.ShardID, held.Epoch)
	c.log.Info("lease taken", "checkpoint", held.Checkpoint)
	go c.run(cctx)
}

// handleExit forgets a consumer that ended and follows up on its reason.
func (w *Worker) handleExit(ctx context.Context, e consumerExit) {
	w.mu.Lock()
	if c, ok := w.held[e.held.ShardID]; ok && c.held.Epoch == e.held.Epoch {
		delete(w.held, e.held.ShardID)
		c.cancel()
	}
	w.mu.Unlock()
	w.leasesHeld.Store(int64(len(w.held)))
	switch e.reason {
	case exitLost:
		// The lease may still be ours in the table (a fenced lapse): read it back each pass
		// until it is run again, released, or someone else's, so that a lease this worker
		// owns is never left unprocessed (at the target, nobody else may take it).
		w.unsure[e.held.ShardID] = true
		w.forceScan = true
		w.hooks.leaseLost(e.held.ShardID)
		w.log.Warn("lease lost", "shard", e.held.ShardID, "epoch", e.held.Epoch)
	case exitFailed:
		// Let another worker (or this one, later) try: retaking at once would fail again.
		w.cooldown[e.held.ShardID] = w.clock.Now().Add(w.cfg.LeaseScanInterval)
		w.forceScan = true
	case exitEnded:
		w.coord.forceSync = true
		w.forceScan = true
		if ctx.Err() == nil {
			w.takeChildren(ctx, e)
		}
	}
}

// shutdown drains and releases every lease, hands back the coordinator role and marks
// the worker gone. It ends within ShutdownTimeout + LeaseDuration/5 even when a processor
// ignores its context: such a shard's lease is left to expire, and the worker is not
// marked gone, so nobody takes the lease while that processor may still run.
func (w *Worker) shutdown(ctx context.Context, hardStop, stopHeartbeat context.CancelFunc, hbDone <-chan struct{}) {
	start := w.clock.Now()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ShutdownTimeout)
	defer cancel()
	w.log.Info("shutting down: releasing leases", "leases", len(w.held))
	for _, c := range w.held {
		c.requestStop(stopPlanned)
	}
	timeout := sctx.Done()
	var grace <-chan time.Time
	for over := false; len(w.held) > 0 && !over; {
		select {
		case e := <-w.exits:
			w.handleExit(sctx, e)
		case <-timeout:
			w.log.Error("shutdown timed out; stopping the remaining shards without releasing them", "leases", len(w.held))
			hardStop()
			timeout, grace = nil, w.clock.After(w.fenceMargin())
		case <-grace:
			over = true
		}
	}
	abandoned := len(w.held) > 0
	if abandoned {
		ids := make([]string, 0, len(w.held))
		for id := range w.held {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		w.log.Error("record processors did not return after their context was cancelled: leaving their leases to expire after the lease duration",
			"shards", ids)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), w.callTimeout())
	w.resignCoordinator(rctx)
	rcancel()
	stopHeartbeat()
	<-hbDone
	// From here on nothing may act on a lease; then others may take them at once.
	w.tenure.end()
	if !abandoned {
		gctx, gcancel := context.WithTimeout(context.WithoutCancel(ctx), w.callTimeout())
		if err := w.beat(gctx, lease.WorkerGone); err != nil {
			w.log.Warn("could not mark the worker gone; others will take over after the lease duration", "err", err)
		}
		gcancel()
	}
	w.setStatus(func(s *Status) { s.Ready = false; s.Leases = nil; s.Coordinator = false })
	w.log.Info("worker stopped", "took", w.clock.Now().Sub(start).Round(time.Millisecond))
}

// fenceMargin is how long before others may take our leases this worker stops acting on
// them.
func (w *Worker) fenceMargin() time.Duration { return w.cfg.LeaseDuration / 5 }

// tick is one pass of the control loop: read the metadata table, do the coordinator's
// duty if this worker has the role, then take or release leases. The pass as a whole
// has a deadline (passTimeout), and each call its own.
func (w *Worker) tick(ctx context.Context) {
	ctx, cancelPass := context.WithTimeout(ctx, w.passTimeout())
	defer cancelPass()
	// A pass that ends, even on an error, shows the loop is not stuck.
	defer func() { w.lastPass.Store(w.clock.Now().UnixNano()) }()
	meta, err := w.observe(ctx)
	if err != nil {
		if ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded) {
			w.log.Warn("cannot read the metadata table", "err", err)
		}
		return
	}
	now := w.clock.Now()
	w.reportCorrupt(meta.Corrupt)
	if meta.Coordinator != nil && meta.Coordinator.InitialPosition != "" {
		w.startPos = *meta.Coordinator
	}
	rec := w.coordinate(ctx, now, meta)
	fp := w.fingerprint(meta, rec)
	if fp != w.lastChanges {
		w.lastChanges = fp
		w.fastUntil = now.Add(3 * w.cfg.PollInterval)
	}
	w.resolveUnsure(ctx)
	w.balance(ctx, now, fp, rec)

	leases := make([]string, 0, len(w.held))
	for id := range w.held {
		leases = append(leases, id)
	}
	sort.Strings(leases)
	owned := 0
	for _, r := range meta.Workers {
		if r.WorkerID != w.cfg.WorkerID && w.live.alive(r.WorkerID) {
			owned += r.LeasesHeld
		}
	}
	owned += len(w.held)
	w.setStatus(func(s *Status) {
		s.Ready = true
		s.Coordinator = w.coord.epoch != 0
		s.Target = w.target
		s.Leases = leases
		s.OwnedLeases = owned
		if rec != nil {
			s.MaxLeasesPerWorker, s.RecommendedWorkers = rec.MaxLeasesPerWorker, rec.RecommendedWorkers
			s.ShardCount, s.WorkerCount, s.LiveWorkers, s.UnownedShards = rec.ShardCount, rec.WorkerCount, rec.LiveWorkers, rec.UnownedShards
		}
	})
}

// observe reads the metadata table and records what it shows of the workers' liveness,
// timed from the read's start to its return (see liveness.observe).
func (w *Worker) observe(ctx context.Context) (lease.Meta, error) {
	start := w.clock.Now()
	rctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	meta, err := w.meta.ReadMeta(rctx)
	cancel()
	if err != nil {
		return lease.Meta{}, err
	}
	w.live.observe(start, w.clock.Now(), meta.Workers)
	return meta, nil
}

func (w *Worker) setStatus(f func(*Status)) {
	w.statusMu.Lock()
	f(&w.status)
	w.statusMu.Unlock()
}

// reportCorrupt logs each corrupt item once; such items are skipped, never fatal.
func (w *Worker) reportCorrupt(items []lease.CorruptItem) {
	for _, c := range items {
		key := c.String()
		if !w.reported[key] {
			w.reported[key] = true
			w.log.Error("skipping a corrupt item; fix or delete it", "item", c.Key, "reason", c.Reason)
		}
	}
}
