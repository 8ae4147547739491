// Package kinesisstream reads a Kinesis stream through the AWS SDK for package consumer,
// in the model of package stream: it maps shards, records and positions, and wraps the
// service's errors with stream's errors (ErrThrottled, ErrExpiredIterator, ...).
package kinesisstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// KinesisAPI is the part of *kinesis.Client the adapter uses; tests substitute a fake.
type KinesisAPI interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, optFns ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, optFns ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, optFns ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
}

// maxGetRecordsLimit is the service's cap on GetRecords' Limit.
const maxGetRecordsLimit = 10000

// Kinesis reads one stream through the AWS SDK. It implements consumer.Stream.
type Kinesis struct {
	api    KinesisAPI
	stream string
}

// New returns an adapter for the named stream.
func New(api KinesisAPI, streamName string) *Kinesis {
	return &Kinesis{api: api, stream: streamName}
}

// StreamName returns the stream the adapter reads.
func (k *Kinesis) StreamName() string { return k.stream }

// ListShards returns every shard of the stream, open and closed.
func (k *Kinesis) ListShards(ctx context.Context) ([]stream.Shard, error) {
	var shards []stream.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(k.stream)}
	for {
		out, err := k.api.ListShards(ctx, in)
		if err != nil {
			return nil, k.wrap("ListShards", err)
		}
		for _, s := range out.Shards {
			sh := stream.Shard{
				ID:                    aws.ToString(s.ShardId),
				ParentShardID:         aws.ToString(s.ParentShardId),
				AdjacentParentShardID: aws.ToString(s.AdjacentParentShardId),
				Closed:                s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil,
			}
			if r := s.HashKeyRange; r != nil {
				sh.StartingHashKey, sh.EndingHashKey = aws.ToString(r.StartingHashKey), aws.ToString(r.EndingHashKey)
			}
			shards = append(shards, sh)
		}
		if aws.ToString(out.NextToken) == "" {
			return shards, nil
		}
		// The service rejects StreamName together with NextToken.
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// GetShardIterator returns an iterator for the shard at pos.
func (k *Kinesis) GetShardIterator(ctx context.Context, shardID string, pos stream.Position) (string, error) {
	in := &kinesis.GetShardIteratorInput{
		StreamName:        aws.String(k.stream),
		ShardId:           aws.String(shardID),
		ShardIteratorType: types.ShardIteratorType(pos.Type),
	}
	switch pos.Type {
	case stream.TrimHorizon, stream.Latest:
	case stream.AtSequenceNumber, stream.AfterSequenceNumber:
		if pos.SequenceNumber == "" {
			return "", fmt.Errorf("shard iterator %s for shard %s: no sequence number", pos.Type, shardID)
		}
		in.StartingSequenceNumber = aws.String(pos.SequenceNumber)
	case stream.AtTimestamp:
		if pos.Timestamp.IsZero() {
			return "", fmt.Errorf("shard iterator %s for shard %s: no timestamp", pos.Type, shardID)
		}
		in.Timestamp = aws.Time(pos.Timestamp)
	default:
		return "", fmt.Errorf("shard iterator for shard %s: unknown position type %q", shardID, pos.Type)
	}
	out, err := k.api.GetShardIterator(ctx, in)
	if err != nil {
		return "", k.wrap("GetShardIterator "+shardID, err)
	}
	return aws.ToString(out.ShardIterator), nil
}

// GetRecords reads up to limit records at iterator (the service maximum if limit <= 0).
func (k *Kinesis) GetRecords(ctx context.Context, iterator string, limit int) (stream.Batch, error) {
	in := &kinesis.GetRecordsInput{ShardIterator: aws.String(iterator)}
	if limit > 0 {
		in.Limit = aws.Int32(int32(min(limit, maxGetRecordsLimit)))
	}
	out, err := k.api.GetRecords(ctx, in)
	if err != nil {
		return stream.Batch{}, k.wrap("GetRecords", err)
	}
	b := stream.Batch{
		NextIterator:       aws.ToString(out.NextShardIterator),
		MillisBehindLatest: aws.ToInt64(out.MillisBehindLatest),
	}
	if len(out.Records) > 0 {
		b.Records = make([]stream.Record, len(out.Records))
		for i, r := range out.Records {
			b.Records[i] = stream.Record{
				SequenceNumber:              aws.ToString(r.SequenceNumber),
				PartitionKey:                aws.ToString(r.PartitionKey),
				Data:                        r.Data,
				ApproximateArrivalTimestamp: aws.ToTime(r.ApproximateArrivalTimestamp),
			}
		}
	}
	for _, c := range out.ChildShards {
		b.ChildShards = append(b.ChildShards, stream.ChildShard{ShardID: aws.ToString(c.ShardId), ParentShardIDs: c.ParentShards})
	}
	return b, nil
}

// ErrStreamCreating is returned by CheckStream while the stream is being created.
var ErrStreamCreating = errors.New("kinesis stream is being created")

// CheckStream verifies the stream exists, is not being created and can be described,
// with an error that says what to do about it: the usual start-up mistakes are a wrong
// name, region or endpoint. A missing stream wraps stream.ErrStreamNotFound, one being
// created ErrStreamCreating.
func (k *Kinesis) CheckStream(ctx context.Context) error {
	out, err := k.api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(k.stream)})
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("check stream %q: %w", k.stream, err)
	case err != nil:
		err = k.wrap("DescribeStreamSummary", err)
		switch {
		case errors.Is(err, stream.ErrStreamNotFound):
			return fmt.Errorf("stream %q not found%s: create it or set STREAM_NAME: %w", k.stream, k.where(), err)
		case errors.Is(err, stream.ErrAccessDenied):
			return fmt.Errorf("cannot describe stream %q%s: check the credentials and their kinesis permissions: %w", k.stream, k.where(), err)
		default:
			return fmt.Errorf("cannot reach stream %q%s: %w", k.stream, k.where(), err)
		}
	}
	if d := out.StreamDescriptionSummary; d != nil && d.StreamStatus == types.StreamStatusCreating {
		return fmt.Errorf("stream %q%s is still being created: %w", k.stream, k.where(), ErrStreamCreating)
	}
	return nil
}

