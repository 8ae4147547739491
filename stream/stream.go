// Package stream is the Kinesis side of the lease manager: the shard and record model the
// consumer works with and the errors it reacts to. It imports no AWS code: the adapter
// over the AWS SDK's Kinesis client is package kinesisstream, and package memstore has a
// stream in memory.
package stream

import (
	"errors"
	"time"
)

// Errors the consumer reacts to. Adapters wrap the service's error with one of these so
// callers can test with errors.Is and still print the original message.
var (
	// ErrThrottled is ProvisionedThroughputExceeded / LimitExceeded: back off and retry.
	ErrThrottled = errors.New("kinesis throttled the request")
	// ErrExpiredIterator means the shard iterator is older than five minutes: get a new one.
	ErrExpiredIterator = errors.New("kinesis shard iterator expired")
	// ErrStreamNotFound means the stream (or shard) does not exist.
	ErrStreamNotFound = errors.New("kinesis stream or shard not found")
	// ErrAccessDenied means the credentials may not perform the call.
	ErrAccessDenied = errors.New("access to kinesis denied")
)

// Shard is one shard of the stream.
type Shard struct {
	ID                    string
	ParentShardID         string
	AdjacentParentShardID string
	// Closed is true when the shard has an ending sequence number (it was split or merged).
	Closed bool
	// StartingHashKey and EndingHashKey are the shard's range of hash keys (decimal
	// strings, both included), as ListShards returns them; empty when unknown.
	StartingHashKey string
	EndingHashKey   string
}

// Parents returns the shard's parent ids (zero, one or two).
func (s Shard) Parents() []string {
	var p []string
	for _, id := range []string{s.ParentShardID, s.AdjacentParentShardID} {
		if id != "" {
			p = append(p, id)
		}
	}
	return p
}

// Record is one Kinesis record, or one user record of a Kinesis record in the Kinesis
// Producer Library's aggregated format (package kpl): the consumer splits aggregates
// before a processor sees them. (SequenceNumber, SubSequenceNumber) orders user records
// like the KCL's ExtendedSequenceNumber.
type Record struct {
	SequenceNumber              string
	PartitionKey                string
	Data                        []byte
	ApproximateArrivalTimestamp time.Time
	// SubSequenceNumber is a user record's place in its aggregate (0, 1, ...); 0 for a
	// plain record.
	SubSequenceNumber int64
	// ExplicitHashKey is a user record's explicit hash key from its aggregate, if any.
	ExplicitHashKey string
	// Aggregated is true for a user record taken out of an aggregate.
	Aggregated bool
}

// ChildShard is a shard that follows a closed shard, as GetRecords reports at the shard's end.
type ChildShard struct {
	ShardID        string
	ParentShardIDs []string
}

// Batch is the result of one GetRecords call.
type Batch struct {
	Records []Record
	// NextIterator is empty when the shard is closed and every record was read.
	NextIterator       string
	MillisBehindLatest int64
	// ChildShards is set at the end of a closed shard.
	ChildShards []ChildShard
}

// PositionType says where a shard iterator starts.
type PositionType string

// Iterator positions.
const (
	TrimHorizon         PositionType = "TRIM_HORIZON"
	Latest              PositionType = "LATEST"
	AtTimestamp         PositionType = "AT_TIMESTAMP"
	AfterSequenceNumber PositionType = "AFTER_SEQUENCE_NUMBER"
	AtSequenceNumber    PositionType = "AT_SEQUENCE_NUMBER"
)

// Position is a starting position for a shard iterator.
type Position struct {
	Type           PositionType
	SequenceNumber string    // for AfterSequenceNumber and AtSequenceNumber
	Timestamp      time.Time // for AtTimestamp
}
