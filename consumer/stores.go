package consumer

import (
	"context"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// LeaseStore keeps the lease table. Package dynamostore implements it on DynamoDB and
// package memstore in memory. Every write that changes ownership or progress is
// conditional; a lost condition is reported as lease.ErrConflict.
type LeaseStore interface {
	// ListLeases reads the whole lease table. Items that cannot be decoded are returned in
	// Table.Corrupt, not as an error.
	ListLeases(ctx context.Context) (lease.Table, error)
	// GetLease reads one lease; lease.ErrNotFound if it does not exist.
	GetLease(ctx context.Context, shardID string) (lease.Lease, error)
	// CreateLease creates a free lease if none exists for the shard; lease.ErrExists otherwise.
	CreateLease(ctx context.Context, l lease.Lease) error
	// TakeLease makes owner the owner of the lease, provided the stored lease still has the
	// observed Owner and Epoch. It increments the epoch and returns the new lease.
	TakeLease(ctx context.Context, observed lease.Lease, owner string) (lease.Lease, error)
	// ReleaseLease frees the lease, provided it still has held's Owner and Epoch. It
	// increments the epoch. A final checkpoint that is not zero is written in the same
	// operation; the zero lease.ExtendedSequenceNumber leaves the checkpoint as it is.
	// With a final checkpoint of lease.ShardEnd, held's ChildShardIDs, when it has any,
	// are recorded too (for the KCL; see lease.Lease.ChildShardIDs).
	ReleaseLease(ctx context.Context, held lease.Lease, final lease.ExtendedSequenceNumber) error
	// Checkpoint records progress: it sets the lease's checkpoint to to (not zero),
	// provided the lease still has held's Owner and Epoch, with the reader's lag behind
	// the tip of the shard (negative: unknown, not written).
	Checkpoint(ctx context.Context, held lease.Lease, to lease.ExtendedSequenceNumber, millisBehindLatest int64) error
	// DeleteLease removes the lease, provided it still has observed's Owner and Epoch
	// (lease.ErrConflict otherwise, also when it is already gone).
	DeleteLease(ctx context.Context, observed lease.Lease) error
}

// MetaStore keeps the metadata table: one record per worker and the coordinator record.
type MetaStore interface {
	// ReadMeta reads the whole metadata table in one pass. Items that cannot be decoded are
	// returned in Meta.Corrupt, not as an error.
	ReadMeta(ctx context.Context) (lease.Meta, error)
	// ReadMetaItems reads the coordinator item and the records of workerIDs (absent ones
	// are left out), strongly consistent or eventually consistent as asked; it is the
	// cheap read of workers that do not hold the coordinator role. Items that cannot be
	// decoded are returned in Meta.Corrupt.
	ReadMetaItems(ctx context.Context, workerIDs []string, consistent bool) (lease.Meta, error)
	// PutWorker writes the worker's own record (unconditionally: only its worker writes it).
	PutWorker(ctx context.Context, w lease.WorkerRecord) error
	// ClaimCoordinator makes workerID the coordinator, provided the coordinator record is
	// still as observed (nil: it must not exist yet, or be unreadable: without a usable
	// epoch and coordinator id, which no other claim could match). It increments the epoch
	// and the version, clears DeadWorkers and keeps the other values. It returns the
	// record as written.
	ClaimCoordinator(ctx context.Context, workerID string, observed *lease.CoordinatorRecord) (lease.CoordinatorRecord, error)
	// UpdateCoordinator writes rec's values, provided the stored record still has rec's
	// CoordinatorID, Epoch and Version. It increments the version and returns the record
	// as written.
	UpdateCoordinator(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error)
	// ResignCoordinator clears the coordinator id and DeadWorkers and increments the
	// version, provided the stored record still has rec's CoordinatorID and Epoch, so
	// another worker can claim the role at once.
	ResignCoordinator(ctx context.Context, rec lease.CoordinatorRecord) error
	// DeleteWorker removes a worker's record, provided its heartbeat is still
	// observedHeartbeat (lease.ErrConflict otherwise, also when it is already gone).
	DeleteWorker(ctx context.Context, workerID string, observedHeartbeat int64) error
}

// Stream reads one Kinesis stream. Package stream adapts the AWS SDK to it.
type Stream interface {
	// ListShards returns every shard of the stream, open and closed.
	ListShards(ctx context.Context) ([]stream.Shard, error)
	// GetShardIterator returns an iterator for the shard at pos.
	GetShardIterator(ctx context.Context, shardID string, pos stream.Position) (string, error)
	// GetRecords reads up to limit records at iterator.
	GetRecords(ctx context.Context, iterator string, limit int) (stream.Batch, error)
}
