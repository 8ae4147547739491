package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// coordinatorState is the control loop's view of the coordinator role.
type coordinatorState struct {
	epoch          int64 // non-zero while this worker holds the role
	positionWarned bool
	lastSync       time.Time
	forceSync      bool
	synced         map[string]bool // shard ids whose leases exist, as of the last sync
	shardCount     int             // open shards at the last sync
	shardsKnown    bool
	leasesAdded    bool // leases were created since the record was last written
	counterError   string
}

// coordinate returns the coordinator record to obey. It claims the role when nobody
// holds it, or when the holder's heartbeat went stale on this worker's clock, and runs
// the coordinator's pass while this worker holds it.
func (w *Worker) coordinate(ctx context.Context, now time.Time, meta lease.Meta) *lease.CoordinatorRecord {
	rec := meta.Coordinator
	if w.coord.epoch != 0 {
		if rec != nil && rec.CoordinatorID == w.cfg.WorkerID && rec.Epoch == w.coord.epoch {
			if !w.tenure.holding() {
				return rec
			}
			return w.coordinatorPass(ctx, now, *rec)
		}
		w.loseCoordinator("the coordinator item changed hands")
	}
	if !w.tenure.holding() {
		return rec
	}
	switch {
	case rec == nil, rec.CoordinatorID == "":
	case rec.CoordinatorID == w.cfg.WorkerID:
		// An earlier run of this worker held the role; it is certainly not running now.
	case !w.live.expired(rec.CoordinatorID):
		return rec
	}
	cctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	claimed, err := w.meta.ClaimCoordinator(cctx, w.cfg.WorkerID, rec)
	cancel()
	if err != nil {
		if !errors.Is(err, lease.ErrConflict) {
			w.log.Warn("cannot claim the coordinator role", "err", err)
		}
		return rec
	}
	previous := ""
	if rec != nil {
		previous = rec.CoordinatorID
	}
	w.coord.epoch = claimed.Epoch
	w.coord.lastSync = time.Time{}
	w.log.Info("became coordinator", "epoch", claimed.Epoch, "previous", previous)
	w.hooks.coordinatorChanged(true)
	return w.coordinatorPass(ctx, now, claimed)
}

func (w *Worker) loseCoordinator(why string) {
	w.log.Warn("no longer coordinator", "reason", why, "epoch", w.coord.epoch)
	w.coord = coordinatorState{}
	w.hooks.coordinatorChanged(false)
}

// resignCoordinator hands the role back on shutdown so another worker claims it at once.
func (w *Worker) resignCoordinator(ctx context.Context) {
	if w.coord.epoch == 0 {
		return
	}
	err := w.meta.ResignCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: w.cfg.WorkerID, Epoch: w.coord.epoch})
	if err != nil {
		w.log.Warn("could not resign the coordinator role; another worker takes it after the lease duration", "err", err)
	} else {
		w.log.Info("resigned the coordinator role", "epoch", w.coord.epoch)
	}
	w.coord = coordinatorState{}
	w.hooks.coordinatorChanged(false)
}

