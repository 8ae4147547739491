package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
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

// checkpointer is the fenced Checkpointer of one lease tenure.
type checkpointer struct {
	store   LeaseStore
	lease   lease.Lease
	hooks   Hooks
	clock   clock.Clock
	timeout time.Duration // of each write

	// writeMu serialises writes so they land in order; mu guards the state and is never
	// held during I/O, so marking the lease lost never waits for a slow write.
	writeMu sync.Mutex
	mu      sync.Mutex
	last    string
	lost    bool
	// floor is a checkpoint whose write reported an error but may have applied.
	floor string
	// confirmed is when the last accepted write started: the lease was ours then.
	confirmed time.Time
	// behind is the lag of the batch being processed, written with its checkpoint.
	behind atomic.Int64
}

func newCheckpointer(store LeaseStore, held lease.Lease, hooks Hooks, clk clock.Clock, timeout time.Duration) *checkpointer {
	c := &checkpointer{store: store, lease: held, hooks: hooks, clock: clk, timeout: timeout, last: held.Checkpoint, confirmed: clk.Now()}
	c.behind.Store(-1)
	return c
}

func (c *checkpointer) LastCheckpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *checkpointer) Checkpoint(ctx context.Context, seq string) error {
	n, ok := new(big.Int).SetString(seq, 10)
	if !ok || n.Sign() < 0 {
		return fmt.Errorf("shard %s: %w: %q", c.lease.ShardID, ErrInvalidSequenceNumber, seq)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	lost, last, floor := c.lost, c.last, c.floor
	c.mu.Unlock()
	if lost {
		return fmt.Errorf("shard %s epoch %d: %w", c.lease.ShardID, c.lease.Epoch, ErrLeaseLost)
	}
	if prev, ok := new(big.Int).SetString(last, 10); ok {
		switch n.Cmp(prev) {
		case 0:
			return nil // Nothing new: save the write.
		case -1:
			return fmt.Errorf("shard %s: %w: %s is before %s", c.lease.ShardID, ErrCheckpointBackwards, seq, last)
		}
	}
	if f, ok := new(big.Int).SetString(floor, 10); ok && n.Cmp(f) < 0 {
		return fmt.Errorf("shard %s: %w: %s is before %s, whose write may have applied", c.lease.ShardID, ErrCheckpointBackwards, seq, floor)
	}
	start := c.clock.Now()
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
			c.last, c.confirmed = seq, start
			return nil
		}
		// The write may still have applied: never accept a checkpoint below it later.
		c.floor = seq
		return fmt.Errorf("shard %s: checkpoint %s: %w", c.lease.ShardID, seq, err)
	}
	c.last = seq
	c.confirmed = start
	return nil
}

// appliedAnyway reads the lease back after a checkpoint write reported an error (a lost
// response, a timeout): it reports whether the write did apply.
func (c *checkpointer) appliedAnyway(ctx context.Context, seq string) bool {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cur, err := c.store.GetLease(rctx, c.lease.ShardID)
	return err == nil && cur.Owner == c.lease.Owner && cur.Epoch == c.lease.Epoch && cur.Checkpoint == seq
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
