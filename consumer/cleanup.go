package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// cleaner deletes, for the coordinator, what nobody can need any more, so that the lease
// table stays as large as the open shards (plus those finished within
// FinishedLeaseDelay) and the metadata table as large as the workers, across any number
// of reshards and restarts:
//   - a finished lease whose children all have leases (lease.Index.Outgrown),
//     FinishedLeaseDelay after the coordinator first saw it so;
//   - the record of a worker that is gone or expired on the coordinator's observations,
//     DeadWorkerDelay after it first saw it so.
//
// Both deletions are conditional on what was read (the lease's owner and epoch, the
// record's heartbeat), so they are idempotent, and one that lost its condition deleted
// nothing. Being outgrown never ends once it began, and a record written again (a worker
// that comes back) changes the heartbeat the deletion is conditional on. The delays count
// on the coordinator's clock from its own observations; a new coordinator starts them
// again. It is used by the control loop's goroutine only.
type cleaner struct {
	cfg     *Config
	leases  LeaseStore
	meta    MetaStore
	stream  Stream
	members *membership
	corrupt *corruptLog
	log     *slog.Logger

	last          time.Time
	outgrownSince map[string]time.Time // shard -> when first seen outgrown
	deadSince     map[string]time.Time // worker -> when first seen gone or expired
	// short holds the live workers that reported running more leases than the last read
	// of the lease table gave them; recheck those that did on the last two reads.
	short, recheck []string
	// waitingSeen holds the closed shards the last read of the lease table showed free
	// and ready to read (see lease.CoordinatorRecord.WaitingParents); waiting counts
	// those the last two reads showed so.
	waitingSeen map[string]bool
	waiting     int
	// round is a deletion round waiting for its stream listing.
	round *cleanupRound
}

// cleanupRound is a round of deletions whose stream listing, started after its read of
// the lease table, has not answered yet.
type cleanupRound struct {
	table   lease.Table
	idx     lease.Index
	listing *shardListing
}

func newCleaner(cfg *Config, leases LeaseStore, meta MetaStore, s Stream, members *membership, corrupt *corruptLog, log *slog.Logger) *cleaner {
	return &cleaner{cfg: cfg, leases: leases, meta: meta, stream: s, members: members, corrupt: corrupt, log: log,
		outgrownSince: make(map[string]time.Time), deadSince: make(map[string]time.Time)}
}

// reset forgets the observations behind the delays (the role was lost).
func (k *cleaner) reset() {
	k.last = time.Time{}
	clear(k.outgrownSince)
	clear(k.deadSince)
	k.short, k.recheck = nil, nil
	k.waitingSeen, k.waiting = nil, 0
	if k.round != nil {
		k.round.listing.cancel()
		k.round = nil
	}
}

// rechecks returns the workers that should confirm their leases (see
// lease.CoordinatorRecord.RecheckWorkers).
func (k *cleaner) rechecks() []string { return k.recheck }

// waitingParents returns how many closed shards wait for a worker (see
// lease.CoordinatorRecord.WaitingParents).
func (k *cleaner) waitingParents() int { return k.waiting }

// countWaiting counts the leases, free or of workers the view lists dead, of closed
// shards whose own parents have finished and whose children wait for them. Such a lease
// is taken first by a worker below its target; one seen so on two reads of the table in
// a row means the workers are at their targets (the cap binds, or a reshard left more
// leases to read than workers hold), and those must trade an open shard's lease for it.
func (k *cleaner) countWaiting(table lease.Table, idx lease.Index) {
	dead := make(map[string]bool)
	for _, d := range k.members.dead(k.cfg.WorkerID) {
		dead[d.WorkerID] = true
	}
	seen := make(map[string]bool)
	k.waiting = 0
	for _, l := range table.Leases {
		if l.Owner != "" && !dead[l.Owner] || !idx.WaitingParent(l) {
			continue
		}
		seen[l.ShardID] = true
		if k.waitingSeen[l.ShardID] {
			k.waiting++
		}
	}
	k.waitingSeen = seen
	if k.waiting > 0 {
		k.log.Warn("closed shards wait for a worker while workers are at their targets: asking workers to trade open shards for them",
			"waiting_parents", k.waiting)
	}
}

// countOwners compares what the live workers report running with what the lease table
// gives them. A worker that runs more than it owns lost a lease without noticing (an idle
// consumer does not read its lease); seen so on two reads of the table in a row (a take
// or a release between a heartbeat and the read explains one), it is asked to recheck.
func (k *cleaner) countOwners(table lease.Table) {
	owned := make(map[string]int)
	for _, l := range table.Leases {
		if l.Owner != "" && !l.Finished() {
			owned[l.Owner]++
		}
	}
	was := make(map[string]bool, len(k.short))
	for _, id := range k.short {
		was[id] = true
	}
	k.short, k.recheck = nil, nil
	for _, id := range k.members.liveIDs() {
		rec, _ := k.members.record(id)
		if rec.LeasesHeld > owned[id] {
			k.short = append(k.short, id)
			if was[id] {
				k.recheck = append(k.recheck, id)
			}
		}
	}
	if len(k.recheck) > 0 {
		k.log.Warn("workers report running leases the lease table gives to others: asking them to check their leases", "workers", k.recheck)
	}
}

// run deletes what is due, at most once per CleanupInterval. workers are the records of
// the metadata read this pass.
func (k *cleaner) run(ctx context.Context, now time.Time, workers []lease.WorkerRecord) {
	k.finishRound(ctx, now, 0)
	if k.round != nil || !k.last.IsZero() && now.Sub(k.last) < k.cfg.CleanupInterval {
		return
	}
	k.last = now
	k.workers(ctx, now, workers)
	k.finishedLeases(ctx, now)
}