// where describes the region and endpoint the client talks to (with a leading space), or
// is empty when it cannot tell.
func (k *Kinesis) where() string {
	c, ok := k.api.(interface{ Options() kinesis.Options })
	if !ok {
		return ""
	}
	o := c.Options()
	s := " in region " + o.Region
	if ep := aws.ToString(o.BaseEndpoint); ep != "" {
		s += " at endpoint " + ep
	} else {
		s += " at the AWS endpoint"
	}
	return s
}

// wrap adds the stream, the operation and, for the errors the consumer reacts to, the
// matching sentinel; the service's error stays in the chain for its message and errors.As.
func (k *Kinesis) wrap(op string, err error) error { return wrapFor(k.stream, op, err) }

// wrapFor names the operation and stream of a failed call and wraps the error's stream
// sentinel, if any.
func wrapFor(streamName, op string, err error) error {
	if sentinel := classify(err); sentinel != nil {
		return fmt.Errorf("kinesis %s on stream %q: %w: %w", op, streamName, sentinel, err)
	}
	return fmt.Errorf("kinesis %s on stream %q: %w", op, streamName, err)
}

// classify maps a service error to a sentinel. It matches error codes, which covers both
// the SDK's typed errors (they implement smithy.APIError) and codes the SDK does not model
// for this operation (AccessDenied arrives as a generic error).
func classify(err error) error {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return nil
	}
	switch apiErr.ErrorCode() {
	case "ProvisionedThroughputExceededException", "LimitExceededException", "KMSThrottlingException",
		"ThrottlingException", "Throttling", "RequestLimitExceeded":
		return stream.ErrThrottled
	case "ExpiredIteratorException":
		return stream.ErrExpiredIterator
	case "ResourceNotFoundException":
		return stream.ErrStreamNotFound
	case "AccessDeniedException", "AccessDenied", "KMSAccessDeniedException", "UnrecognizedClientException",
		"InvalidSignatureException", "ExpiredTokenException", "MissingAuthenticationTokenException",
		"IncompleteSignatureException", "InvalidClientTokenId", "NotAuthorized":
		return stream.ErrAccessDenied
	}
	return nil
}
