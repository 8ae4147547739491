package main

import (
	"context"
	"log/slog"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
)

// demoProcessor counts and logs records and checkpoints after every batch. With a record
// log it first appends each record (shard, sequence number, partition key, epoch) so that
// tests and `kdsctl verify` can prove nothing was lost or processed twice.
type demoProcessor struct {
	log      *slog.Logger
	recorder *recordlog.Writer
	shardID  string
	epoch    int64
	count    int64
}

func demoFactory(log *slog.Logger, workerID string, rec *recordlog.Writer) consumer.ProcessorFactory {
	return func(shardID string) consumer.RecordProcessor {
		return &demoProcessor{log: log.With("shard", shardID), recorder: rec, shardID: shardID}
	}
}

func (p *demoProcessor) Initialize(_ context.Context, in consumer.InitializeInput) error {
	p.epoch = in.Epoch
	p.log.Debug("processor initialized", "checkpoint", in.Checkpoint, "epoch", in.Epoch)
	return nil
}

func (p *demoProcessor) ProcessRecords(ctx context.Context, in consumer.ProcessRecordsInput) error {
	if err := p.recorder.Append(in.ShardID, in.Epoch, in.Records); err != nil {
		return err
	}
	p.count += int64(len(in.Records))
	last := in.Records[len(in.Records)-1].SequenceNumber
	p.log.Debug("processed batch", "records", len(in.Records), "total", p.count, "millis_behind_latest", in.MillisBehindLatest)
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