// coordinatorPass syncs shards when due and recomputes the per-worker maximum; it writes
// the record only when a value changed.
func (w *Worker) coordinatorPass(ctx context.Context, now time.Time, rec lease.CoordinatorRecord) *lease.CoordinatorRecord {
	if rec.InitialPosition == "" {
		// Record where the application starts before the first lease exists, so that
		// every later sync, by any coordinator, creates leases at the same position.
		written, ok := w.recordInitialPosition(ctx, rec)
		if !ok {
			return &rec
		}
		rec = written
	}
	w.startPos = rec
	if rec.InitialPosition != w.configuredPosition() && !w.coord.positionWarned {
		w.coord.positionWarned = true
		w.log.Warn("the application's initial position was recorded by its first start; the configured one applies only to a new application",
			"recorded", rec.InitialPosition, "recorded_timestamp", rec.InitialTimestamp, "configured", w.cfg.InitialPosition)
	}
	if w.coord.lastSync.IsZero() || w.coord.forceSync || now.Sub(w.coord.lastSync) >= w.cfg.ShardSyncInterval {
		w.coord.lastSync, w.coord.forceSync = now, false
		w.syncShards(ctx, rec)
	}
	if !w.coord.shardsKnown {
		return &rec
	}
	live := w.live.liveCount()
	desired := live
	if w.cfg.WorkerCounter != nil {
		dctx, cancel := context.WithTimeout(ctx, w.callTimeout())
		n, err := w.cfg.WorkerCounter.DesiredWorkers(dctx)
		cancel()
		switch {
		case err != nil:
			if msg := err.Error(); msg != w.coord.counterError {
				w.coord.counterError = msg
				w.log.Warn("cannot read the desired worker count; using live workers", "err", err, "live_workers", live)
			}
		case n < 1:
			w.log.Warn("desired worker count below 1; using live workers", "desired", n, "live_workers", live)
		default:
			desired = n
			w.coord.counterError = ""
		}
	}
	desired = max(desired, 1)
	// While fewer workers are live than desired (a pod is down), the live ones cover for
	// the missing ones, up to the cap.
	effective := desired
	if live > 0 && live < desired {
		effective = live
	}
	shards := w.coord.shardCount
	limit := w.cfg.MaxLeasesCap
	next := rec
	if w.cfg.DisableDynamicMaxLeases {
		limit = w.cfg.StaticMaxLeases
		next.MaxLeasesPerWorker, next.TargetLeasesPerWorker = limit, limit
	} else {
		next.MaxLeasesPerWorker = lease.MaxLeasesPerWorker(shards, desired, limit)
		next.TargetLeasesPerWorker = lease.MaxLeasesPerWorker(shards, effective, limit)
	}
	next.ShardCount = shards
	next.WorkerCount = desired
	next.LiveWorkers = live
	next.Cap = w.cfg.MaxLeasesCap
	next.UnownedShards = lease.UnownedShards(shards, effective, limit)
	next.RecommendedWorkers = lease.WorkersNeeded(shards, limit)
	if w.coord.leasesAdded {
		next.LeaseGeneration++
	}
	if sameValues(next, rec) {
		return &rec
	}
	next.UpdatedAt = time.Now().UTC()
	written, ok := w.writeCoordinator(ctx, next, "cannot write the coordinator record")
	if !ok {
		return &rec
	}
	w.coord.leasesAdded = false
	w.log.Info("coordinator computed max leases per worker",
		"max_leases_per_worker", written.MaxLeasesPerWorker, "target_leases_per_worker", written.TargetLeasesPerWorker,
		"shard_count", shards, "worker_count", desired, "live_workers", live, "cap", written.Cap)
	if written.UnownedShards > 0 && written.UnownedShards != rec.UnownedShards {
		w.log.Warn("SHARDS LEFT UNOWNED: the cap on leases per worker is too low for this many shards",
			"unowned_shards", written.UnownedShards, "shard_count", shards, "workers", effective,
			"cap", limit, "workers_needed", written.RecommendedWorkers)
	}
	return &written
}

// writeCoordinator writes the coordinator record; on a lost condition this worker is no
// longer coordinator, on another error it logs what failed. It reports success.
func (w *Worker) writeCoordinator(ctx context.Context, next lease.CoordinatorRecord, what string) (lease.CoordinatorRecord, bool) {
	uctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	written, err := w.meta.UpdateCoordinator(uctx, next)
	cancel()
	switch {
	case errors.Is(err, lease.ErrConflict):
		w.loseCoordinator("another worker claimed the role")
	case err != nil:
		w.log.Warn(what, "err", err)
	}
	return written, err == nil
}

func sameValues(a, b lease.CoordinatorRecord) bool {
	a.UpdatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	a.Version, b.Version = 0, 0
	return a == b
}

