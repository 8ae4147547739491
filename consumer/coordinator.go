package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// coordinator is this worker's part in the coordinator role: the election (a conditional
// write of the coordinator item), and while it holds the role, the coordinator's pass:
// shard sync, lease creation, and the max leases per worker every worker obeys. It is used
// by the control loop's goroutine only.
type coordinator struct {
	cfg     *Config
	leases  LeaseStore
	meta    MetaStore
	stream  Stream
	tenure  *tenure
	members *membership
	corrupt *corruptLog
	log     *slog.Logger

	role  coordinatorRole
	clean *cleaner
}

// coordinatorRole is what the coordinator knows while it holds the role; it is reset
// when the role is lost.
type coordinatorRole struct {
	epoch          int64 // non-zero while this worker holds the role
	positionWarned bool
	lastSync       time.Time
	forceSync      bool
	listing        *shardListing   // the ListShards of the shard sync in flight
	synced         map[string]bool // shard ids whose leases exist, as of the last sync
	shardCount     int             // open shards at the last sync
	shardsKnown    bool
	leasesAdded    bool   // leases were created since the record was last written
	countError     string // the last error of the desired worker count, logged once
	// knownVersion is the coordinator item's version as this worker last knew it for
	// certain (-1: a write's outcome is unknown), since knownAt: the answer to its own
	// write, or the end of a read that showed it. Only a read of the metadata table that
	// started after knownAt may be published as version knownVersion+1 (see pass).
	knownVersion int64
	knownAt      time.Time
}

func newCoordinator(cfg *Config, leases LeaseStore, meta MetaStore, s Stream, t *tenure, members *membership, corrupt *corruptLog, log *slog.Logger) *coordinator {
	return &coordinator{cfg: cfg, leases: leases, meta: meta, stream: s, tenure: t, members: members, corrupt: corrupt, log: log,
		clean: newCleaner(cfg, leases, meta, s, members, corrupt, log)}
}

// holding reports whether this worker holds the coordinator role.
func (c *coordinator) holding() bool { return c.role.epoch != 0 }

// cleanup runs the cleaner while this worker holds the role, after the rest of the pass
// (takes, releases, reads back), within a deadline of its own: a slow or hung deletion
// never holds up the control loop for longer than one DynamoDB call's deadline per
// CleanupInterval. workers are the records of this pass's metadata read.
func (c *coordinator) cleanup(ctx context.Context, now time.Time, workers []lease.WorkerRecord) {
	if !c.holding() || !c.role.shardsKnown || !c.tenure.holding() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.callTimeout())
	defer cancel()
	c.clean.run(ctx, now, workers)
}

// requestSync makes the next pass sync shards (a shard ended: its children may be new).
func (c *coordinator) requestSync() { c.role.forceSync = true }

// coordinate returns the coordinator record to obey. It claims the role when nobody
// holds it, or when the holder's heartbeat went stale on this worker's clock, and runs
// the coordinator's pass while this worker holds it. meta is this pass's read of the
// metadata table (the whole table while this worker holds the role), which started at
// readStart.
func (c *coordinator) coordinate(ctx context.Context, now time.Time, meta lease.Meta, readStart time.Time) *lease.CoordinatorRecord {
	rec := meta.Coordinator
	if c.role.epoch != 0 {
		if rec != nil && rec.CoordinatorID == c.cfg.WorkerID && rec.Epoch == c.role.epoch {
			if !c.tenure.holding() {
				return rec
			}
			return c.pass(ctx, now, *rec, readStart)
		}
		c.lose("the coordinator item changed hands")
	}
	if !c.tenure.holding() {
		return rec
	}
	switch {
	case rec == nil, rec.CoordinatorID == "":
	case rec.CoordinatorID == c.cfg.WorkerID:
		// An earlier run of this worker held the role; it is certainly not running now.
	case !c.members.expired(rec.CoordinatorID):
		return rec
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.callTimeout())
	claimed, err := c.meta.ClaimCoordinator(cctx, c.cfg.WorkerID, rec)
	cancel()
	if err != nil {
		if !errors.Is(err, lease.ErrConflict) {
			c.log.Warn("cannot claim the coordinator role", "err", err)
		}
		return rec
	}
	previous := ""
	if rec != nil {
		previous = rec.CoordinatorID
	}
	c.role.epoch = claimed.Epoch
	c.role.lastSync = time.Time{}
	if rec != nil {
		// Its dead workers stay dead while their records show no renewal (see inherit).
		c.members.inherit(rec.DeadWorkers)
	}
	c.role.knownVersion, c.role.knownAt = claimed.Version, c.cfg.Clock.Now()
	c.log.Info("became coordinator", "epoch", claimed.Epoch, "previous", previous)
	c.cfg.Hooks.coordinatorChanged(true)
	// This pass's read started before the claim: the first write waits for the next one.
	return &claimed
}

