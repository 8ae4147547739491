package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// balancer moves this worker towards its target number of leases: it takes free and
// expired leases below the target and releases the ones it prefers least above it, and
// it makes sure a lease the table says is this worker's is never left unprocessed (a take
// that reported an error, a lease left after a lapse). It is used by the control loop's
// goroutine only.
type balancer struct {
	cfg     *Config
	leases  LeaseStore
	clock   clock.Clock
	log     *slog.Logger
	tenure  *tenure
	members *membership
	corrupt *corruptLog
	running *consumerSet

	target      int
	targetKnown bool
	// settleUntil delays the first take after registration (StartupSettle).
	settleUntil     time.Time
	lastScan        time.Time
	lastFingerprint string
	forceScan       bool
	cooldown        map[string]time.Time
	// unsure holds shards whose take reported an error: the write may have applied
	// anyway. Each pass reads them back until it knows.
	unsure map[string]bool
	// startPos is the application's initial position as recorded in the coordinator item.
	startPos lease.CoordinatorRecord
	// fromDead holds leases of workers the view listed dead when the lease table was read;
	// they are taken once the view reaches a version computed after that read.
	fromDead *deadTakes
	// lastRecheck is when this worker last confirmed its leases at the coordinator's
	// request.
	lastRecheck time.Time
}

// deadTakes are leases read from the lease table whose owners the view listed dead. They
// may be taken from a view of version minVersion or later that still lists their owner
// dead, until the deadline (then the table is read again). idx is the read they come
// from.
type deadTakes struct {
	minVersion int64
	leases     []lease.Lease
	until      time.Time
	idx        lease.Index
}

func newBalancer(cfg *Config, leases LeaseStore, t *tenure, members *membership, corrupt *corruptLog, running *consumerSet, log *slog.Logger) *balancer {
	return &balancer{cfg: cfg, leases: leases, clock: cfg.Clock, log: log, tenure: t, members: members,
		corrupt: corrupt, running: running, cooldown: make(map[string]time.Time), unsure: make(map[string]bool)}
}

// balance moves this worker towards its target: it releases leases above the target,
// and below it reads the lease table (only when something changed, or rarely as a
// safety net) and takes free or expired leases, as many as it needs in one pass.
// fp is the fingerprint of the metadata read this pass.
func (b *balancer) balance(ctx context.Context, now time.Time, fp string, rec *lease.CoordinatorRecord) {
	if rec != nil && rec.InitialPosition != "" {
		b.startPos = *rec
	}
	target, known := b.targetFrom(rec)
	if !known {
		return // No coordinator has published a value yet: neither take nor release.
	}
	if !b.targetKnown || target != b.target {
		old := b.target
		b.target, b.targetKnown = target, true
		attrs := []any{"old", old, "new", target}
		if rec != nil {
			attrs = append(attrs, "shard_count", rec.ShardCount, "worker_count", rec.WorkerCount,
				"live_workers", rec.LiveWorkers, "cap", rec.Cap)
			if rec.UnownedShards > 0 {
				b.log.Warn("max leases per worker is capped: shards are left unowned",
					"max_leases", target, "unowned_shards", rec.UnownedShards, "workers_needed", rec.RecommendedWorkers)
			}
		}
		b.log.Info(fmt.Sprintf("max leases per worker changed %d -> %d", old, target), attrs...)
		b.cfg.Hooks.targetChanged(old, target)
	}
	active := b.running.active()
	// At the target while closed shards wait, nobody below a target is there to take them
	// (at the cap, nobody ever is): trade open shards for them.
	trading := len(active) == target && rec != nil && rec.WaitingParents > 0
	switch {
	case len(active) > target:
		b.releaseExcess(active, len(active)-target)
		return
	case len(active) == target && !trading, now.Before(b.settleUntil), !b.tenure.holding():
		return
	}
	if b.fromDead != nil {
		// No new scan while leases wait for the view: it would only make them wait longer.
		b.takeFromDead(ctx, now, rec, target-len(active), trading, active)
		return
	}
	if !b.forceScan && fp == b.lastFingerprint && now.Sub(b.lastScan) < b.cfg.LeaseScanInterval {
		return
	}
	b.lastFingerprint, b.lastScan, b.forceScan = fp, now, false
	if trading {
		b.tradeForParents(ctx, now, rec, active)
	} else {
		b.takeLeases(ctx, now, target-len(active), rec)
	}
}