// syncShards lists the stream's shards and creates the leases that are missing, parents
// before children, so that a child's lease never exists without its parents' leases.
func (w *Worker) syncShards(ctx context.Context, start lease.CoordinatorRecord) {
	lctx, cancel := context.WithTimeout(ctx, w.streamTimeout())
	shards, err := w.stream.ListShards(lctx)
	cancel()
	if err != nil {
		if errors.Is(err, stream.ErrStreamNotFound) {
			w.log.Error("stream not found; create it or fix STREAM_NAME", "stream", w.cfg.StreamName, "err", err)
		} else {
			w.log.Warn("cannot list shards", "err", err)
		}
		return
	}
	open := 0
	ids := make(map[string]bool, len(shards))
	for _, s := range shards {
		ids[s.ID] = true
		if !s.Closed {
			open++
		}
	}
	if w.coord.shardsKnown && sameSet(ids, w.coord.synced) {
		w.coord.shardCount = open
		return
	}
	lctx, cancel = context.WithTimeout(ctx, w.callTimeout())
	table, err := w.leases.ListLeases(lctx)
	cancel()
	if err != nil {
		w.log.Warn("cannot read the lease table", "err", err)
		return
	}
	w.reportCorrupt(table.Corrupt)
	have := make(map[string]bool, len(table.Leases)+len(table.Corrupt))
	for _, l := range table.Leases {
		have[l.ShardID] = true
	}
	for _, c := range table.Corrupt {
		have[c.Key] = true
	}
	created, failed := w.createLeases(ctx, shards, have, start)
	if created > 0 {
		w.coord.leasesAdded = true
		w.log.Info("created leases for new shards", "created", created, "open_shards", open, "total_shards", len(shards))
	}
	if !failed {
		w.coord.synced = ids
	}
	w.coord.shardCount = open
	w.coord.shardsKnown = true
}

// createLeases creates a lease for every listed shard that has none, open or closed,
// parents before children, each at the application's recorded initial position: the same
// rule on the first sync and on every later one, so a later or partly failed sync never
// reads what the first start skipped. A closed shard at AT_TIMESTAMP is read from that
// time to its end (records written after it are not lost), then ends like any shard.
func (w *Worker) createLeases(ctx context.Context, shards []stream.Shard, have map[string]bool, start lease.CoordinatorRecord) (created int, failed bool) {
	inStream := make(map[string]bool, len(shards))
	for _, s := range shards {
		inStream[s.ID] = true
	}
	var pending []stream.Shard
	for _, s := range shards {
		if !have[s.ID] {
			pending = append(pending, s)
		}
	}
	for progress := true; progress && len(pending) > 0 && ctx.Err() == nil; {
		progress = false
		rest := pending[:0]
		for _, s := range pending {
			var parents []string
			ready := true
			for _, p := range s.Parents() {
				switch {
				case have[p]:
					parents = append(parents, p)
				case inStream[p]:
					ready = false // create the parent first
				}
			}
			if !ready {
				rest = append(rest, s)
				continue
			}
			l := lease.Lease{ShardID: s.ID, ParentShardIDs: parents, Checkpoint: start.InitialPosition, StartTimestamp: start.InitialTimestamp}
			cctx, cancel := context.WithTimeout(ctx, w.callTimeout())
			err := w.leases.CreateLease(cctx, l)
			cancel()
			if err != nil && !errors.Is(err, lease.ErrExists) {
				w.log.Warn("cannot create lease", "shard", s.ID, "err", err)
				failed = true
				continue
			} else if err == nil {
				created++
			}
			have[s.ID] = true
			progress = true
		}
		pending = rest
	}
	return created, failed || len(pending) > 0
}

// configuredPosition is the position this worker's configuration asks for, as the
// coordinator records it: Latest becomes AtTimestamp at the application's first start.
func (w *Worker) configuredPosition() string {
	if w.cfg.InitialPosition == lease.TrimHorizon {
		return lease.TrimHorizon
	}
	return lease.AtTimestamp
}

// recordInitialPosition writes the configured initial position into the coordinator
// record. LATEST is recorded as AT_TIMESTAMP at this moment (the application's first
// start), which is what LATEST means for every shard: records that arrive from now on,
// in open shards, in closed ones (none) and in children created later (all of theirs).
func (w *Worker) recordInitialPosition(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, bool) {
	next := rec
	next.InitialPosition = w.configuredPosition()
	switch w.cfg.InitialPosition {
	case lease.Latest:
		// Kinesis timestamps have millisecond precision: record the effective value.
		next.InitialTimestamp = time.Now().UTC().Truncate(time.Millisecond)
	case lease.AtTimestamp:
		next.InitialTimestamp = w.cfg.InitialTimestamp.UTC()
	}
	written, ok := w.writeCoordinator(ctx, next, "cannot record the initial position in the coordinator record")
	if !ok {
		return rec, false
	}
	w.log.Info("recorded the application's initial position", "position", written.InitialPosition, "timestamp", written.InitialTimestamp)
	return written, true
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
