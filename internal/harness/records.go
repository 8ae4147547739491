package harness

import (
	"context"
	"fmt"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
)

// Delivery is one line of a worker's record log: one record processed once.
type Delivery = recordlog.Line

// Produced is a record found in the stream, with the producer's payload.
type Produced = delivery.Record

// ReadRecordLogs parses every *.jsonl file in dir. A last line without its newline was
// being written when its worker was killed and is skipped; any other bad line is an error.
func ReadRecordLogs(dir string) ([]Delivery, error) {
	logs, err := recordlog.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	if err := logs.Err(); err != nil {
		return nil, err
	}
	return logs.Lines, nil
}

// ReadStream reads every record of every shard from TRIM_HORIZON (closed shards to their
// end, open ones until caught up) and returns those of run (all runs if run is empty).
func ReadStream(ctx context.Context, k *kinesisstream.Kinesis, run string) ([]Produced, error) {
	shards, err := k.ListShards(ctx)
	if err != nil {
		return nil, err
	}
	var out []Produced
	for _, sh := range shards {
		recs, err := k.ReadShard(ctx, sh)
		if err != nil {
			return nil, fmt.Errorf("read shard %s: %w", sh.ID, err)
		}
		for _, r := range recs {
			for _, p := range delivery.FromStreamRecords(sh.ID, r) {
				if run == "" || p.Run == run {
					out = append(out, p)
				}
			}
		}
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
