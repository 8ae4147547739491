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
	// validUntil is when this worker must have stopped processing unless it renews,
	// as a duration since started on the local monotonic clock.
	validUntil atomic.Int64
	// lapses counts the times validity ran out before it was renewed. A consumer started
	// before a lapse may never act again, even once the heartbeat is renewed: its lease
	// may have been taken meanwhile.
	lapses     atomic.Int64
	leasesHeld atomic.Int64

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
	coord       coordinatorState
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
	w.settleUntil = w.started.Add(w.cfg.StartupSettle)
	if _, err := w.stream.ListShards(ctx); err != nil {
		if errors.Is(err, stream.ErrStreamNotFound) {
			return fmt.Errorf("worker %s: stream %q not found: create it (kdsctl create-stream) or set the stream name: %w", w.cfg.WorkerID, w.cfg.StreamName, err)
		}
		return fmt.Errorf("worker %s: cannot read stream %q: %w", w.cfg.WorkerID, w.cfg.StreamName, err)
	}
	if err := w.beat(ctx, lease.WorkerActive); err != nil {
		return fmt.Errorf("worker %s: cannot register in the metadata table: %w", w.cfg.WorkerID, err)
	}
	w.log.Info("worker started", "app", w.cfg.AppName, "stream", w.cfg.StreamName,
		"incarnation", w.incarnation, "lease_duration", w.cfg.LeaseDuration)

	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeatLoop(hbCtx)
	}()
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

// fenceMargin is how long before others may take our leases we stop processing them,
// so that an in-flight batch has time to notice.
func (w *Worker) fenceMargin() time.Duration { return w.cfg.LeaseDuration / 5 }

// renewalValid reports whether this worker may still act on its leases.
func (w *Worker) renewalValid() bool {
	return w.clock.Now().Sub(w.started) < time.Duration(w.validUntil.Load())
}

// tenureValid reports whether a consumer started at lapse generation gen may still act.
// validUntil is read before lapses: a lapse is counted before validity is extended, so a
// renewed validity is never seen together with the old generation.
func (w *Worker) tenureValid(gen int64) bool {
	return w.renewalValid() && w.lapses.Load() == gen
}

// beat writes the worker's record. A successful write started at t lets the worker act
// until t + LeaseDuration - fenceMargin: no observer can see the heartbeat stale for a
// lease duration before then, because each observer starts counting only after it
// read the new value, which is after the write started.
func (w *Worker) beat(ctx context.Context, state lease.WorkerState) error {
	start := w.clock.Now()
	if w.heartbeat > 0 && !w.renewalValid() {
		// Validity ran out (a network cut, a long pause): other workers may own our leases
		// now. Fence every consumer before the renewal can make them look valid again.
		w.lapses.Add(1)
		w.fence()
	}
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
	if state == lease.WorkerActive {
		w.validUntil.Store(int64(start.Sub(w.started) + w.cfg.LeaseDuration - w.fenceMargin()))
	} else {
		w.validUntil.Store(0)
	}
	w.statusMu.Lock()
	w.status.LastHeartbeat = time.Now()
	w.statusMu.Unlock()
	return nil
}

// heartbeatLoop renews the heartbeat and fences the worker when renewal fails for too
// long: every consumer is stopped as lost before any other worker may take its lease.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	next := w.clock.Now().Add(w.cfg.HeartbeatInterval)
	failures := 0
	for {
		now := w.clock.Now()
		deadline := w.started.Add(time.Duration(w.validUntil.Load()))
		wake := next
		if w.holding() && deadline.Before(wake) && deadline.After(now) {
			wake = deadline
		}
		select {
		case <-ctx.Done():
			return
		case <-w.clock.After(wake.Sub(now)):
		}
		if !w.clock.Now().Before(next) {
			next = w.clock.Now().Add(w.cfg.HeartbeatInterval)
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
		if !w.renewalValid() {
			w.fence()
		}
	}
}