// recheck confirms every lease this worker runs when the view asks it to (see
// lease.CoordinatorRecord.RecheckWorkers), at most once per CleanupInterval, and stops
// the consumers of leases that are no longer its own at the epoch they run.
func (b *balancer) recheck(ctx context.Context, now time.Time, rec *lease.CoordinatorRecord) {
	if rec == nil || !slices.Contains(rec.RecheckWorkers, b.cfg.WorkerID) ||
		!b.lastRecheck.IsZero() && now.Sub(b.lastRecheck) < b.cfg.CleanupInterval {
		return
	}
	b.lastRecheck = now
	lost := 0
	for _, c := range b.running.all() {
		if ctx.Err() != nil {
			return
		}
		if c.readOwnership(ctx) == notOwned {
			c.requestStop(stopLost)
			lost++
		}
	}
	b.log.Info("checked this worker's leases at the coordinator's request", "leases", b.running.len(), "lost", lost)
}

// afterExit follows up on a consumer that ended (the consumer set has forgotten it).
func (b *balancer) afterExit(ctx context.Context, e consumerExit) {
	switch e.reason {
	case exitLost:
		// The lease may still be ours in the table (a fenced lapse): read it back each pass
		// until it is run again, released, or someone else's, so that a lease this worker
		// owns is never left unprocessed (at the target, nobody else may take it).
		b.unsure[e.lease.ShardID] = true
		b.forceScan = true
		b.cfg.Hooks.leaseLost(e.lease.ShardID)
		b.log.Warn("lease lost", "shard", e.lease.ShardID, "epoch", e.lease.Epoch)
	case exitFailed:
		// Let another worker (or this one, later) try: retaking at once would fail again.
		b.cooldown[e.lease.ShardID] = b.clock.Now().Add(b.cfg.LeaseScanInterval)
		b.forceScan = true
		if e.kept {
			// The release did not succeed (a lapse cancelled it): read the lease back until
			// it is released or someone else's, as after a lost lease.
			b.unsure[e.lease.ShardID] = true
		}
	case exitEnded:
		b.forceScan = true
		if ctx.Err() == nil {
			b.takeChildren(ctx, e)
		}
	}
}

// targetFrom returns the number of leases this worker should hold.
func (b *balancer) targetFrom(rec *lease.CoordinatorRecord) (int, bool) {
	switch {
	case b.cfg.DisableDynamicMaxLeases:
		return b.cfg.StaticMaxLeases, true
	case rec == nil || rec.Cap == 0:
		return 0, false
	case rec.TargetLeasesPerWorker > 0:
		return min(rec.TargetLeasesPerWorker, b.cfg.MaxLeasesCap), true
	}
	// Never obey nonsense written by hand: a negative max means none.
	return max(0, min(rec.MaxLeasesPerWorker, b.cfg.MaxLeasesCap)), true
}

// releaseExcess gives up n leases, the ones this worker prefers least, so that workers
// agree on which shards move. Each consumer finishes its batch, lets the processor
// checkpoint and then releases.
func (b *balancer) releaseExcess(active []*shardConsumer, n int) {
	b.leastPreferredFirst(active)
	ids := make([]string, 0, n)
	for _, c := range active[:n] {
		ids = append(ids, b.release(c))
	}
	b.log.Info("releasing leases above max leases per worker", "count", n, "target", b.target, "shards", ids)
}

// leastPreferredFirst sorts consumers in the order this worker gives their leases up.
func (b *balancer) leastPreferredFirst(cs []*shardConsumer) {
	sort.Slice(cs, func(i, j int) bool {
		return b.preference(cs[i].lease.ShardID) > b.preference(cs[j].lease.ShardID)
	})
}

// release stops a consumer for a planned move: it finishes its batch, lets the processor
// checkpoint and releases the lease. It returns the shard.
func (b *balancer) release(c *shardConsumer) string {
	c.releasing = true
	c.requestStop(stopPlanned)
	return c.lease.ShardID
}

