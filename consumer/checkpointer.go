package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

var (
	// ErrLeaseLost means the worker no longer holds the lease: another worker took it, or
	// this worker could not renew in time. Matched with errors.Is.
	ErrLeaseLost = errors.New("lease lost")
	// ErrCheckpointBackwards means a checkpoint was before the last one.
	ErrCheckpointBackwards = errors.New("checkpoint would move backwards")
	// ErrInvalidSequenceNumber means a checkpoint was not a Kinesis sequence number.
	ErrInvalidSequenceNumber = errors.New("invalid sequence number")
)

// checkpointer is the fenced Checkpointer of one lease tenure. With a coalescing interval
// (Config.CheckpointInterval) it writes at most one checkpoint per interval: a checkpoint
// that comes sooner is accepted and kept pending, written by the next one after the
// interval, by flush (the consumer calls it on every read), or with the release of the
// lease (planned moves), so that only a crash or a lost lease loses it.
type checkpointer struct {
	store   LeaseStore
	lease   lease.Lease
	hooks   Hooks
	clock   clock.Clock
	timeout time.Duration // of each write
	every   time.Duration // coalescing interval; 0: every checkpoint is written

	// writeMu serialises writes so they land in order; mu guards the state and is never
	// held during I/O, so marking the lease lost never waits for a slow write.
	writeMu sync.Mutex
	mu      sync.Mutex
	last    lease.ExtendedSequenceNumber
	lost    bool
	// floor is a checkpoint whose write reported an error but may have applied.
	floor lease.ExtendedSequenceNumber
	// confirmed is when the last accepted write started: the lease was ours then.
	confirmed time.Time
	// behind is the lag of the batch being processed, written with its checkpoint.
	behind atomic.Int64
	// pending is an accepted checkpoint not written yet (zero: none); lastWrite is when
	// the last write started.
	pending   lease.ExtendedSequenceNumber
	lastWrite time.Time
	// aggregates are the KPL aggregates delivered after the last checkpoint, in order.
	aggregates []aggregateEnd
}

func newCheckpointer(store LeaseStore, held lease.Lease, hooks Hooks, clk clock.Clock, timeout, every time.Duration) *checkpointer {
	c := &checkpointer{store: store, lease: held, hooks: hooks, clock: clk, timeout: timeout, every: every,
		last: held.ExtendedSequenceNumber(), confirmed: clk.Now()}
	c.behind.Store(-1)
	return c
}

func (c *checkpointer) LastCheckpoint() string {
	return c.LastExtendedSequenceNumber().SequenceNumber
}

func (c *checkpointer) LastExtendedSequenceNumber() lease.ExtendedSequenceNumber {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// maxAggregates bounds the aggregates remembered for Checkpoint: a processor that never
// checkpoints must not make the list grow forever. An aggregate forgotten this way and
// checkpointed later by sequence number is checkpointed at its first user record: its
// other user records are delivered again after a restart, never lost.
const maxAggregates = 100_000

// aggregateEnd is a KPL aggregate handed to the processor: its sequence number and the
// sub-sequence number of its last user record.
type aggregateEnd struct {
	seq     *big.Int
	lastSub int64
}

// delivering records the aggregates of a batch about to be handed to the processor, so
// that Checkpoint of an aggregate's sequence number covers all its user records.
func (c *checkpointer) delivering(aggs []aggregateEnd) {
	if len(aggs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aggregates = append(c.aggregates, aggs...)
	if n := len(c.aggregates) - maxAggregates; n > 0 {
		c.aggregates = slices.Delete(c.aggregates, 0, n)
	}
}

// aggregateLastSub returns the last sub-sequence number of the aggregate at n delivered
// in this tenure, or 0 (a plain record, or an aggregate not delivered or forgotten).
func (c *checkpointer) aggregateLastSub(n *big.Int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.aggregates) - 1; i >= 0; i-- {
		if c.aggregates[i].seq.Cmp(n) == 0 {
			return c.aggregates[i].lastSub
		}
	}
	return 0
}

// forgetAggregatesLocked drops, with mu held, the aggregates before the sequence number of
// the checkpoint cp: a later checkpoint can no longer name them (the one at it still can:
// the checkpoint may be inside it).
func (c *checkpointer) forgetAggregatesLocked(cp lease.ExtendedSequenceNumber) {
	n, ok := new(big.Int).SetString(cp.SequenceNumber, 10)
	if !ok {
		return
	}
	i := 0
	for i < len(c.aggregates) && c.aggregates[i].seq.Cmp(n) < 0 {
		i++
	}
	c.aggregates = c.aggregates[i:]
}

// recordCheckpoint returns the checkpoint that covers r and the records before it.
func recordCheckpoint(r stream.Record) lease.ExtendedSequenceNumber {
	return lease.ExtendedSequenceNumber{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
}

func (c *checkpointer) Checkpoint(ctx context.Context, seq string) error {
	n, ok := lease.ParseSequenceNumber(seq)
	if !ok {
		return fmt.Errorf("shard %s: %w: %q", c.lease.ShardID, ErrInvalidSequenceNumber, seq)
	}
	return c.checkpoint(ctx, lease.ExtendedSequenceNumber{SequenceNumber: seq, SubSequenceNumber: c.aggregateLastSub(n)})
}

func (c *checkpointer) CheckpointRecord(ctx context.Context, rec stream.Record) error {
	if _, ok := lease.ParseSequenceNumber(rec.SequenceNumber); !ok || rec.SubSequenceNumber < 0 {
		return fmt.Errorf("shard %s: %w: %q sub-sequence %d", c.lease.ShardID, ErrInvalidSequenceNumber, rec.SequenceNumber, rec.SubSequenceNumber)
	}
	return c.checkpoint(ctx, recordCheckpoint(rec))
}

// checkpoint accepts the checkpoint v, at a sequence number.
func (c *checkpointer) checkpoint(ctx context.Context, v lease.ExtendedSequenceNumber) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	lost, last, floor := c.lost, c.last, c.floor
	c.mu.Unlock()
	if lost {
		return fmt.Errorf("shard %s epoch %d: %w", c.lease.ShardID, c.lease.Epoch, ErrLeaseLost)
	}
	if cmp, ok := v.Compare(last); ok {
		switch cmp {
		case 0:
			return nil // Nothing new: save the write.
		case -1:
			return fmt.Errorf("shard %s: %w: %s is before %s", c.lease.ShardID, ErrCheckpointBackwards, v, last)
		}
	}
	if cmp, ok := v.Compare(floor); ok && cmp < 0 {
		return fmt.Errorf("shard %s: %w: %s is before %s, whose write may have applied", c.lease.ShardID, ErrCheckpointBackwards, v, floor)
	}
	if c.every > 0 && c.clock.Now().Sub(c.lastWrite) < c.every {
		c.mu.Lock()
		c.last, c.pending = v, v
		c.forgetAggregatesLocked(v)
		c.mu.Unlock()
		return nil
	}
	return c.write(ctx, v)
}

// flush writes the pending checkpoint once the interval since the last write passed. Only
// a lost lease is reported; another error leaves it pending for the next flush.
func (c *checkpointer) flush(ctx context.Context) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	pending, lost := c.pending, c.lost
	c.mu.Unlock()
	if pending.IsZero() || lost || c.clock.Now().Sub(c.lastWrite) < c.every {
		return nil
	}
	if err := c.write(ctx, pending); errors.Is(err, ErrLeaseLost) {
		return err
	}
	return nil
}

