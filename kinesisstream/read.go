package kinesisstream

import (
	"context"
	"errors"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// ReadShard reads a shard from TRIM_HORIZON: a closed shard to its end, an open one until
// it is caught up. It backs off on throttling and renews an expired iterator after the
// last record read. It is for tools that must see everything a shard holds (verifiers),
// not for consumers, which read through leases.
func (k *Kinesis) ReadShard(ctx context.Context, sh stream.Shard) ([]stream.Record, error) {
	pos := stream.Position{Type: stream.TrimHorizon}
	it, err := k.GetShardIterator(ctx, sh.ID, pos)
	if err != nil {
		return nil, err
	}
	var recs []stream.Record
	backoff := 100 * time.Millisecond
	for it != "" {
		b, err := k.GetRecords(ctx, it, 0)
		switch {
		case errors.Is(err, stream.ErrThrottled):
			// Five reads per second per shard: wait and read again.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		case errors.Is(err, stream.ErrExpiredIterator):
			if n := len(recs); n > 0 {
				pos = stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: recs[n-1].SequenceNumber}
			}
			if it, err = k.GetShardIterator(ctx, sh.ID, pos); err != nil {
				return nil, err
			}
			continue
		case err != nil:
			return nil, err
		}
		recs = append(recs, b.Records...)
		if len(b.Records) == 0 && b.MillisBehindLatest == 0 && !sh.Closed {
			break // an open shard never ends: stop once caught up
		}
		it = b.NextIterator
	}
	return recs, nil
}