// tradeForParents takes up to WaitingParents leases of closed shards whose children
// wait for them (see lease.CoordinatorRecord.WaitingParents) and gives up a lease of an
// open shard for each one taken, so that this worker stays at its target. An open shard
// waits at worst for a worker to come free; a closed one left unread would keep its
// children unread for good. Free leases are taken at once, those of dead workers once the
// view allows (see takeFromDead).
func (b *balancer) tradeForParents(ctx context.Context, now time.Time, rec *lease.CoordinatorRecord, active []*shardConsumer) {
	table, ok := b.readTable(ctx)
	if !ok {
		return
	}
	idx := table.Index()
	dead := rec.DeadWorkerIDs()
	var free, ofDead []lease.Lease
	for _, l := range table.Leases {
		switch {
		case !idx.WaitingParent(l):
		case b.running.running(l.ShardID) || now.Before(b.cooldown[l.ShardID]):
		case l.Owner == "":
			free = append(free, l)
		case dead[l.Owner]:
			ofDead = append(ofDead, l)
		}
	}
	give := b.tradeable(active, idx)
	b.order(free, idx)
	var taken, given []string
	for _, l := range free {
		if len(taken) == rec.WaitingParents || len(taken) == len(give) || ctx.Err() != nil {
			break
		}
		if b.tryTake(ctx, l) {
			taken = append(taken, l.ShardID)
			given = append(given, b.release(give[len(given)]))
		}
	}
	if len(taken) > 0 {
		b.log.Info("traded open shards for closed shards their children wait for", "taken", taken, "released", given)
	}
	if len(taken) < rec.WaitingParents && len(taken) < len(give) && len(ofDead) > 0 {
		b.order(ofDead, idx)
		b.waitForView(ctx, now, ofDead, idx)
	}
}

// tradeable returns the consumers of open shards (by idx: no lease waits for theirs),
// in the order this worker gives them up.
func (b *balancer) tradeable(active []*shardConsumer, idx lease.Index) []*shardConsumer {
	var open []*shardConsumer
	for _, c := range active {
		if !idx.IsOpenParent(c.lease.ShardID) {
			open = append(open, c)
		}
	}
	b.leastPreferredFirst(open)
	return open
}

// readTable reads the lease table and reports its corrupt items. A failed read is
// tried again next pass.
func (b *balancer) readTable(ctx context.Context) (lease.Table, bool) {
	lctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout())
	table, err := b.leases.ListLeases(lctx)
	cancel()
	if err != nil {
		b.log.Warn("cannot read the lease table", "err", err)
		b.forceScan = true
		return lease.Table{}, false
	}
	b.corrupt.report(table.Corrupt)
	return table, true
}

// preference ranks shards for this worker; different workers rank differently, so
// workers that take at the same time mostly try different leases.
func (b *balancer) preference(shardID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(b.cfg.WorkerID))
	h.Write([]byte{0})
	h.Write([]byte(shardID))
	return h.Sum64()
}

// fingerprint summarises what in the membership view may make leases takeable: the
// coordinator, its values and lease generation, the dead workers and the leases the live
// ones hold. The version is left out: it changes on every coordinator pass.
func (b *balancer) fingerprint(rec *lease.CoordinatorRecord) string {
	if rec == nil {
		return ""
	}
	return fmt.Sprintf("%s/%d/%d|%d/%d/%d|%d|%v|%d", rec.CoordinatorID, rec.Epoch, rec.LeaseGeneration,
		rec.MaxLeasesPerWorker, rec.TargetLeasesPerWorker, rec.ShardCount, rec.OwnedLeases, rec.DeadWorkers,
		rec.WaitingParents)
}

// takeLeases reads the lease table and takes up to want leases that are free or left by
// an earlier run of this worker, whose parents have all finished; leases of workers the
// view lists dead wait for a later view (see takeFromDead). Parents of other leases come
// first: at the cap, a child must never wait on a parent that nobody may take.
func (b *balancer) takeLeases(ctx context.Context, now time.Time, want int, rec *lease.CoordinatorRecord) {
	table, ok := b.readTable(ctx)
	if !ok {
		return
	}
	dead := map[string]bool{}
	if rec != nil {
		dead = rec.DeadWorkerIDs()
	}
	idx := table.Index()
	var candidates, ofDead []lease.Lease
	for _, l := range table.Leases {
		switch {
		case l.Finished():
		case b.running.running(l.ShardID):
		case now.Before(b.cooldown[l.ShardID]):
		case !idx.ParentsFinished(l):
		case l.Owner == "" || l.Owner == b.cfg.WorkerID:
			candidates = append(candidates, l)
		case dead[l.Owner]:
			ofDead = append(ofDead, l)
		}
	}
	b.order(candidates, idx)
	b.order(ofDead, idx)
	taken, conflicts, streak := 0, 0, 0
	for _, l := range candidates {
		if taken == want || ctx.Err() != nil || streak == staleAfterConflicts && l.Owner != b.cfg.WorkerID {
			if l.Owner == b.cfg.WorkerID {
				b.unsure[l.ShardID] = true // Ours but not wanted now: resolve releases it.
			}
			continue
		}
		if b.tryTake(ctx, l) {
			taken, streak = taken+1, 0
		} else {
			conflicts, streak = conflicts+1, streak+1
		}
	}
	if taken < want && conflicts > 0 {
		b.forceScan = true // Others raced us; look again next pass.
	}
	if taken < want && len(ofDead) > 0 {
		b.waitForView(ctx, now, ofDead, idx)
	}
	if taken > 0 || conflicts > 0 || len(ofDead) > 0 {
		b.log.Debug("lease scan", "taken", taken, "conflicts", conflicts, "candidates", len(candidates),
			"of_dead_workers", len(ofDead), "wanted", want)
	}
}

