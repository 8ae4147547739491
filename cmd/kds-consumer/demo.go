package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// demoProcessor counts and logs records and checkpoints after every batch, or with
// perRecord after every record (CheckpointRecord: KPL user records one by one). With a
// record log it first appends each record (shard, sequence and sub-sequence number,
// partition key, epoch) so that tests and `kdsctl verify` can prove nothing was lost or
// processed twice. delay pauses after each record, as slow processing would. A record
// whose data is failOn fails its batch, after the records before it were processed, as a
// record the application cannot handle would (to try ON_PROCESSOR_FAILURE).
type demoProcessor struct {
	log       *slog.Logger
	recorder  *recordlog.Writer
	shardID   string
	epoch     int64
	count     int64
	perRecord bool
	delay     time.Duration
	failOn    string
}

func demoFactory(log *slog.Logger, rec *recordlog.Writer, s settings) consumer.ProcessorFactory {
	return func(shardID string) consumer.RecordProcessor {
		return &demoProcessor{log: log.With("shard", shardID), recorder: rec, shardID: shardID,
			perRecord: s.DemoCheckpoint == "record", delay: s.DemoRecordDelay, failOn: s.DemoFailOn}
	}
}

func (p *demoProcessor) Initialize(_ context.Context, in consumer.InitializeInput) error {
	p.epoch = in.Epoch
	p.log.Debug("processor initialized", "checkpoint", in.Checkpoint, "checkpoint_sub_seq", in.CheckpointSubSequenceNumber, "epoch", in.Epoch)
	return nil
}

func (p *demoProcessor) ProcessRecords(ctx context.Context, in consumer.ProcessRecordsInput) error {
	if i := slices.IndexFunc(in.Records, func(r stream.Record) bool { return p.failOn != "" && string(r.Data) == p.failOn }); i >= 0 {
		bad := in.Records[i]
		if in.Records = in.Records[:i]; i > 0 {
			if err := p.ProcessRecords(ctx, in); err != nil {
				return err
			}
		}
		return fmt.Errorf("demo processor: record %s holds %q (DEMO_FAIL_ON)", bad.SequenceNumber, p.failOn)
	}
	if p.perRecord || p.delay > 0 {
		for _, r := range in.Records {
			if err := p.recorder.Append(in.ShardID, in.Epoch, []stream.Record{r}); err != nil {
				return err
			}
			p.count++
			if p.perRecord {
				if err := in.Checkpointer.CheckpointRecord(ctx, r); err != nil {
					return err
				}
			}
			if p.delay > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(p.delay):
				}
			}
		}
		p.log.Debug("processed batch", "records", len(in.Records), "total", p.count, "millis_behind_latest", in.MillisBehindLatest)
		if p.perRecord {
			return nil
		}
		return in.Checkpointer.Checkpoint(ctx, in.Records[len(in.Records)-1].SequenceNumber)
	}
	if err := p.recorder.Append(in.ShardID, in.Epoch, in.Records); err != nil {
		return err
	}
	p.count += int64(len(in.Records))
	last := in.Records[len(in.Records)-1].SequenceNumber
	p.log.Debug("processed batch", "records", len(in.Records), "total", p.count, "millis_behind_latest", in.MillisBehindLatest)
	// For a KPL aggregate, all its user records.
	return in.Checkpointer.Checkpoint(ctx, last)
}

func (p *demoProcessor) ShardEnded(context.Context, consumer.Checkpointer) error {
	p.log.Info("shard ended", "records", p.count)
	return nil
}

// ShutdownRequested has nothing to do: every batch was checkpointed already.
func (p *demoProcessor) ShutdownRequested(context.Context, consumer.Checkpointer) error { return nil }

func (p *demoProcessor) LeaseLost(context.Context) {
	p.log.Info("lease lost", "records", p.count)
}
