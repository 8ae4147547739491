package consumer

import (
	"context"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
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
	// CheckpointSubSequenceNumber is, with a sequence number, the last user record of a
	// KPL aggregate processed: processing starts at the aggregate's next user record (0
	// for a plain record).
	CheckpointSubSequenceNumber int64
	// Epoch changes whenever the lease changes hands. Applications that write
	// elsewhere can store it with their writes and refuse writes from an older epoch, the
	// same fencing the worker applies to checkpoints.
	Epoch          int64
	ParentShardIDs []string
}

// ProcessRecordsInput is one batch of records. Records in the Kinesis Producer Library's
// aggregated format arrive split into their user records (package kpl), each with the
// Kinesis record's sequence number and its own SubSequenceNumber.
type ProcessRecordsInput struct {
	ShardID            string
	Epoch              int64
	Records            []stream.Record
	MillisBehindLatest int64
	Checkpointer       Checkpointer
}

// Checkpointer records a shard's progress, fenced by the lease: a checkpoint is accepted
// only while this worker still holds the lease at the epoch it was taken with.
//
// A checkpoint is a position (sequence number, sub-sequence number), stored like the
// KCL's (checkpoint and checkpointSubSequenceNumber in the lease item) and ordered like
// its ExtendedSequenceNumber. The next owner resumes right after it: a checkpoint in the
// middle of a KPL aggregate resumes at the aggregate's next user record.
type Checkpointer interface {
	// Checkpoint records that every record up to and including the Kinesis record
	// sequenceNumber was processed: for an aggregate delivered to this processor, all
	// its user records (the aggregate's last sub-sequence number is stored, so that the
	// KCL reading the table resumes after it too). It returns an error matching
	// ErrLeaseLost when the lease was lost, and ErrCheckpointBackwards when the
	// checkpoint is before the last one.
	Checkpoint(ctx context.Context, sequenceNumber string) error
	// CheckpointRecord records that every record up to and including rec was processed:
	// for a user record of an aggregate, the user records before it and itself, not the
	// ones after it. For a plain record it is Checkpoint(rec.SequenceNumber). Errors as
	// for Checkpoint.
	CheckpointRecord(ctx context.Context, rec stream.Record) error
	// LastCheckpoint returns the sequence number (or special value) of the last
	// checkpoint written by this lease holder, or of the one the lease was taken at.
	LastCheckpoint() string
	// LastExtendedSequenceNumber returns the last checkpoint (as LastCheckpoint) with its
	// sub-sequence number.
	LastExtendedSequenceNumber() lease.ExtendedSequenceNumber
}
