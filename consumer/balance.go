package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// balance moves this worker towards its target: it releases leases above the target,
// and below it reads the lease table (only when something changed, or rarely as a
// safety net) and takes free or expired leases, as many as it needs in one pass.
// fp is the fingerprint of the metadata read this pass.
func (w *Worker) balance(ctx context.Context, now time.Time, fp string, rec *lease.CoordinatorRecord) {
	target, known := w.targetFrom(rec)
	if !known {
		return // No coordinator has published a value yet: neither take nor release.
	}
	if !w.targetKnown || target != w.target {
		old := w.target
		w.target, w.targetKnown = target, true
		attrs := []any{"old", old, "new", target}
		if rec != nil {
			attrs = append(attrs, "shard_count", rec.ShardCount, "worker_count", rec.WorkerCount,
				"live_workers", rec.LiveWorkers, "cap", rec.Cap)
			if rec.UnownedShards > 0 {
				w.log.Warn("max leases per worker is capped: shards are left unowned",
					"max_leases", target, "unowned_shards", rec.UnownedShards, "workers_needed", rec.RecommendedWorkers)
			}
		}
		w.log.Info(fmt.Sprintf("max leases per worker changed %d -> %d", old, target), attrs...)
		w.hooks.targetChanged(old, target)
	}
	active := w.activeConsumers()
	switch {
	case len(active) > target:
		w.releaseExcess(active, len(active)-target)
	case len(active) < target:
		if now.Before(w.settleUntil) || !w.tenure.holding() {
			return
		}
		if !w.forceScan && fp == w.lastFingerprint && now.Sub(w.lastScan) < w.cfg.LeaseScanInterval {
			return
		}
		w.lastFingerprint, w.lastScan, w.forceScan = fp, now, false
		w.takeLeases(ctx, now, target-len(active))
	}
}

// targetFrom returns the number of leases this worker should hold.
func (w *Worker) targetFrom(rec *lease.CoordinatorRecord) (int, bool) {
	switch {
	case w.cfg.DisableDynamicMaxLeases:
		return w.cfg.StaticMaxLeases, true
	case rec == nil || rec.Cap == 0:
		return 0, false
	case rec.TargetLeasesPerWorker > 0:
		return min(rec.TargetLeasesPerWorker, w.cfg.MaxLeasesCap), true
	}
	// Never obey nonsense written by hand: a negative max means none.
	return max(0, min(rec.MaxLeasesPerWorker, w.cfg.MaxLeasesCap)), true
}

// activeConsumers returns the consumers that are not being released.
func (w *Worker) activeConsumers() []*shardConsumer {
	out := make([]*shardConsumer, 0, len(w.held))
	for _, c := range w.held {
		if !c.releasing {
			out = append(out, c)
		}
	}
	return out
}

// releaseExcess gives up n leases, the ones this worker prefers least, so that workers
// agree on which shards move. Each consumer finishes its batch, lets the processor
// checkpoint and then releases.
func (w *Worker) releaseExcess(active []*shardConsumer, n int) {
	sort.Slice(active, func(i, j int) bool {
		return w.preference(active[i].held.ShardID) > w.preference(active[j].held.ShardID)
	})
	ids := make([]string, 0, n)
	for _, c := range active[:n] {
		c.releasing = true
		c.requestStop(stopPlanned)
		ids = append(ids, c.held.ShardID)
	}
	w.log.Info("releasing leases above max leases per worker", "count", n, "target", w.target, "shards", ids)
}

// preference ranks shards for this worker; different workers rank differently, so
// workers that take at the same time mostly try different leases.
func (w *Worker) preference(shardID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(w.cfg.WorkerID))
	h.Write([]byte{0})
	h.Write([]byte(shardID))
	return h.Sum64()
}