func (c *coordinator) lose(why string) {
	c.log.Warn("no longer coordinator", "reason", why, "epoch", c.role.epoch)
	c.endRole()
}

// endRole forgets everything learnt while holding the role: a later claim starts afresh,
// its cleanup delays included.
func (c *coordinator) endRole() {
	if c.role.listing != nil {
		c.role.listing.cancel()
	}
	c.role = coordinatorRole{}
	c.clean.reset()
	c.cfg.Hooks.coordinatorChanged(false)
}

// resign hands the role back on shutdown so another worker claims it at once.
func (c *coordinator) resign(ctx context.Context) {
	if c.role.epoch == 0 {
		return
	}
	err := c.meta.ResignCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: c.cfg.WorkerID, Epoch: c.role.epoch})
	if err != nil {
		c.log.Warn("could not resign the coordinator role; another worker takes it after the lease duration", "err", err)
	} else {
		c.log.Info("resigned the coordinator role", "epoch", c.role.epoch)
	}
	c.endRole()
}

// pass syncs shards when due, recomputes the per-worker maximum and publishes the
// membership view: it writes the record on every pass (workers take the version's
// progress as the sign that the coordinator works). rec is the record as this pass's read
// of the metadata table, which started at readStart, showed it.
//
// Every write is conditional on the version it follows, and publishes only what a read
// that started after that version was written showed (knownAt): so any version v+2
// reflects the workers as they were after version v+1 was written. A worker that read
// version v after it read the lease table relies on exactly that (see
// balancer.takeFromDead).
func (c *coordinator) pass(ctx context.Context, now time.Time, rec lease.CoordinatorRecord, readStart time.Time) *lease.CoordinatorRecord {
	if rec.Version != c.role.knownVersion {
		// A write whose answer was lost applied after all (or did not): this read showed
		// the version, but may have read the workers before it was written.
		c.role.knownVersion, c.role.knownAt = rec.Version, c.cfg.Clock.Now()
		return &rec
	}
	if readStart.Before(c.role.knownAt) {
		return &rec
	}
	if rec.InitialPosition == "" {
		// Record where the application starts before the first lease exists, so that
		// every later sync, by any coordinator, creates leases at the same position.
		written, ok := c.recordInitialPosition(ctx, rec)
		if !ok {
			return &rec
		}
		return &written // The next pass, on a read after this write, goes on.
	}
	if rec.InitialPosition != c.configuredPosition() && !c.role.positionWarned {
		c.role.positionWarned = true
		c.log.Warn("the application's initial position was recorded by its first start; the configured one applies only to a new application",
			"recorded", rec.InitialPosition, "recorded_timestamp", rec.InitialTimestamp, "configured", c.cfg.InitialPosition)
	}
	if c.role.listing == nil && (c.role.lastSync.IsZero() || c.role.forceSync || now.Sub(c.role.lastSync) >= c.cfg.ShardSyncInterval) {
		c.role.lastSync, c.role.forceSync = now, false
		c.role.listing = startListing(ctx, c.stream, c.cfg.streamTimeout())
	}
	if l := c.role.listing; l != nil {
		select {
		case <-l.done:
			c.role.listing = nil
			c.syncShards(ctx, rec, l.shards, l.err)
		default: // Still listing: this pass publishes what the last sync knew.
		}
	}
	next := rec
	var desired, live, effective, limit, shards int
	if c.role.shardsKnown {
		desired, live, effective, limit, shards = c.computeValues(ctx, &next)
	}
	// Until the first sync knows the shards, the view is published with the values as
	// they were (a new coordinator's first listing may take a while).
	next.DeadWorkers = c.members.dead(c.cfg.WorkerID)
	next.OwnedLeases = c.members.leasesHeld()
	next.RecheckWorkers = c.clean.rechecks()
	next.WaitingParents = c.clean.waitingParents()
	if own, ok := c.members.record(c.cfg.WorkerID); ok {
		next.CoordinatorIncarnation, next.CoordinatorHeartbeat = own.Incarnation, own.Heartbeat
	}
	written, ok := c.write(ctx, next, "cannot write the coordinator record")
	if !ok {
		return &rec
	}
	c.role.leasesAdded = false
	if sameTarget(written, rec) {
		return &written
	}
	c.log.Info("coordinator computed max leases per worker",
		"max_leases_per_worker", written.MaxLeasesPerWorker, "target_leases_per_worker", written.TargetLeasesPerWorker,
		"shard_count", shards, "worker_count", desired, "live_workers", live, "cap", written.Cap)
	if written.UnownedShards > 0 && written.UnownedShards != rec.UnownedShards {
		c.log.Warn("SHARDS LEFT UNOWNED: the cap on leases per worker is too low for this many shards",
			"unowned_shards", written.UnownedShards, "shard_count", shards, "workers", effective,
			"cap", limit, "workers_needed", written.RecommendedWorkers)
	}
	return &written
}