func (k *cleaner) workers(ctx context.Context, now time.Time, workers []lease.WorkerRecord) {
	seen := make(map[string]bool, len(workers))
	for _, r := range workers {
		seen[r.WorkerID] = true
		if r.WorkerID == k.cfg.WorkerID || !k.members.expired(r.WorkerID) {
			delete(k.deadSince, r.WorkerID)
			continue
		}
		since, ok := k.deadSince[r.WorkerID]
		if !ok {
			k.deadSince[r.WorkerID] = now
			continue
		}
		if now.Sub(since) < k.cfg.DeadWorkerDelay || ctx.Err() != nil {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, k.cfg.callTimeout())
		err := k.meta.DeleteWorker(dctx, r.WorkerID, r.Heartbeat)
		cancel()
		switch {
		case err == nil:
			k.log.Info("deleted the record of a dead worker", "dead_worker", r.WorkerID, "state", r.State, "dead_for", now.Sub(since).Round(time.Second))
			delete(k.deadSince, r.WorkerID)
		case errors.Is(err, lease.ErrConflict):
			delete(k.deadSince, r.WorkerID) // It wrote again: judge it afresh.
		default:
			k.log.Warn("cannot delete the record of a dead worker", "dead_worker", r.WorkerID, "err", err)
		}
	}
	for id := range k.deadSince {
		if !seen[id] {
			delete(k.deadSince, id)
		}
	}
}

// finishedLeases reads the lease table for the ownership checks and starts a round of
// deletions of the outgrown leases that are due. A lease's children are those of the
// lease table and those of a listing of the stream made after the table was read:
// a shard is closed, and its children listed, before its lease can say SHARD_END, so that
// listing names every child of every finished lease the table showed, even of a reshard
// the coordinator's shard sync has not seen yet.
func (k *cleaner) finishedLeases(ctx context.Context, now time.Time) {
	lctx, cancel := context.WithTimeout(ctx, k.cfg.callTimeout())
	table, err := k.leases.ListLeases(lctx)
	cancel()
	if err != nil {
		k.log.Warn("cannot read the lease table for cleanup", "err", err)
		return
	}
	k.corrupt.report(table.Corrupt)
	// Owners without a record are judged like silent ones, so the view can list them dead.
	var owners []string
	for _, l := range table.Leases {
		if l.Owner != "" && !l.Finished() {
			owners = append(owners, l.Owner)
		}
	}
	k.members.watch(owners)
	k.countOwners(table)
	idx := table.Index()
	k.countWaiting(table, idx)
	// The ownership checks above need the table only. The deletions wait for the
	// listing, a pass at most here and then on later passes: a stream too busy to list
	// its shards delays them, never the control loop (and with it the view).
	k.round = &cleanupRound{table: table, idx: idx, listing: startListing(ctx, k.stream, k.cfg.streamTimeout())}
	k.finishRound(ctx, now, k.cfg.PollInterval)
}

// finishRound deletes what the round in progress found due, once its listing answered,
// waiting for it at most wait.
func (k *cleaner) finishRound(ctx context.Context, now time.Time, wait time.Duration) {
	r := k.round
	if r == nil {
		return
	}
	if wait <= 0 {
		select {
		case <-r.listing.done:
		default:
			return
		}
	} else {
		select {
		case <-r.listing.done:
		case <-k.cfg.Clock.After(wait):
			return
		}
	}
	k.round = nil
	if r.listing.err != nil {
		k.log.Warn("cannot list the stream's shards for cleanup", "err", r.listing.err)
		return
	}
	k.deleteOutgrown(ctx, now, r.table, r.idx, r.listing.shards)
}

// deleteOutgrown deletes the leases of table that the listing shards (made after table
// was read) shows outgrown for FinishedLeaseDelay, conditional on what table read.
func (k *cleaner) deleteOutgrown(ctx context.Context, now time.Time, table lease.Table, idx lease.Index, shards []stream.Shard) {
	streamChildren := make(map[string][]string)
	for _, s := range shards {
		for _, p := range s.Parents() {
			streamChildren[p] = append(streamChildren[p], s.ID)
		}
	}
	var deleted []string
	outgrown := make(map[string]bool)
	for _, l := range table.Leases {
		if !idx.Outgrown(l.ShardID, streamChildren[l.ShardID]) {
			continue
		}
		outgrown[l.ShardID] = true
		since, ok := k.outgrownSince[l.ShardID]
		if !ok {
			k.outgrownSince[l.ShardID] = now
			continue
		}
		if now.Sub(since) < k.cfg.FinishedLeaseDelay || ctx.Err() != nil {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, k.cfg.callTimeout())
		err := k.leases.DeleteLease(dctx, l)
		cancel()
		switch {
		case err == nil:
			deleted = append(deleted, l.ShardID)
			delete(outgrown, l.ShardID)
		case errors.Is(err, lease.ErrConflict):
			delete(outgrown, l.ShardID) // Changed or gone since the read: judge it afresh.
		default:
			k.log.Warn("cannot delete a finished lease", "shard", l.ShardID, "err", err)
		}
	}
	for id := range k.outgrownSince {
		if !outgrown[id] {
			delete(k.outgrownSince, id)
		}
	}
	if len(deleted) > 0 {
		sort.Strings(deleted)
		k.log.Info("deleted finished leases whose children all have leases", "count", len(deleted), "shards", deleted)
	}
}