// takePending returns the pending checkpoint (zero: none) for the release of the lease
// to write; from then on it is no longer pending.
func (c *checkpointer) takePending() lease.ExtendedSequenceNumber {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending
	c.pending = lease.ExtendedSequenceNumber{}
	if c.lost {
		return lease.ExtendedSequenceNumber{}
	}
	return p
}

// write writes seq, with writeMu held.
func (c *checkpointer) write(ctx context.Context, seq lease.ExtendedSequenceNumber) error {
	start := c.clock.Now()
	c.lastWrite = start
	wctx, cancel := context.WithTimeout(ctx, c.timeout)
	err := c.store.Checkpoint(wctx, c.lease, seq, c.behind.Load())
	cancel()
	c.hooks.checkpointed(c.lease.ShardID, err)
	applied := false
	if err != nil && !errors.Is(err, lease.ErrConflict) && !errors.Is(err, lease.ErrTableNotFound) {
		// Outside mu: marking the lease lost never waits for this read.
		applied = c.appliedAnyway(ctx, seq)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if errors.Is(err, lease.ErrConflict) {
			c.lost = true
			return fmt.Errorf("shard %s epoch %d: checkpoint %s refused: %w", c.lease.ShardID, c.lease.Epoch, seq, ErrLeaseLost)
		}
		if errors.Is(err, lease.ErrTableNotFound) {
			// Without the lease table progress cannot be recorded: retrying the batch would
			// only process it again and again. Stop the shard instead.
			c.lost = true
			return fmt.Errorf("shard %s: checkpoint %s: %w: %w", c.lease.ShardID, seq, ErrLeaseLost, err)
		}
		if applied {
			c.written(seq, start)
			return nil
		}
		// The write may still have applied: never accept a checkpoint below it later, nor
		// write an older pending one.
		c.floor = seq
		if c.pending != seq {
			c.pending = lease.ExtendedSequenceNumber{}
		}
		return fmt.Errorf("shard %s: checkpoint %s: %w", c.lease.ShardID, seq, err)
	}
	c.written(seq, start)
	return nil
}

// written records, with mu held, that seq was written by a write that started at start.
// A pending checkpoint is never after seq: checkpoints are accepted in order.
func (c *checkpointer) written(seq lease.ExtendedSequenceNumber, start time.Time) {
	c.last, c.confirmed, c.pending = seq, start, lease.ExtendedSequenceNumber{}
	c.forgetAggregatesLocked(seq)
}

// appliedAnyway reads the lease back after a checkpoint write reported an error (a lost
// response, a timeout): it reports whether the write did apply.
func (c *checkpointer) appliedAnyway(ctx context.Context, seq lease.ExtendedSequenceNumber) bool {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cur, err := c.store.GetLease(rctx, c.lease.ShardID)
	return err == nil && cur.Owner == c.lease.Owner && cur.Epoch == c.lease.Epoch && cur.ExtendedSequenceNumber() == seq
}

// confirm records that the lease was read as ours at t.
func (c *checkpointer) confirm(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.confirmed) {
		c.confirmed = t
	}
}

// confirmedAt returns when the lease was last known to be ours: when the tenure began or
// when the last accepted checkpoint write started.
func (c *checkpointer) confirmedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.confirmed
}

// markLost makes every later checkpoint fail without a write.
func (c *checkpointer) markLost() {
	c.mu.Lock()
	c.lost = true
	c.mu.Unlock()
}
