package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
)

// demoProcessor counts and logs records and checkpoints after every batch. With a record
// log it first appends each record (shard, sequence number, partition key, epoch) so that
// tests and `kdsctl verify` can prove nothing was lost or processed twice.
type demoProcessor struct {
	log      *slog.Logger
	recorder *recordLog
	shardID  string
	epoch    int64
	count    int64
}

func demoFactory(log *slog.Logger, workerID string, rec *recordLog) consumer.ProcessorFactory {
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
	if err := p.recorder.append(in); err != nil {
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

// recordLog appends processed records as JSON lines to one file per worker.
type recordLog struct {
	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	worker string
}

// recordLine is one processed record in the record log.
type recordLine struct {
	Worker       string `json:"worker"`
	Shard        string `json:"shard"`
	Epoch        int64  `json:"epoch"`
	Sequence     string `json:"seq"`
	PartitionKey string `json:"pk"`
	Data         string `json:"data"`
	// At is when the record was processed (Unix nanoseconds), to order processing across
	// workers on one machine.
	At int64 `json:"t"`
}

func openRecordLog(dir, worker string) (*recordLog, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("record log: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, worker+".jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("record log: %w", err)
	}
	return &recordLog{f: f, w: bufio.NewWriter(f), worker: worker}, nil
}

// append writes the batch and flushes it before the caller checkpoints.
func (r *recordLog) append(in consumer.ProcessRecordsInput) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	enc := json.NewEncoder(r.w)
	now := time.Now().UnixNano()
	for _, rec := range in.Records {
		line := recordLine{Worker: r.worker, Shard: in.ShardID, Epoch: in.Epoch,
			Sequence: rec.SequenceNumber, PartitionKey: rec.PartitionKey, Data: string(rec.Data), At: now}
		if err := enc.Encode(line); err != nil {
			return fmt.Errorf("record log: %w", err)
		}
	}
	if err := r.w.Flush(); err != nil {
		return fmt.Errorf("record log: %w", err)
	}
	return nil
}

func (r *recordLog) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.w.Flush(); err != nil {
		return err
	}
	return r.f.Close()
}
