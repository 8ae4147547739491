package memstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Leases is an in-memory lease table implementing consumer.LeaseStore.
//
// Operation names for Calls and InjectError are the method names: "ListLeases",
// "GetLease", "CreateLease", "TakeLease", "ReleaseLease", "Checkpoint", "DeleteLease".
//
// It mirrors package dynamostore, including what a DynamoDB round trip does to values:
// a conditional write on a lease that does not exist fails with lease.ErrConflict only
// (DynamoDB cannot tell the two apart), arguments dynamostore rejects before sending a
// request are rejected here without counting a call, ParentShardIDs and ChildShardIDs come
// back sorted and deduplicated (string sets) and StartTimestamp in UTC at millisecond
// precision. ReleaseLease at SHARD_END records the held lease's ChildShardIDs.
type Leases struct {
	faults

	mu      sync.Mutex
	leases  map[string]lease.Lease
	corrupt map[string]string // key -> reason; shadows a lease with the same key
	sorted  []string          // sorted keys of leases and corrupt; nil when stale
}

// NewLeases returns an empty lease table.
func NewLeases() *Leases {
	return &Leases{leases: make(map[string]lease.Lease), corrupt: make(map[string]string)}
}

func (s *Leases) begin(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.faults.begin(op, "")
}

// ErrCorrupt means a single item read by key could not be decoded, like
// dynamostore.ErrCorrupt. Table-wide reads report such items in their Corrupt lists.
var ErrCorrupt = errors.New("stored item cannot be decoded")

// ListLeases implements consumer.LeaseStore. Leases and corrupt items are sorted by key.
func (s *Leases) ListLeases(ctx context.Context) (lease.Table, error) {
	if err := s.begin(ctx, "ListLeases"); err != nil {
		return lease.Table{}, err
	}
	return s.Snapshot(), nil
}

// GetLease implements consumer.LeaseStore.
func (s *Leases) GetLease(ctx context.Context, shardID string) (lease.Lease, error) {
	if err := s.begin(ctx, "GetLease"); err != nil {
		return lease.Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason, ok := s.corrupt[shardID]; ok {
		return lease.Lease{}, fmt.Errorf("memstore: lease %q: %w: %s", shardID, ErrCorrupt, reason)
	}
	l, ok := s.leases[shardID]
	if !ok {
		return lease.Lease{}, fmt.Errorf("memstore: lease %q: %w", shardID, lease.ErrNotFound)
	}
	return copyLease(l), nil
}

// CreateLease implements consumer.LeaseStore. It creates a free lease at epoch 0 with
// l's checkpoint, start timestamp and parents; l's Owner and Epoch are ignored.
func (s *Leases) CreateLease(ctx context.Context, l lease.Lease) error {
	if err := lease.CheckCreate(l); err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	if err := s.begin(ctx, "CreateLease"); err != nil {
		return err
	}
	l.Owner, l.Epoch = "", 0
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.leases[l.ShardID]; ok {
		return fmt.Errorf("memstore: lease %q: %w", l.ShardID, lease.ErrExists)
	}
	if _, ok := s.corrupt[l.ShardID]; ok {
		return fmt.Errorf("memstore: lease %q: %w", l.ShardID, lease.ErrExists)
	}
	s.leases[l.ShardID] = storedLease(l)
	s.sorted = nil
	return nil
}

// TakeLease implements consumer.LeaseStore.
func (s *Leases) TakeLease(ctx context.Context, observed lease.Lease, owner string) (lease.Lease, error) {
	if err := lease.CheckTake(observed, owner); err != nil {
		return lease.Lease{}, fmt.Errorf("memstore: %w", err)
	}
	return s.update(ctx, "TakeLease", observed, func(l *lease.Lease) {
		l.Owner = owner
		l.Epoch++
	})
}

// ReleaseLease implements consumer.LeaseStore.
func (s *Leases) ReleaseLease(ctx context.Context, held lease.Lease, final lease.ExtendedSequenceNumber) error {
	if err := lease.CheckRelease(held, final); err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	_, err := s.update(ctx, "ReleaseLease", held, func(l *lease.Lease) {
		l.Owner = ""
		l.Epoch++
		if !final.IsZero() {
			l.Checkpoint, l.CheckpointSubSequence = final.SequenceNumber, final.SubSequenceNumber
		}
		if final.SequenceNumber == lease.ShardEnd && len(held.ChildShardIDs) > 0 {
			l.ChildShardIDs = stringSet(held.ChildShardIDs)
		}
	})
	return err
}

// Checkpoint implements consumer.LeaseStore. The epoch is unchanged.
func (s *Leases) Checkpoint(ctx context.Context, held lease.Lease, to lease.ExtendedSequenceNumber, millisBehindLatest int64) error {
	if err := lease.CheckCheckpoint(held, to); err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	_, err := s.update(ctx, "Checkpoint", held, func(l *lease.Lease) {
		l.Checkpoint, l.CheckpointSubSequence = to.SequenceNumber, to.SubSequenceNumber
		if millisBehindLatest >= 0 {
			l.MillisBehindLatest = millisBehindLatest
		}
	})
	return err
}

// DeleteLease implements consumer.LeaseStore.
func (s *Leases) DeleteLease(ctx context.Context, observed lease.Lease) error {
	_, err := s.update(ctx, "DeleteLease", observed, nil)
	return err
}

// update is every conditional write: op is counted (and may fail by injection), then the
// stored lease must still have observed's Owner and Epoch; change is applied to it, or
// with a nil change the lease is deleted. It returns the lease as written.
func (s *Leases) update(ctx context.Context, op string, observed lease.Lease, change func(*lease.Lease)) (lease.Lease, error) {
	if err := s.begin(ctx, op); err != nil {
		return lease.Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.matchLocked(observed)
	if err != nil {
		return lease.Lease{}, err
	}
	if change == nil {
		delete(s.leases, l.ShardID)
		s.sorted = nil
		return lease.Lease{}, nil
	}
	change(&l)
	s.leases[l.ShardID] = l
	return copyLease(l), nil
}

// matchLocked returns the stored lease if it still has want's Owner and Epoch. The
// returned lease shares ParentShardIDs with the stored one, which is safe because stored
// slices are never modified in place.
func (s *Leases) matchLocked(want lease.Lease) (lease.Lease, error) {
	if _, ok := s.corrupt[want.ShardID]; ok {
		// An undecodable item cannot satisfy the condition, as in DynamoDB.
		return lease.Lease{}, fmt.Errorf("memstore: lease %q (corrupt): %w", want.ShardID, lease.ErrConflict)
	}
	l, ok := s.leases[want.ShardID]
	if !ok {
		return lease.Lease{}, fmt.Errorf("memstore: lease %q does not exist: %w", want.ShardID, lease.ErrConflict)
	}
	if l.Owner != want.Owner || l.Epoch != want.Epoch {
		return lease.Lease{}, fmt.Errorf("memstore: lease %q held by %q at epoch %d, expected %q at %d: %w",
			want.ShardID, l.Owner, l.Epoch, want.Owner, want.Epoch, lease.ErrConflict)
	}
	return l, nil
}

// Put stores l unconditionally (owner and epoch included), replacing any lease or corrupt
// item with its key. It is for setting up tests and is neither counted nor subject to
// injected errors.
func (s *Leases) Put(l lease.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.corrupt, l.ShardID)
	s.leases[l.ShardID] = storedLease(l)
	s.sorted = nil
}

// PutCorrupt replaces the item at key with one that cannot be decoded: ListLeases reports
// it in Table.Corrupt, GetLease fails, conditional writes fail with lease.ErrConflict and
// CreateLease with lease.ErrExists. Put removes it.
func (s *Leases) PutCorrupt(key, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.leases, key)
	s.corrupt[key] = reason
	s.sorted = nil
}

