package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
)

// maxPutRecords is the service's limit on entries per PutRecords call.
const maxPutRecords = 500

// payload is the data of every record produce writes.
type payload = delivery.Payload

type produceOptions struct {
	rate     float64 // records per second; 0 means as fast as the stream takes them
	duration time.Duration
	count    int
	keys     int
	run      string
}

// produceStats is produce's summary (and its JSON output).
type produceStats struct {
	Run           string  `json:"run"`
	Stream        string  `json:"stream"`
	Keys          int     `json:"keys"`
	Written       int     `json:"written"`
	FailedRetried int     `json:"failed_retried"`
	Unsent        int     `json:"unsent"`
	Batches       int     `json:"batches"`
	Seconds       float64 `json:"seconds"`
	Interrupted   bool    `json:"interrupted,omitempty"`
}

func (s produceStats) print(w io.Writer) {
	t := newTable(w)
	t.row("run", s.Run)
	t.row("stream", s.Stream)
	t.row("keys", s.Keys)
	t.row("records written", s.Written)
	t.row("failed+retried", s.FailedRetried)
	if s.Unsent > 0 {
		t.row("not written", fmt.Sprintf("%d (interrupted; the last batch may or may not have been written)", s.Unsent))
	}
	t.row("batches", s.Batches)
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.Written) / s.Seconds
	}
	t.row("elapsed", fmt.Sprintf("%.1fs (%.0f records/s)", s.Seconds, rate))
	t.flush()
}

func produce(ctx context.Context, e *env, args []string) error {
	fs := e.flags("produce")
	var o produceOptions
	fs.Float64Var(&o.rate, "rate", 100, "records per second (0: as fast as possible)")
	fs.DurationVar(&o.duration, "duration", 0, "produce for this long")
	fs.IntVar(&o.count, "count", 0, "produce this many records")
	fs.IntVar(&o.keys, "keys", 1000, "distinct partition keys, pk-0000 and up, used round-robin")
	fs.StringVar(&o.run, "run", "", "run id written into every record (default: a new one)")
	if err := e.parseNone(fs, args); err != nil {
		return err
	}
	switch {
	case o.duration <= 0 && o.count <= 0:
		return usageError("produce: give --duration or --count (or both: whichever ends first)")
	case o.duration < 0 || o.count < 0 || o.rate < 0:
		return usageError("produce: --duration, --count and --rate must not be negative")
	case o.keys < 1:
		return usageError("produce: --keys %d: want at least 1", o.keys)
	}
	if o.run == "" {
		o.run = fmt.Sprintf("%s-%04x", time.Now().UTC().Format("20060102T150405"), rand.IntN(1<<16))
	}
	kc, err := e.kinesis(ctx)
	if err != nil {
		return err
	}
	p := newProducer(kc, e.stream, o, e.progress())
	fmt.Fprintf(e.progress(), "producing run %s to stream %s: %s\n", o.run, e.stream, o.describe())
	stats, err := p.run(ctx)
	if err != nil {
		return err
	}
	if err := e.emit(stats, stats.print); err != nil {
		return err
	}
	if stats.Interrupted {
		return fmt.Errorf("produce interrupted after %d records: %w", stats.Written, ctx.Err())
	}
	return nil
}

func (o produceOptions) describe() string {
	s := fmt.Sprintf("%d keys", o.keys)
	if o.rate > 0 {
		s += fmt.Sprintf(", %g records/s", o.rate)
	} else {
		s += ", unthrottled"
	}
	if o.count > 0 {
		s += fmt.Sprintf(", %d records", o.count)
	}
	if o.duration > 0 {
		s += fmt.Sprintf(", for %s", o.duration)
	}
	return s
}