// write writes the coordinator record, conditional on the version it read; on a lost
// condition this worker is no longer coordinator (another worker claimed the role, or an
// earlier write whose answer was lost applied: the next pass claims it again, with a new
// epoch), on another error it logs what failed. It reports success.
func (c *coordinator) write(ctx context.Context, next lease.CoordinatorRecord, what string) (lease.CoordinatorRecord, bool) {
	uctx, cancel := context.WithTimeout(ctx, c.cfg.callTimeout())
	written, err := c.meta.UpdateCoordinator(uctx, next)
	cancel()
	switch {
	case err == nil:
		c.role.knownVersion, c.role.knownAt = written.Version, c.cfg.Clock.Now()
	case errors.Is(err, lease.ErrConflict):
		c.lose("the coordinator item changed under this worker's write")
	default:
		c.role.knownVersion = -1 // It may still apply: learn the version from a later read.
		c.log.Warn(what, "err", err)
	}
	return written, err == nil
}

// sameTarget reports whether a and b hold the same values for the workers' targets.
func sameTarget(a, b lease.CoordinatorRecord) bool {
	return a.MaxLeasesPerWorker == b.MaxLeasesPerWorker && a.TargetLeasesPerWorker == b.TargetLeasesPerWorker &&
		a.ShardCount == b.ShardCount && a.WorkerCount == b.WorkerCount && a.LiveWorkers == b.LiveWorkers &&
		a.Cap == b.Cap && a.UnownedShards == b.UnownedShards && a.RecommendedWorkers == b.RecommendedWorkers
}