// fingerprint summarises what in the metadata table may make leases takeable: the
// coordinator's values and generation, and each other worker's liveness and lease count.
func (w *Worker) fingerprint(meta lease.Meta, rec *lease.CoordinatorRecord) string {
	var b strings.Builder
	if rec != nil {
		fmt.Fprintf(&b, "%s/%d/%d/%d|", rec.CoordinatorID, rec.Epoch, rec.Version, rec.LeaseGeneration)
	}
	for _, r := range meta.Workers {
		if r.WorkerID == w.cfg.WorkerID {
			continue
		}
		if w.live.alive(r.WorkerID) {
			fmt.Fprintf(&b, "%s:%s:%d,", r.WorkerID, r.Incarnation, r.LeasesHeld)
		} else {
			fmt.Fprintf(&b, "%s:dead,", r.WorkerID)
		}
	}
	return b.String()
}

// takeLeases reads the lease table and takes up to want leases that are free, expired
// (owner dead on this worker's observations), or left by an earlier run of this worker,
// whose parents have all finished. Parents of other leases come first: at the cap, a
// child must never wait on a parent that nobody may take.
func (w *Worker) takeLeases(ctx context.Context, now time.Time, want int) {
	lctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	table, err := w.leases.ListLeases(lctx)
	cancel()
	if err != nil {
		w.log.Warn("cannot read the lease table", "err", err)
		w.forceScan = true // Below the target: try again next pass, not a scan interval later.
		return
	}
	tableRead := w.clock.Now()
	w.reportCorrupt(table.Corrupt)
	// Owners that look expired are judged again on a read of the metadata table that
	// starts after the lease table was read (see liveness.expiredAfter).
	for _, l := range table.Leases {
		if l.Owner != "" && l.Owner != w.cfg.WorkerID && !l.Finished() && w.live.expired(l.Owner) {
			_, _ = w.observe(ctx) // A failed read leaves them as they were: not taken.
			break
		}
	}
	idx := table.Index()
	var candidates []lease.Lease
	for _, l := range table.Leases {
		switch {
		case l.Finished():
		case w.held[l.ShardID] != nil:
		case now.Before(w.cooldown[l.ShardID]):
		case l.Owner != "" && l.Owner != w.cfg.WorkerID && !w.live.expiredAfter(l.Owner, tableRead):
		case !idx.ParentsFinished(l):
		default:
			candidates = append(candidates, l)
		}
	}
	sort.Slice(candidates, func(i, j int) bool {
		ci, cj := candidates[i], candidates[j]
		// Leases of an earlier run of this worker first: nobody else is reading them.
		if mi, mj := ci.Owner == w.cfg.WorkerID, cj.Owner == w.cfg.WorkerID; mi != mj {
			return mi
		}
		if pi, pj := idx.IsOpenParent(ci.ShardID), idx.IsOpenParent(cj.ShardID); pi != pj {
			return pi
		}
		return w.preference(ci.ShardID) < w.preference(cj.ShardID)
	})
	taken, conflicts := 0, 0
	for _, l := range candidates {
		if taken == want || ctx.Err() != nil {
			if l.Owner == w.cfg.WorkerID {
				w.unsure[l.ShardID] = true // Ours but not wanted now: resolve releases it.
			}
			continue
		}
		if w.tryTake(ctx, l) {
			taken++
		} else {
			conflicts++
		}
	}
	if taken < want && conflicts > 0 {
		w.forceScan = true // Others raced us; look again next pass.
	}
	if taken > 0 || conflicts > 0 {
		w.log.Debug("lease scan", "taken", taken, "conflicts", conflicts, "candidates", len(candidates), "wanted", want)
	}
}

// tryTake takes one observed lease and starts processing it. A take that reports an
// error may still have been applied (a lost response, a timeout, an SDK retry that then
// fails its own condition): the lease is read back at once, and each pass after while
// that read fails, so that a lease this worker owns is never left unprocessed.
func (w *Worker) tryTake(ctx context.Context, l lease.Lease) bool {
	tctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	taken, err := w.leases.TakeLease(tctx, l, w.cfg.WorkerID)
	cancel()
	if err != nil {
		if !errors.Is(err, lease.ErrConflict) {
			w.log.Warn("cannot take lease", "shard", l.ShardID, "err", err)
		}
		w.unsure[l.ShardID] = true
		w.resolve(ctx, l.ShardID)
		return w.held[l.ShardID] != nil
	}
	delete(w.unsure, l.ShardID)
	if l.Owner != "" && l.Owner != w.cfg.WorkerID {
		w.log.Info("took expired lease", "shard", l.ShardID, "previous_owner", l.Owner)
	}
	w.startConsumer(taken)
	return true
}

