package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

func verify(ctx context.Context, e *env, args []string) error {
	fs := e.flags("verify")
	defDir := os.Getenv("RECORD_LOG_DIR")
	if defDir == "" {
		defDir = filepath.Join(".run", "records")
	}
	dir := fs.String("records-dir", defDir, "directory of the workers' record logs (*.jsonl) [RECORD_LOG_DIR]")
	run := fs.String("run", "", "verify only this run id (default: every run found in the stream)")
	maxDup := fs.Int("max-duplicates", -1, "fail when a run has more extra deliveries than this (-1: never)")
	worst := fs.Int("worst", 10, "list this many of the worst keys")
	if err := e.parseNone(fs, args); err != nil {
		return err
	}
	kc, err := e.kinesis(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.progress(), "reading stream %s from TRIM_HORIZON\n", e.stream)
	produced, err := readStream(ctx, kinesisstream.New(kc, e.stream))
	if err != nil {
		return err
	}
	processed, bad, err := readRecordLogs(*dir)
	if err != nil {
		return err
	}
	r := analyze(produced, processed, *run, *worst)
	r.Stream, r.RecordsDir, r.BadLines = e.stream, *dir, bad
	if *run != "" && len(r.Runs) == 0 {
		return fmt.Errorf("verify: run %q not found in stream %s", *run, e.stream)
	}
	failures := r.failures(*maxDup)
	r.OK = len(failures) == 0
	if err := e.emit(r, r.print); err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("verify: FAIL: %s", strings.Join(failures, "; "))
	}
	return nil
}

// streamRecord is a record read back from the stream.
type streamRecord struct {
	shard string
	stream.Record
}

// readStream reads every record of every shard, open and closed, from TRIM_HORIZON: closed
// shards to their end, open shards until caught up. Shards are read concurrently.
func readStream(ctx context.Context, k *kinesisstream.Kinesis) ([]streamRecord, error) {
	shards, err := k.ListShards(ctx)
	if err != nil {
		return nil, err
	}
	results := make([][]stream.Record, len(shards))
	errs := make([]error, len(shards))
	sem := make(chan struct{}, 8) // a few at a time: the API limits calls per account too
	var wg sync.WaitGroup
	for i, sh := range shards {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			results[i], errs[i] = k.ReadShard(ctx, sh)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var all []streamRecord
	for i, recs := range results {
		for _, r := range recs {
			all = append(all, streamRecord{shard: shards[i].ID, Record: r})
		}
	}
	return all, nil
}

// readRecordLogs reads every record log in dir. Lines that are not records (one cut off
// by a killed worker) are counted, not fatal.
func readRecordLogs(dir string) ([]recordlog.Line, int, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, 0, fmt.Errorf("record logs: %w", err)
	}
	logs, err := recordlog.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	return logs.Lines, len(logs.Bad) + logs.Torn, nil
}
