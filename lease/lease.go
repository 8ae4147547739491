// Package lease holds the data model shared by the lease manager and its stores: a lease
// per shard, one record per worker, and the coordinator record, plus the errors a store
// returns and the max-leases formula.
//
// The model is storage-neutral. The DynamoDB layout (table names, attribute names) lives in
// package dynamostore; package memstore keeps the same model in memory for tests and the
// simulator (internal/sim); package storetest checks that both keep one contract.
package lease

import (
	"errors"
	"fmt"
	"time"
)

// Special checkpoint values. Any other checkpoint is a Kinesis sequence number.
const (
	TrimHorizon = "TRIM_HORIZON"
	Latest      = "LATEST"
	AtTimestamp = "AT_TIMESTAMP"
	ShardEnd    = "SHARD_END"
)

// Errors returned by stores. Callers test them with errors.Is.
var (
	// ErrConflict means a conditional write failed: someone else changed the item since
	// it was read (another owner took the lease, another worker claimed the coordinator role).
	ErrConflict = errors.New("conditional write failed: item changed by another worker")
	// ErrNotFound means the item does not exist.
	ErrNotFound = errors.New("item not found")
	// ErrExists means a create found the item already there.
	ErrExists = errors.New("item already exists")
	// ErrTableNotFound means a table does not exist (any more): nothing can be fenced or
	// recorded, so a worker stops acting on its leases.
	ErrTableNotFound = errors.New("table not found")
)

// Argument checks that every store makes before any request: an error from one is none
// of the store errors above (the caller passed a wrong argument); a store prefixes its name.

// CheckCreate checks the arguments of CreateLease: a shard id and a checkpoint.
func CheckCreate(l Lease) error {
	if l.ShardID == "" {
		return errors.New("CreateLease: empty shard id")
	}
	if l.Checkpoint == "" {
		return fmt.Errorf("CreateLease %q: empty checkpoint", l.ShardID)
	}
	return nil
}

// CheckTake checks the arguments of TakeLease: an owner.
func CheckTake(observed Lease, owner string) error {
	if owner == "" {
		return fmt.Errorf("TakeLease %q: empty owner", observed.ShardID)
	}
	return nil
}

// CheckRelease checks the arguments of ReleaseLease: a held lease has an owner, and the
// final checkpoint, unless zero (none), has no negative sub-sequence number.
func CheckRelease(held Lease, final ExtendedSequenceNumber) error {
	if held.Owner == "" {
		return fmt.Errorf("ReleaseLease %q: lease has no owner", held.ShardID)
	}
	if !final.IsZero() && final.SubSequenceNumber < 0 {
		return fmt.Errorf("ReleaseLease %q: negative sub-sequence number in checkpoint %s", held.ShardID, final)
	}
	return nil
}

// CheckCheckpoint checks the arguments of Checkpoint: a held lease has an owner, and the
// checkpoint is not zero and has no negative sub-sequence number.
func CheckCheckpoint(held Lease, to ExtendedSequenceNumber) error {
	if held.Owner == "" {
		return fmt.Errorf("Checkpoint %q: lease has no owner", held.ShardID)
	}
	if to.IsZero() {
		return fmt.Errorf("Checkpoint %q: empty checkpoint", held.ShardID)
	}
	if to.SubSequenceNumber < 0 {
		return fmt.Errorf("Checkpoint %q: negative sub-sequence number in checkpoint %s", held.ShardID, to)
	}
	return nil
}

// Lease is one shard's lease.
type Lease struct {
	// ShardID is the lease key.
	ShardID string
	// Owner is the worker that holds the lease; empty when the lease is free.
	Owner string
	// Epoch is the fencing epoch: it changes on every change of ownership (take, release),
	// and checkpoints are accepted only from Owner at this Epoch. DynamoDB stores it as
	// leaseCounter, the KCL's attribute name.
	Epoch int64
	// Checkpoint is a sequence number, or TrimHorizon, Latest, AtTimestamp or ShardEnd.
	Checkpoint string
	// CheckpointSubSequence is, with a sequence number in Checkpoint, the sub-sequence
	// number of the last user record processed of a KPL aggregate (package kpl): the
	// checkpoint is the pair (see ExtendedSequenceNumber, which method
	// ExtendedSequenceNumber returns), and everything up to and including it was processed. 0 for a plain record. DynamoDB
	// stores it as checkpointSubSequenceNumber, the KCL's attribute name.
	CheckpointSubSequence int64
	// StartTimestamp is the position for a lease created at AtTimestamp.
	StartTimestamp time.Time
	// ParentShardIDs are the shards that must reach ShardEnd before this one is processed
	// (one after a split, two after a merge).
	ParentShardIDs []string
	// MillisBehindLatest is how far behind the tip of the shard the owner was at its last
	// checkpoint (0 also before the first one). For operators; no decision uses it.
	MillisBehindLatest int64
	// ChildShardIDs are the shards this one was split or merged into, recorded with its
	// SHARD_END checkpoint when the reader learnt them (ReleaseLease at ShardEnd writes
	// the held lease's ChildShardIDs). They are kept so that the KCL can take the lease
	// table back (its childShardIds); no decision here uses them: children name their
	// parents.
	ChildShardIDs []string
	// StartingHashKey and EndingHashKey are the shard's range of hash keys (decimal
	// strings, both included), recorded when the lease is created from a shard listing
	// that had them; empty when unknown. Kept for the KCL (its hashKeyRangeForLease); no
	// decision here uses them.
	StartingHashKey, EndingHashKey string
}