// resolveUnsure reads back every lease whose take reported an error.
func (w *Worker) resolveUnsure(ctx context.Context) {
	for id := range w.unsure {
		if ctx.Err() != nil {
			return
		}
		w.resolve(ctx, id)
	}
}

// resolve reads one lease whose take reported an error. If the table says this worker
// owns it and no consumer runs it, the take did apply: the lease is taken again, with a
// new epoch, or released when the worker is already at its target.
func (w *Worker) resolve(ctx context.Context, shardID string) {
	gctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	cur, err := w.leases.GetLease(gctx, shardID)
	cancel()
	switch {
	case err != nil && errors.Is(err, lease.ErrNotFound):
		delete(w.unsure, shardID)
		return
	case err != nil:
		w.forceScan = true
		return // Still unknown: next pass.
	case cur.Owner != w.cfg.WorkerID || w.held[shardID] != nil || cur.Finished():
		delete(w.unsure, shardID)
		return
	}
	w.log.Warn("a take that reported an error was applied: this worker owns the lease", "shard", shardID, "epoch", cur.Epoch)
	if len(w.activeConsumers()) < w.target && w.tenure.holding() {
		tctx, cancel := context.WithTimeout(ctx, w.callTimeout())
		taken, err := w.leases.TakeLease(tctx, cur, w.cfg.WorkerID)
		cancel()
		if err == nil {
			delete(w.unsure, shardID)
			w.startConsumer(taken)
		}
		return // On an error it stays unsure: read it again next pass.
	}
	rctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	err = w.leases.ReleaseLease(rctx, cur, "")
	cancel()
	if err == nil || errors.Is(err, lease.ErrConflict) {
		delete(w.unsure, shardID)
	}
}

// takeChildren follows a finished shard into its children at once, without waiting for
// the next lease scan: it creates their leases if needed (at the application's recorded
// initial position) and takes those whose parents have all finished, while this worker
// is below its target.
func (w *Worker) takeChildren(ctx context.Context, e consumerExit) {
	ctx, cancel := context.WithTimeout(ctx, w.callTimeout())
	defer cancel()
	for _, ch := range e.children {
		if len(w.activeConsumers()) >= w.target || !w.tenure.holding() {
			return
		}
		l, err := w.leases.GetLease(ctx, ch.ShardID)
		if errors.Is(err, lease.ErrNotFound) {
			if w.startPos.InitialPosition == "" || !w.parentsExist(ctx, ch.ParentShardIDs) {
				continue // The coordinator's shard sync creates it, parents first.
			}
			l = lease.Lease{ShardID: ch.ShardID, ParentShardIDs: ch.ParentShardIDs,
				Checkpoint: w.startPos.InitialPosition, StartTimestamp: w.startPos.InitialTimestamp}
			if err = w.leases.CreateLease(ctx, l); errors.Is(err, lease.ErrExists) {
				l, err = w.leases.GetLease(ctx, ch.ShardID)
			}
		}
		if err != nil {
			w.log.Warn("cannot prepare child shard lease", "shard", ch.ShardID, "err", err)
			continue
		}
		if l.Finished() || w.held[l.ShardID] != nil {
			continue
		}
		if l.Owner != "" && l.Owner != w.cfg.WorkerID {
			continue // Taking from an expired owner is the lease scan's job (expiredAfter).
		}
		done := true
		for _, p := range l.ParentShardIDs {
			if p == e.held.ShardID {
				continue
			}
			pl, err := w.leases.GetLease(ctx, p)
			if err == nil && !pl.Finished() || err != nil && !errors.Is(err, lease.ErrNotFound) {
				done = false
				break
			}
		}
		if done {
			w.tryTake(ctx, l)
		}
	}
}

func (w *Worker) parentsExist(ctx context.Context, parents []string) bool {
	for _, p := range parents {
		if _, err := w.leases.GetLease(ctx, p); err != nil {
			return false
		}
	}
	return true
}