// computeValues sets next's max leases per worker, target and counts from the last shard
// sync and the live workers.
func (c *coordinator) computeValues(ctx context.Context, next *lease.CoordinatorRecord) (desired, live, effective, limit, shards int) {
	live = c.members.liveCount()
	desired = live
	if c.cfg.WorkerCounter != nil {
		dctx, cancel := context.WithTimeout(ctx, c.cfg.callTimeout())
		n, err := c.cfg.WorkerCounter.DesiredWorkers(dctx)
		cancel()
		switch {
		case err != nil:
			if msg := err.Error(); msg != c.role.countError {
				c.role.countError = msg
				c.log.Warn("cannot read the desired worker count; using live workers", "err", err, "live_workers", live)
			}
		case n < 1:
			c.log.Warn("desired worker count below 1; using live workers", "desired", n, "live_workers", live)
		default:
			desired = n
			c.role.countError = ""
		}
	}
	desired = max(desired, 1)
	// While fewer workers are live than desired (a pod is down), the live ones cover for
	// the missing ones, up to the cap.
	effective = desired
	if live > 0 && live < desired {
		effective = live
	}
	shards = c.role.shardCount
	limit = c.cfg.MaxLeasesCap
	if c.cfg.DisableDynamicMaxLeases {
		limit = c.cfg.StaticMaxLeases
		next.MaxLeasesPerWorker, next.TargetLeasesPerWorker = limit, limit
	} else {
		next.MaxLeasesPerWorker = lease.MaxLeasesPerWorker(shards, desired, limit)
		next.TargetLeasesPerWorker = lease.MaxLeasesPerWorker(shards, effective, limit)
	}
	next.ShardCount = shards
	next.WorkerCount = desired
	next.LiveWorkers = live
	next.Cap = c.cfg.MaxLeasesCap
	next.UnownedShards = lease.UnownedShards(shards, effective, limit)
	next.RecommendedWorkers = lease.WorkersNeeded(shards, limit)
	if c.role.leasesAdded {
		next.LeaseGeneration++
	}
	return desired, live, effective, limit, shards
}

// shardListing is a ListShards call in flight (the shard sync's or the cleaner's). It
// runs apart from the control loop: a slow or throttled Kinesis (a call may take
// streamTimeout) never holds up the coordinator's pass, and with it the membership view,
// whose stall would make every worker read the whole metadata table.
type shardListing struct {
	done   chan struct{}
	cancel context.CancelFunc
	shards []stream.Shard
	err    error
}

// startListing starts listing the stream's shards, with a deadline of its own.
func startListing(ctx context.Context, s Stream, timeout time.Duration) *shardListing {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	l := &shardListing{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(l.done)
		defer cancel()
		l.shards, l.err = s.ListShards(lctx)
	}()
	return l
}

// syncShards takes a listing of the stream's shards (or its error) and creates the leases
// that are missing, parents before children, so that a child's lease never exists
// without its parents' leases.
func (c *coordinator) syncShards(ctx context.Context, start lease.CoordinatorRecord, shards []stream.Shard, err error) {
	if err != nil {
		if errors.Is(err, stream.ErrStreamNotFound) {
			c.log.Error("stream not found; create it or fix STREAM_NAME", "stream", c.cfg.StreamName, "err", err)
		} else {
			c.log.Warn("cannot list shards", "err", err)
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
	if c.role.shardsKnown && sameSet(ids, c.role.synced) {
		c.role.shardCount = open
		return
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.callTimeout())
	table, err := c.leases.ListLeases(lctx)
	cancel()
	if err != nil {
		c.log.Warn("cannot read the lease table", "err", err)
		return
	}
	c.corrupt.report(table.Corrupt)
	have := make(map[string]bool, len(table.Leases)+len(table.Corrupt))
	for _, l := range table.Leases {
		have[l.ShardID] = true
	}
	for _, it := range table.Corrupt {
		have[it.Key] = true
	}
	created, failed := c.createLeases(ctx, shards, have, start)
	if created > 0 {
		c.role.leasesAdded = true
		c.log.Info("created leases for new shards", "created", created, "open_shards", open, "total_shards", len(shards))
	}
	if !failed {
		c.role.synced = ids
	}
	c.role.shardCount = open
	c.role.shardsKnown = true
}

// createLeases creates the leases the shards that need one lack (see unleased), parents
// before children, each at the application's recorded initial position: the same rule on
// the first sync and on every later one, so a later or partly failed sync never reads what
// the first start skipped. A closed shard at AT_TIMESTAMP is read from that time to its
// end (records written after it are not lost), then ends like any shard.
func (c *coordinator) createLeases(ctx context.Context, shards []stream.Shard, have map[string]bool, start lease.CoordinatorRecord) (created int, failed bool) {
	pending := unleased(shards, have)
	needed := make(map[string]bool, len(pending))
	for _, s := range pending {
		needed[s.ID] = true
	}
	for progress := true; progress && len(pending) > 0 && ctx.Err() == nil; {
		progress = false
		var rest []stream.Shard
		var ready []lease.Lease
		for _, s := range pending {
			var parents []string
			isReady := true
			for _, p := range s.Parents() {
				switch {
				case have[p]:
					parents = append(parents, p)
				case needed[p]:
					isReady = false // create the parent first
				}
			}
			if !isReady {
				rest = append(rest, s)
				continue
			}
			ready = append(ready, lease.Lease{ShardID: s.ID, ParentShardIDs: parents,
				Checkpoint: start.InitialPosition, StartTimestamp: start.InitialTimestamp,
				StartingHashKey: s.StartingHashKey, EndingHashKey: s.EndingHashKey})
		}
		for i, err := range c.createAll(ctx, ready) {
			id := ready[i].ShardID
			if err != nil && !errors.Is(err, lease.ErrExists) {
				c.log.Warn("cannot create lease", "shard", id, "err", err)
				failed = true
				continue
			} else if err == nil {
				created++
			}
			have[id] = true
			progress = true
		}
		pending = rest
	}
	return created, failed || len(pending) > 0
}

// createConcurrency bounds the lease creations in flight: a reshard to thousands of shards
// creates its leases in seconds without a burst the table's capacity would throttle.
const createConcurrency = 16

// createAll creates ls, at most createConcurrency at once, each with its own deadline,
// and returns each creation's error.
func (c *coordinator) createAll(ctx context.Context, ls []lease.Lease) []error {
	errs := make([]error, len(ls))
	sem := make(chan struct{}, createConcurrency)
	var wg sync.WaitGroup
	for i, l := range ls {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, c.cfg.callTimeout())
			defer cancel()
			errs[i] = c.leases.CreateLease(cctx, l)
		}()
	}
	wg.Wait()
	return errs
}