// staleAfterConflicts is how many takes in a row may fail before a worker stops trusting
// its read of the lease table and reads it again next pass: when many workers take at
// once (a cold start of hundreds), a read soon shows mostly leases taken since, and
// walking it would fail once per such lease.
const staleAfterConflicts = 3

// order sorts leases in the order this worker takes them: leases of an earlier run of
// this worker first (nobody else is reading them), then parents of other leases, then by
// this worker's preference.
func (b *balancer) order(ls []lease.Lease, idx lease.Index) {
	sort.Slice(ls, func(i, j int) bool {
		ci, cj := ls[i], ls[j]
		if mi, mj := ci.Owner == b.cfg.WorkerID, cj.Owner == b.cfg.WorkerID; mi != mj {
			return mi
		}
		if pi, pj := idx.IsOpenParent(ci.ShardID), idx.IsOpenParent(cj.ShardID); pi != pj {
			return pi
		}
		return b.preference(ci.ShardID) < b.preference(cj.ShardID)
	})
}

// waitForView keeps leases of workers the view lists dead for takeFromDead. The view
// that listed these owners dead may be older than the lease table read (idx): an owner
// may have come back and taken the lease since. They wait for a view computed after the
// read: two versions after one read after it.
func (b *balancer) waitForView(ctx context.Context, now time.Time, ofDead []lease.Lease, idx lease.Index) {
	if ctx.Err() != nil {
		return
	}
	v, err := b.members.readVersion(ctx)
	if err != nil {
		b.forceScan = true
		return
	}
	b.fromDead = &deadTakes{minVersion: v + 2, leases: ofDead, until: now.Add(b.cfg.LeaseScanInterval), idx: idx}
}

// takeFromDead takes up to want of the leases that waited for the view, once the view
// (rec) reached their version, from owners it still lists dead. Trading (a worker at its
// target, see tradeForParents), it takes instead up to rec.WaitingParents leases of
// closed shards whose children wait, and gives up one of its open shards for each one
// taken: none when it holds no open shard.
//
// Why two versions: this worker read version v, strongly consistent, after it read the
// lease table at t. Version v+1 was therefore written after t, and the coordinator
// computes version v+2 from a read of the metadata table that started after v+1 was
// written (see coordinator.pass), so after t. An owner that came back and took a lease
// before t renewed its heartbeat before it, so that read saw it alive: a version from v+2
// on lists an owner dead only if it was dead after the lease table was read, and the
// take, conditional on the owner and epoch read then, cannot take a lease it holds now.
func (b *balancer) takeFromDead(ctx context.Context, now time.Time, rec *lease.CoordinatorRecord, want int, trading bool, active []*shardConsumer) {
	d := b.fromDead
	if now.After(d.until) {
		b.fromDead, b.forceScan = nil, true
		return
	}
	if rec == nil || rec.Version < d.minVersion {
		return
	}
	b.fromDead = nil
	dead := rec.DeadWorkerIDs()
	taken, conflicts := 0, 0
	var give []*shardConsumer
	if trading {
		give = b.tradeable(active, d.idx)
		want = min(rec.WaitingParents, len(give))
	}
	for _, l := range d.leases {
		if taken == want || ctx.Err() != nil {
			break
		}
		if !dead[l.Owner] || b.running.running(l.ShardID) || trading && !d.idx.IsOpenParent(l.ShardID) {
			continue
		}
		if b.tryTake(ctx, l) {
			b.log.Info("took the lease of a dead worker", "shard", l.ShardID, "previous_owner", l.Owner)
			if trading {
				b.log.Info("traded an open shard for a closed shard its children wait for", "taken", l.ShardID, "released", b.release(give[taken]))
			}
			taken++
		} else {
			conflicts++
		}
	}
	if taken < want {
		b.forceScan = true
	}
	if taken > 0 || conflicts > 0 {
		b.log.Debug("took leases of dead workers", "taken", taken, "conflicts", conflicts, "waited", len(d.leases), "wanted", want)
	}
}