// putRecordsAPI is the call produce makes; tests substitute a failing fake.
type putRecordsAPI interface {
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// pending is a record not yet written.
type pending struct {
	key int
	n   int
}

// producer writes records round-robin over the keys. It keeps per-key order through
// partial failures: a batch holds at most one record per key, and failed records are sent
// again, first, before any later record of their key is generated.
type producer struct {
	api      putRecordsAPI
	stream   string
	opts     produceOptions
	progress io.Writer
	keys     []string
	nextN    []int
	next     int // records generated so far
	retry    []pending
	stats    produceStats
	// tick paces batches; backoff grows from minBackoff to maxBackoff while batches fail.
	tick, backoff, minBackoff, maxBackoff time.Duration
}

func newProducer(api putRecordsAPI, stream string, o produceOptions, progress io.Writer) *producer {
	width := max(4, len(fmt.Sprint(o.keys-1)))
	keys := make([]string, o.keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("pk-%0*d", width, i)
	}
	return &producer{
		api: api, stream: stream, opts: o, progress: progress, keys: keys, nextN: make([]int, o.keys),
		stats: produceStats{Run: o.run, Stream: stream, Keys: o.keys},
		tick:  100 * time.Millisecond, backoff: 50 * time.Millisecond,
		minBackoff: 50 * time.Millisecond, maxBackoff: 2 * time.Second,
	}
}

func (p *producer) run(ctx context.Context) (produceStats, error) {
	start := time.Now()
	var deadline time.Time
	if p.opts.duration > 0 {
		deadline = start.Add(p.opts.duration)
	}
	ticker := time.NewTicker(p.tick)
	defer ticker.Stop()
	lastTick, lastReport := start, start
	budget := 0.0
	for {
		generating := (p.opts.count <= 0 || p.next < p.opts.count) && (deadline.IsZero() || time.Now().Before(deadline))
		if !generating && len(p.retry) == 0 {
			return p.finish(start), nil
		}
		if p.opts.rate > 0 && budget < 1 && len(p.retry) == 0 {
			// Token bucket: batches carry what accrued since the last tick, capped at a
			// second's worth so that a stall is not followed by a burst.
			select {
			case <-ctx.Done():
				return p.interrupted(start), nil
			case now := <-ticker.C:
				budget = min(budget+p.opts.rate*now.Sub(lastTick).Seconds(), max(p.opts.rate, 1))
				lastTick = now
			}
			continue
		}
		allow := 0
		switch {
		case !generating:
		case p.opts.rate > 0:
			allow = int(budget)
		default:
			allow = maxPutRecords
		}
		batch, fresh := p.nextBatch(allow)
		budget -= float64(fresh)
		failed, err := p.put(ctx, batch)
		if ctx.Err() != nil {
			p.retry = batch // unknown whether written: report them as not written
			return p.interrupted(start), nil
		}
		if err != nil {
			return p.finish(start), err
		}
		if failed > 0 && !sleepCtx(ctx, p.backoff) {
			return p.interrupted(start), nil
		}
		p.adjustBackoff(failed > 0)
		if time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			p.report(start)
		}
	}
}

// nextBatch returns the records to send next, the failed ones first, then up to allow new
// ones, stopping at the first key already in the batch; and how many are new.
func (p *producer) nextBatch(allow int) (batch []pending, fresh int) {
	batch, p.retry = p.retry, nil
	inBatch := make(map[int]bool, len(batch))
	for _, r := range batch {
		inBatch[r.key] = true
	}
	for ; allow > 0 && len(batch) < maxPutRecords && (p.opts.count <= 0 || p.next < p.opts.count); allow-- {
		k := p.next % len(p.keys)
		if inBatch[k] {
			break // its next record must wait until this one is written
		}
		inBatch[k] = true
		batch = append(batch, pending{key: k, n: p.nextN[k]})
		p.nextN[k]++
		p.next++
		fresh++
	}
	return batch, fresh
}

// put sends one batch, queues the records that failed for the next batch and returns how
// many failed. It returns an error only for failures retrying cannot fix.
func (p *producer) put(ctx context.Context, batch []pending) (int, error) {
	entries := make([]types.PutRecordsRequestEntry, len(batch))
	for i, r := range batch {
		data, err := json.Marshal(payload{Run: p.opts.run, Key: p.keys[r.key], N: r.n})
		if err != nil {
			return 0, fmt.Errorf("encode record: %w", err)
		}
		entries[i] = types.PutRecordsRequestEntry{Data: data, PartitionKey: aws.String(p.keys[r.key])}
	}
	p.stats.Batches++
	out, err := p.api.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(p.stream), Records: entries})
	if err != nil {
		if ctx.Err() != nil || !retryable(err) {
			return 0, fmt.Errorf("put %d records to stream %s: %w", len(batch), p.stream, err)
		}
		fmt.Fprintf(p.progress, "PutRecords failed, retrying %d records: %v\n", len(batch), err)
		p.retry = batch
		p.stats.FailedRetried += len(batch)
		return len(batch), nil
	}
	if len(out.Records) != len(batch) {
		return 0, fmt.Errorf("put records to stream %s: %d results for %d records", p.stream, len(out.Records), len(batch))
	}
	for i, r := range out.Records {
		if r.ErrorCode != nil {
			p.retry = append(p.retry, batch[i])
			continue
		}
		p.stats.Written++
	}
	p.stats.FailedRetried += len(p.retry)
	return len(p.retry), nil
}

func (p *producer) adjustBackoff(failed bool) {
	if failed {
		p.backoff = min(2*p.backoff, p.maxBackoff)
	} else {
		p.backoff = p.minBackoff
	}
}

func (p *producer) report(start time.Time) {
	el := time.Since(start)
	fmt.Fprintf(p.progress, "%6.1fs  written %d (%.0f/s), failed+retried %d\n",
		el.Seconds(), p.stats.Written, float64(p.stats.Written)/el.Seconds(), p.stats.FailedRetried)
}

func (p *producer) finish(start time.Time) produceStats {
	p.stats.Seconds = time.Since(start).Seconds()
	return p.stats
}

func (p *producer) interrupted(start time.Time) produceStats {
	p.stats.Unsent = len(p.retry)
	p.stats.Interrupted = true
	return p.finish(start)
}

// retryable reports whether a failed PutRecords call may succeed later: throttling and
// server-side faults. A missing stream or bad credentials will not change by retrying.
func retryable(err error) bool {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode() {
	case "ProvisionedThroughputExceededException", "LimitExceededException", "KMSThrottlingException",
		"ThrottlingException", "ServiceUnavailable", "InternalFailure":
		return true
	}
	return apiErr.ErrorFault() == smithy.FaultServer
}

// sleepCtx waits for d, or returns false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
