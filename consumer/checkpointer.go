package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"

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
	store LeaseStore
	held  lease.Lease
	hooks Hooks

	// writeMu serialises writes so they land in order; mu guards the state and is never
	// held during I/O, so marking the lease lost never waits for a slow write.
	writeMu sync.Mutex
	mu      sync.Mutex
	last    string
	lost    bool
	// behind is the lag of the batch being processed, written with its checkpoint.
	behind atomic.Int64
}

func newCheckpointer(store LeaseStore, held lease.Lease, hooks Hooks) *checkpointer {
	c := &checkpointer{store: store, held: held, hooks: hooks, last: held.Checkpoint}
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
		return fmt.Errorf("shard %s: %w: %q", c.held.ShardID, ErrInvalidSequenceNumber, seq)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	lost, last := c.lost, c.last
	c.mu.Unlock()
	if lost {
		return fmt.Errorf("shard %s epoch %d: %w", c.held.ShardID, c.held.Counter, ErrLeaseLost)
	}
	if prev, ok := new(big.Int).SetString(last, 10); ok {
		switch n.Cmp(prev) {
		case 0:
			return nil // Nothing new: save the write.
		case -1:
			return fmt.Errorf("shard %s: %w: %s is before %s", c.held.ShardID, ErrCheckpointBackwards, seq, last)
		}
	}
	err := c.store.Checkpoint(ctx, c.held, seq, c.behind.Load())
	c.hooks.checkpointed(c.held.ShardID, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if errors.Is(err, lease.ErrConflict) {
			c.lost = true
			return fmt.Errorf("shard %s epoch %d: checkpoint %s refused: %w", c.held.ShardID, c.held.Counter, seq, ErrLeaseLost)
		}
		if errors.Is(err, lease.ErrTableNotFound) {
			// Without the lease table progress cannot be recorded: retrying the batch would
			// only process it again and again. Stop the shard instead.
			c.lost = true
			return fmt.Errorf("shard %s: checkpoint %s: %w: %w", c.held.ShardID, seq, ErrLeaseLost, err)
		}
		return fmt.Errorf("shard %s: checkpoint %s: %w", c.held.ShardID, seq, err)
	}
	c.last = seq
	return nil
}

// markLost makes every later checkpoint fail without a write.
func (c *checkpointer) markLost() {
	c.mu.Lock()
	c.lost = true
	c.mu.Unlock()
}