// tryTake takes one observed lease and starts processing it. A take that reports an
// error may still have been applied (a lost response, a timeout, an SDK retry that then
// fails its own condition): the lease is read back at once, and each pass after while
// that read fails, so that a lease this worker owns is never left unprocessed.
func (b *balancer) tryTake(ctx context.Context, l lease.Lease) bool {
	tctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout())
	taken, err := b.leases.TakeLease(tctx, l, b.cfg.WorkerID)
	cancel()
	if err != nil {
		if !errors.Is(err, lease.ErrConflict) {
			b.log.Warn("cannot take lease", "shard", l.ShardID, "err", err)
		}
		b.unsure[l.ShardID] = true
		b.resolve(ctx, l.ShardID)
		return b.running.running(l.ShardID)
	}
	delete(b.unsure, l.ShardID)
	b.running.start(taken)
	return true
}

// resolveUnsure reads back every lease whose take reported an error.
func (b *balancer) resolveUnsure(ctx context.Context) {
	for id := range b.unsure {
		if ctx.Err() != nil {
			return
		}
		b.resolve(ctx, id)
	}
}

// resolve reads one lease that may be this worker's in the table without a consumer: its
// take reported an error, its consumer was fenced, or the release of a failed consumer
// did not succeed. If the table says this worker owns it and no consumer runs it, the
// lease is taken again, with a new epoch, or released when the worker is already at its
// target or the shard is cooling down after a failure.
func (b *balancer) resolve(ctx context.Context, shardID string) {
	gctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout())
	cur, err := b.leases.GetLease(gctx, shardID)
	cancel()
	switch {
	case err != nil && errors.Is(err, lease.ErrNotFound):
		delete(b.unsure, shardID)
		return
	case err != nil:
		b.forceScan = true
		return // Still unknown: next pass.
	case cur.Owner != b.cfg.WorkerID || b.running.running(shardID) || cur.Finished():
		delete(b.unsure, shardID)
		return
	}
	b.log.Warn("the lease table says this worker owns a lease it does not run (a take that reported an error applied, or a release did not)",
		"shard", shardID, "epoch", cur.Epoch)
	if len(b.running.active()) < b.target && b.tenure.holding() && !b.clock.Now().Before(b.cooldown[shardID]) {
		tctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout())
		taken, err := b.leases.TakeLease(tctx, cur, b.cfg.WorkerID)
		cancel()
		if err == nil {
			delete(b.unsure, shardID)
			b.running.start(taken)
		}
		return // On an error it stays unsure: read it again next pass.
	}
	rctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout())
	err = b.leases.ReleaseLease(rctx, cur, lease.ExtendedSequenceNumber{})
	cancel()
	if err == nil || errors.Is(err, lease.ErrConflict) {
		delete(b.unsure, shardID)
	}
}

// takeChildren follows a finished shard into its children at once, without waiting for
// the next lease scan: it creates their leases if needed (at the application's recorded
// initial position) and takes those whose parents have all finished, while this worker
// is below its target.
func (b *balancer) takeChildren(ctx context.Context, e consumerExit) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.callTimeout())
	defer cancel()
	for _, ch := range e.children {
		if len(b.running.active()) >= b.target || !b.tenure.holding() {
			return
		}
		l, err := b.leases.GetLease(ctx, ch.ShardID)
		if errors.Is(err, lease.ErrNotFound) {
			if b.startPos.InitialPosition == "" || !b.parentsExist(ctx, ch.ParentShardIDs) {
				continue // The coordinator's shard sync creates it, parents first.
			}
			l = lease.Lease{ShardID: ch.ShardID, ParentShardIDs: ch.ParentShardIDs,
				Checkpoint: b.startPos.InitialPosition, StartTimestamp: b.startPos.InitialTimestamp}
			if err = b.leases.CreateLease(ctx, l); errors.Is(err, lease.ErrExists) {
				l, err = b.leases.GetLease(ctx, ch.ShardID)
			}
		}
		if err != nil {
			b.log.Warn("cannot prepare child shard lease", "shard", ch.ShardID, "err", err)
			continue
		}
		if l.Finished() || b.running.running(l.ShardID) {
			continue
		}
		if l.Owner != "" && l.Owner != b.cfg.WorkerID {
			continue // Taking from a dead owner is the lease scan's job (takeFromDead).
		}
		done := true
		for _, p := range l.ParentShardIDs {
			if p == e.lease.ShardID {
				continue
			}
			pl, err := b.leases.GetLease(ctx, p)
			if err == nil && !pl.Finished() || err != nil && !errors.Is(err, lease.ErrNotFound) {
				done = false
				break
			}
		}
		if done {
			b.tryTake(ctx, l)
		}
	}
}

func (b *balancer) parentsExist(ctx context.Context, parents []string) bool {
	for _, p := range parents {
		if _, err := b.leases.GetLease(ctx, p); err != nil {
			return false
		}
	}
	return true
}