// Lease returns the stored lease, bypassing counts and injected errors.
func (s *Leases) Lease(shardID string) (lease.Lease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[shardID]
	return copyLease(l), ok
}

// Snapshot returns the table as ListLeases would, bypassing counts and injected errors.
func (s *Leases) Snapshot() lease.Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sorted == nil {
		// The sorted key list is cached because lists vastly outnumber creates and
		// deletes in a running system.
		s.sorted = make([]string, 0, len(s.leases)+len(s.corrupt))
		for k := range s.leases {
			s.sorted = append(s.sorted, k)
		}
		for k := range s.corrupt {
			s.sorted = append(s.sorted, k)
		}
		slices.Sort(s.sorted)
	}
	t := lease.Table{Leases: make([]lease.Lease, 0, len(s.leases))}
	for _, k := range s.sorted {
		if reason, ok := s.corrupt[k]; ok {
			t.Corrupt = append(t.Corrupt, lease.CorruptItem{Key: k, Reason: reason})
			continue
		}
		t.Leases = append(t.Leases, copyLease(s.leases[k]))
	}
	return t
}

// copyLease returns l with its own ParentShardIDs and ChildShardIDs.
func copyLease(l lease.Lease) lease.Lease {
	l.ParentShardIDs = slices.Clone(l.ParentShardIDs)
	l.ChildShardIDs = slices.Clone(l.ChildShardIDs)
	return l
}

// stringSet returns ids as dynamostore reads a string set back: sorted, without
// duplicates, nil when empty.
func stringSet(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	p := slices.Clone(ids)
	slices.Sort(p)
	return slices.Compact(p)
}

// storedLease returns l as dynamostore would read it back: parents and children as sorted
// string sets (nil when empty), the start timestamp in UTC milliseconds, a hash key
// range only when both ends are known.
func storedLease(l lease.Lease) lease.Lease {
	l.ParentShardIDs = stringSet(l.ParentShardIDs)
	l.ChildShardIDs = stringSet(l.ChildShardIDs)
	if l.StartingHashKey == "" || l.EndingHashKey == "" {
		l.StartingHashKey, l.EndingHashKey = "", ""
	}
	if !l.StartTimestamp.IsZero() {
		l.StartTimestamp = time.UnixMilli(l.StartTimestamp.UnixMilli()).UTC()
	}
	return l
}

// wallTime returns t as a DynamoDB round trip does: UTC without a monotonic reading, so that
// no code comes to rely on a stored time being comparable with the local clock.
func wallTime(t time.Time) time.Time { return t.UTC() }
