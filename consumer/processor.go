package consumer

import (
	"context"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// RecordProcessor is the application's code for one shard. A Worker creates one per lease
// it takes (through a ProcessorFactory) and calls it from a single goroutine: Initialize
// once, ProcessRecords for every non-empty batch in order, then exactly one of ShardEnded,
// ShutdownRequested or LeaseLost.
type RecordProcessor interface {
	// Initialize is called before the first batch. An error releases the lease.
	Initialize(ctx context.Context, in InitializeInput) error
	// ProcessRecords handles one batch. It should checkpoint (through in.Checkpointer)
	// when its effects are durable. An error makes the worker retry the same batch after
	// a back-off: records are never skipped.
	ProcessRecords(ctx context.Context, in ProcessRecordsInput) error
	// ShardEnded is called after the last record of a closed shard (split or merge). When
	// it returns nil the worker records SHARD_END, and the shard's children may start.
	ShardEnded(ctx context.Context, cp Checkpointer) error
	// ShutdownRequested is called when the worker gives the lease up on purpose
	// (rebalancing or shutdown) after the in-flight batch: checkpoint here so that the
	// next owner starts exactly after the last processed record.
	ShutdownRequested(ctx context.Context, cp Checkpointer) error
	// LeaseLost is called when the lease was lost (taken by another worker, or this worker
	// could not renew in time). Checkpointing is no longer possible.
	LeaseLost(ctx context.Context)
}

// ProcessorFactory makes a RecordProcessor for a shard.
type ProcessorFactory func(shardID string) RecordProcessor

// InitializeInput describes the lease a processor starts on.
type InitializeInput struct {
	ShardID string
	// Checkpoint is where processing starts: a sequence number (processing starts after
	// it), TRIM_HORIZON, LATEST or AT_TIMESTAMP.
	Checkpoint string
	// Epoch changes whenever the lease changes hands. Applications that write
	// elsewhere can store it with their writes and refuse writes from an older epoch, the
	// same fencing the worker applies to checkpoints.
	Epoch          int64
	ParentShardIDs []string
}

// ProcessRecordsInput is one batch of records.
type ProcessRecordsInput struct {
	ShardID            string
	Epoch              int64
	Records            []stream.Record
	MillisBehindLatest int64
	Checkpointer       Checkpointer
}

// Checkpointer records a shard's progress, fenced by the lease: a checkpoint is accepted
// only while this worker still holds the lease at the epoch it was taken with.
type Checkpointer interface {
	// Checkpoint records that every record up to and including sequenceNumber was
	// processed. It returns an error matching ErrLeaseLost when the lease was lost, and
	// ErrCheckpointBackwards when sequenceNumber is before the last checkpoint.
	Checkpoint(ctx context.Context, sequenceNumber string) error
	// LastCheckpoint returns the last checkpoint written by this lease holder, or the
	// one the lease was taken at.
	LastCheckpoint() string
}