// ExtendedSequenceNumber returns the lease's checkpoint: Checkpoint with
// CheckpointSubSequence.
func (l Lease) ExtendedSequenceNumber() ExtendedSequenceNumber {
	return ExtendedSequenceNumber{SequenceNumber: l.Checkpoint, SubSequenceNumber: l.CheckpointSubSequence}
}

// Finished reports whether the shard was processed to its end.
func (l Lease) Finished() bool { return l.Checkpoint == ShardEnd }

// WorkerState is the life-cycle state a worker publishes.
type WorkerState string

// Worker states.
const (
	WorkerActive WorkerState = "active"
	// WorkerGone is written by a worker that shut down cleanly after releasing its leases.
	WorkerGone WorkerState = "gone"
)

// WorkerRecord is a worker's item in the metadata table.
type WorkerRecord struct {
	WorkerID string
	// Incarnation identifies one run of the worker process; a restarted worker with the
	// same id has a new incarnation.
	Incarnation string
	// Heartbeat increases with every renewal. Observers decide liveness by seeing it change.
	Heartbeat  int64
	State      WorkerState
	LeasesHeld int
	// LastSeen and StartedAt are wall-clock times for people; no decision uses them.
	LastSeen  time.Time
	StartedAt time.Time
}

// CoordinatorRecord is the coordinator item in the metadata table.
type CoordinatorRecord struct {
	// CoordinatorID is the worker that holds the role; empty after a clean resignation.
	CoordinatorID string
	// Epoch changes whenever the role changes hands.
	Epoch int64
	// Version increases with every write of the record: claims, updates, resignations.
	Version int64
	// MaxLeasesPerWorker is min(cap, ceil(ShardCount / WorkerCount)), or the static value
	// when dynamic max leases is disabled.
	MaxLeasesPerWorker int
	// TargetLeasesPerWorker is what workers obey: MaxLeasesPerWorker, raised (never above
	// the cap) while fewer workers are live than WorkerCount says, so that a missing
	// worker's shards do not wait for it.
	TargetLeasesPerWorker int
	// ShardCount is the number of open shards.
	ShardCount int
	// WorkerCount is the desired number of workers (static, Kubernetes replicas or live).
	WorkerCount int
	// LiveWorkers is the number of workers whose heartbeats are fresh.
	LiveWorkers int
	// Cap is the configured upper bound on leases per worker.
	Cap int
	// UnownedShards is how many open shards no worker may take under the cap.
	UnownedShards int
	// RecommendedWorkers is the smallest worker count that leaves no shard unowned.
	RecommendedWorkers int
	// LeaseGeneration increases whenever the coordinator created or removed leases.
	LeaseGeneration int64
	// The membership view, published by the coordinator on every pass so that workers
	// read this one item instead of every worker's record (see package consumer):
	// DeadWorkers are the workers the coordinator judged gone or expired on its own reads,
	// sorted by id; OwnedLeases is the sum of the leases live workers report holding. A
	// claim or a resignation clears DeadWorkers: every version that lists a dead worker
	// was computed from a read of the metadata table that started after the version
	// before it was written.
	DeadWorkers []DeadWorker
	OwnedLeases int
	// RecheckWorkers are live workers that report running more leases than the lease
	// table gives them, on two of the coordinator's reads of it in a row: a lease was
	// taken from them (an operator, a process sharing the worker id) while it delivered
	// nothing. Each confirms its leases when it reads its id here. Sorted.
	RecheckWorkers []string
	// WaitingParents is how many closed shards, ready to be read (their own parents
	// finished), were free or a dead worker's on the coordinator's last two reads of the
	// lease table: their children wait for them. Workers at their target read the lease
	// table while it is above zero and trade a lease of an open shard for one of them (at
	// the cap every worker is at its target, and nobody else would take them).
	WaitingParents int
	// CoordinatorIncarnation and CoordinatorHeartbeat are the coordinator's own record as
	// its pass read it: workers that read only this item see the coordinator's heartbeat
	// change, so that when it stops they judge it from its last heartbeat, not from when
	// they began reading its record.
	CoordinatorIncarnation string
	CoordinatorHeartbeat   int64
	// InitialPosition and InitialTimestamp are where the application started reading,
	// recorded once by the first coordinator and never changed: TrimHorizon, or
	// AtTimestamp with the timestamp (the application's first start, for Latest). Every
	// lease the coordinator creates starts there, so a later shard sync (a new
	// coordinator, a restart, a reshard) never reads what the first start skipped.
	// Empty until recorded.
	InitialPosition  string
	InitialTimestamp time.Time
	// UpdatedAt is a wall-clock time for people; no decision uses it.
	UpdatedAt time.Time
}