func (w *Worker) holding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.held) > 0
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
		cp:     newCheckpointer(w.leases, held, w.hooks),
		gen:    w.lapses.Load(),
		proc:   w.factory(held.ShardID),
		log:    w.log.With("shard", held.ShardID, "epoch", held.Counter),
		stopCh: make(chan stopKind, 1),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	w.mu.Lock()
	w.held[held.ShardID] = c
	w.mu.Unlock()
	w.leasesHeld.Store(int64(len(w.held)))
	w.hooks.leaseTaken(held.ShardID, held.Counter)
	c.log.Info("lease taken", "checkpoint", held.Checkpoint)
	go c.run(cctx)
}

// handleExit forgets a consumer that ended and follows up on its reason.
func (w *Worker) handleExit(ctx context.Context, e consumerExit) {
	w.mu.Lock()
	if c, ok := w.held[e.held.ShardID]; ok && c.held.Counter == e.held.Counter {
		delete(w.held, e.held.ShardID)
		c.cancel()
	}
	w.mu.Unlock()
	w.leasesHeld.Store(int64(len(w.held)))
	switch e.reason {
	case exitLost:
		// The lease may still be ours in the table (a fenced lapse): look at once, so a
		// renewed worker resumes its shards instead of waiting for the safety-net scan.
		w.forceScan = true
		w.hooks.leaseLost(e.held.ShardID)
		w.log.Warn("lease lost", "shard", e.held.ShardID, "epoch", e.held.Counter)
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
// the worker gone.
func (w *Worker) shutdown(ctx context.Context, hardStop, stopHeartbeat context.CancelFunc, hbDone <-chan struct{}) {
	start := w.clock.Now()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ShutdownTimeout)
	defer cancel()
	w.log.Info("shutting down: releasing leases", "leases", len(w.held))
	for _, c := range w.held {
		c.requestStop(stopPlanned)
	}
	for len(w.held) > 0 {
		select {
		case e := <-w.exits:
			w.handleExit(sctx, e)
		case <-sctx.Done():
			w.log.Error("shutdown timed out; stopping the remaining shards without releasing them", "leases", len(w.held))
			hardStop()
			for len(w.held) > 0 {
				w.handleExit(sctx, <-w.exits)
			}
		}
	}
	w.resignCoordinator(sctx)
	stopHeartbeat()
	<-hbDone
	if err := w.beat(sctx, lease.WorkerGone); err != nil {
		w.log.Warn("could not mark the worker gone; others will take over after the lease duration", "err", err)
	}
	w.setStatus(func(s *Status) { s.Ready = false; s.Leases = nil; s.Coordinator = false })
	w.log.Info("worker stopped", "took", w.clock.Now().Sub(start).Round(time.Millisecond))
}

// tick is one pass of the control loop: read the metadata table, do the coordinator's
// duty if this worker has the role, then take or release leases.
func (w *Worker) tick(ctx context.Context) {
	now := w.clock.Now()
	rctx, cancel := context.WithTimeout(ctx, w.cfg.LeaseDuration/2)
	meta, err := w.meta.ReadMeta(rctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("cannot read the metadata table", "err", err)
		}
		return
	}
	w.reportCorrupt(meta.Corrupt)
	w.live.observe(now, meta.Workers)
	rec := w.coordinate(ctx, now, meta)
	fp := w.fingerprint(now, meta, rec)
	if fp != w.lastChanges {
		w.lastChanges = fp
		w.fastUntil = now.Add(3 * w.cfg.PollInterval)
	}
	w.balance(ctx, now, fp, rec)

	leases := make([]string, 0, len(w.held))
	for id := range w.held {
		leases = append(leases, id)
	}
	sort.Strings(leases)
	owned := 0
	for _, r := range meta.Workers {
		if r.WorkerID != w.cfg.WorkerID && w.live.alive(r.WorkerID, now) {
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