// unleased returns the listed shards that need a lease and have none (in have): every
// open shard, and every ancestor of such an open shard up to the first one with a lease.
// Any other closed shard without a lease was processed and its lease deleted (see
// cleaner: a lease is deleted only after all its children started, so some descendant of
// it has a lease or finished): it is not created again. On the first sync no shard has a
// lease, so every ancestor of the open shards gets one.
func unleased(shards []stream.Shard, have map[string]bool) []stream.Shard {
	byID := make(map[string]stream.Shard, len(shards))
	for _, s := range shards {
		byID[s.ID] = s
	}
	need := make(map[string]bool)
	var walk func(id string)
	walk = func(id string) {
		s, listed := byID[id]
		if !listed || have[id] || need[id] {
			return
		}
		need[id] = true
		for _, p := range s.Parents() {
			walk(p)
		}
	}
	for _, s := range shards {
		if !s.Closed {
			walk(s.ID)
		}
	}
	var out []stream.Shard
	for _, s := range shards {
		if need[s.ID] {
			out = append(out, s)
		}
	}
	return out
}

// configuredPosition is the position this worker's configuration asks for, as the
// coordinator records it: Latest becomes AtTimestamp at the application's first start.
func (c *coordinator) configuredPosition() string {
	if c.cfg.InitialPosition == lease.TrimHorizon {
		return lease.TrimHorizon
	}
	return lease.AtTimestamp
}

// recordInitialPosition writes the configured initial position into the coordinator
// record. LATEST is recorded as AT_TIMESTAMP at this moment (the application's first
// start), which is what LATEST means for every shard: records that arrive from now on,
// in open shards, in closed ones (none) and in children created later (all of theirs).
func (c *coordinator) recordInitialPosition(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, bool) {
	next := rec
	next.InitialPosition = c.configuredPosition()
	switch c.cfg.InitialPosition {
	case lease.Latest:
		// Kinesis timestamps have millisecond precision: record the effective value.
		next.InitialTimestamp = time.Now().UTC().Truncate(time.Millisecond)
	case lease.AtTimestamp:
		next.InitialTimestamp = c.cfg.InitialTimestamp.UTC()
	}
	written, ok := c.write(ctx, next, "cannot record the initial position in the coordinator record")
	if !ok {
		return rec, false
	}
	c.log.Info("recorded the application's initial position", "position", written.InitialPosition, "timestamp", written.InitialTimestamp)
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