// DeadWorker is a worker the coordinator judged dead, with its record as the judging read
// returned it (Incarnation empty: it had no record). A record still the same on a later
// read shows the worker has not renewed since: it is still dead.
type DeadWorker struct {
	WorkerID    string
	Incarnation string
	Heartbeat   int64
}

// DeadWorkerIDs returns the ids of r's dead workers as a set.
func (r *CoordinatorRecord) DeadWorkerIDs() map[string]bool {
	ids := make(map[string]bool, len(r.DeadWorkers))
	for _, d := range r.DeadWorkers {
		ids[d.WorkerID] = true
	}
	return ids
}

// CorruptItem describes a stored item that could not be decoded. Stores report such items
// instead of failing the whole read, so one bad item never stops a worker.
type CorruptItem struct {
	Key    string
	Reason string
}

func (c CorruptItem) String() string { return fmt.Sprintf("%s: %s", c.Key, c.Reason) }

// Table is the lease table as read at one moment.
type Table struct {
	Leases  []Lease
	Corrupt []CorruptItem
}

// Meta is the metadata table as read at one moment.
type Meta struct {
	Workers     []WorkerRecord
	Coordinator *CoordinatorRecord // nil until a coordinator first wrote it
	Corrupt     []CorruptItem
}

// Index is a Table indexed for the rules every reader of the lease table applies: the
// workers deciding what to take, and kdsctl describing what they will do.
type Index struct {
	byID       map[string]Lease
	corrupt    map[string]bool
	openParent map[string]bool
	children   map[string][]string // parent -> the leases that name it
}

// Index indexes t.
func (t Table) Index() Index {
	x := Index{
		byID:       make(map[string]Lease, len(t.Leases)),
		corrupt:    make(map[string]bool, len(t.Corrupt)),
		openParent: make(map[string]bool),
		children:   make(map[string][]string),
	}
	for _, l := range t.Leases {
		x.byID[l.ShardID] = l
		for _, p := range l.ParentShardIDs {
			x.children[p] = append(x.children[p], l.ShardID)
			if !l.Finished() {
				x.openParent[p] = true
			}
		}
	}
	for _, c := range t.Corrupt {
		x.corrupt[c.Key] = true
	}
	return x
}

// Lease returns the lease of shardID, if the table has a readable one.
func (x Index) Lease(shardID string) (Lease, bool) {
	l, ok := x.byID[shardID]
	return l, ok
}

// Corrupt reports whether the table holds an unreadable item under key.
func (x Index) Corrupt(key string) bool { return x.corrupt[key] }

// IsOpenParent reports whether shardID is a parent of a lease that has not finished: a
// shard being closed by a reshard, whose children wait for it.
func (x Index) IsOpenParent(shardID string) bool { return x.openParent[shardID] }

// WaitingParent reports whether l is the lease of a closed shard whose children wait for
// it and which may be read now: unfinished, a parent of another lease, and its own
// parents finished. The coordinator counts such leases (CoordinatorRecord.WaitingParents)
// and workers at their target trade open shards for them.
func (x Index) WaitingParent(l Lease) bool {
	return !l.Finished() && x.IsOpenParent(l.ShardID) && x.ParentsFinished(l)
}

// ParentsFinished reports whether every parent of l reached SHARD_END, so that l may be
// processed. A parent with no lease is finished: leases are created parents first, so it
// aged out of the stream. A parent whose item is corrupt is not: nothing proves it ended.
func (x Index) ParentsFinished(l Lease) bool {
	for _, p := range l.ParentShardIDs {
		if pl, ok := x.byID[p]; x.corrupt[p] || ok && !pl.Finished() {
			return false
		}
	}
	return true
}

// Outgrown reports whether the lease of shardID can be deleted because no decision needs
// it any more: it finished, it has children (those whose leases name it, and
// streamChildren, the shards the stream lists as its children), and every child has a
// lease. A missing parent counts as finished (see ParentsFinished), which it is; and a
// shard sync creates leases only for open shards and their ancestors up to the first one
// with a lease, so a parent whose children all have leases is never created again. (The
// KCL waits for every child to checkpoint past its start, because its shard sync could
// otherwise create the parent again; with this sync rule that would only keep the
// parents of idle children for good.) A child without a lease, or with a corrupt one,
// keeps the parent.
func (x Index) Outgrown(shardID string, streamChildren []string) bool {
	l, ok := x.byID[shardID]
	if !ok || !l.Finished() {
		return false
	}
	kids := append(append([]string(nil), x.children[shardID]...), streamChildren...)
	if len(kids) == 0 {
		return false
	}
	for _, k := range kids {
		if _, ok := x.byID[k]; !ok || x.corrupt[k] {
			return false
		}
	}
	return true
}
