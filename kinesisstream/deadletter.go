package kinesisstream

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// PutRecordsAPI is the part of *kinesis.Client a DeadLetterStream uses.
type PutRecordsAPI interface {
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// putRecordsMax is the most records one PutRecords call takes.
const putRecordsMax = 500

// DeadLetterStream puts the records of batches a processor kept failing on onto another
// Kinesis stream, each with its own data and partition key (and explicit hash key), so
// that they can be read, fixed and replayed with the same processor. It implements
// consumer.DeadLetter; where a record came from and why it failed is in the worker's log
// line for the batch.
type DeadLetterStream struct {
	// API writes the records: a *kinesis.Client.
	API PutRecordsAPI
	// Stream names the dead-letter stream, which must exist.
	Stream string
}

// Put writes records, at most putRecordsMax per call, and writes again those the service
// failed (throttled) until every one is in. It returns the first call that failed: the
// caller retries the whole batch, and a record may then be written twice.
func (d *DeadLetterStream) Put(ctx context.Context, shardID string, records []stream.Record, _ error) error {
	pending := make([]types.PutRecordsRequestEntry, 0, len(records))
	for _, r := range records {
		e := types.PutRecordsRequestEntry{Data: r.Data, PartitionKey: aws.String(r.PartitionKey)}
		if r.ExplicitHashKey != "" {
			e.ExplicitHashKey = aws.String(r.ExplicitHashKey)
		}
		pending = append(pending, e)
	}
	for len(pending) > 0 {
		n := min(len(pending), putRecordsMax)
		out, err := d.API.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(d.Stream), Records: pending[:n]})
		if err != nil {
			return fmt.Errorf("dead-letter: %d records of shard %s: %w", n, shardID, wrapFor(d.Stream, "PutRecords", err))
		}
		var failed []types.PutRecordsRequestEntry
		for i, res := range out.Records {
			if res.ErrorCode != nil {
				failed = append(failed, pending[i])
			}
		}
		if len(failed) == n {
			return fmt.Errorf("dead-letter stream %q: every one of %d records of shard %s failed: %s", d.Stream, n, shardID, aws.ToString(out.Records[0].ErrorMessage))
		}
		pending = append(failed, pending[n:]...)
	}
	return nil
}
