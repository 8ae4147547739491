package consumer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/kpl"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// stopKind says why a shard consumer is asked to stop.
type stopKind int

const (
	// stopPlanned: the worker gives the lease up (rebalance, shutdown): finish the batch,
	// let the processor checkpoint, release the lease.
	stopPlanned stopKind = iota + 1
	// stopLost: the lease is no longer ours; stop without writing anything.
	stopLost
)

// exitReason says how a shard consumer ended.
type exitReason int

const (
	exitReleased exitReason = iota + 1 // planned stop, lease released
	exitLost                           // lease lost, nothing written
	exitEnded                          // shard finished, SHARD_END written, lease released
	exitFailed                         // processor failed to initialize, lease released
)

func (r exitReason) String() string {
	switch r {
	case exitReleased:
		return "released"
	case exitLost:
		return "lost"
	case exitEnded:
		return "shard-ended"
	case exitFailed:
		return "failed"
	}
	return "unknown"
}

type consumerExit struct {
	lease    lease.Lease
	reason   exitReason
	children []stream.ChildShard
	// kept: the release of a failed consumer did not succeed, so the table may still say
	// the lease is this worker's.
	kept bool
}

// consumerEnv is what every shard consumer of a worker depends on.
type consumerEnv struct {
	cfg    *Config
	leases LeaseStore
	stream Stream
	clock  clock.Clock
	hooks  Hooks
	tenure *tenure
	// exits receives every consumer's end; the control loop reads it.
	exits chan consumerExit
}

// shardConsumer reads one leased shard and feeds its processor, from one goroutine.
type shardConsumer struct {
	env    *consumerEnv
	lease  lease.Lease
	cp     *checkpointer
	proc   RecordProcessor
	log    *slog.Logger
	stopCh chan stopKind
	cancel context.CancelFunc // hard stop: cancels reads and the processor's context
	lapses int64              // the tenure's lapse generation when the lease was taken
	done   chan struct{}
	// nextCheck delays the next lease check after a failed one (consumer goroutine only).
	nextCheck time.Time
	// hashRange is the shard's hash key range, for KPL aggregates (consumer goroutine
	// only; known once listed).
	hashRange      *kpl.HashKeyRange
	hashRangeKnown bool

	releasing bool // owned by the worker's control loop
	// stopped is set while FailureStop holds the shard stopped (read by Status).
	stopped atomic.Bool
}

// requestStop asks the consumer to stop. A lost lease also cancels the consumer's
// context, so it wins over a pending planned stop and interrupts a read in flight.
func (c *shardConsumer) requestStop(k stopKind) {
	if k == stopLost {
		// Cancel first: it aborts a checkpoint write in flight and never blocks.
		c.cancel()
		c.cp.markLost()
	}
	select {
	case c.stopCh <- k:
	default: // A stop is already pending.
	}
}

// run is the consumer's goroutine. It reports its end on env.exits.
func (c *shardConsumer) run(ctx context.Context) {
	defer close(c.done)
	exit := c.consume(ctx)
	exit.lease = c.lease
	c.env.exits <- exit
}

func (c *shardConsumer) consume(ctx context.Context) consumerExit {
	env, cfg := c.env, c.env.cfg
	err := c.proc.Initialize(ctx, InitializeInput{
		ShardID:                     c.lease.ShardID,
		Checkpoint:                  c.lease.Checkpoint,
		CheckpointSubSequenceNumber: c.lease.CheckpointSubSequence,
		Epoch:                       c.lease.Epoch,
		ParentShardIDs:              c.lease.ParentShardIDs,
	})
	if err != nil {
		c.log.Error("record processor failed to initialize; releasing the lease", "err", err)
		return consumerExit{reason: exitFailed, kept: !c.release(ctx, c.lease, lease.ExtendedSequenceNumber{})}
	}

	var (
		iterator      string
		lastDelivered string
		// floor is the checkpoint an iterator was taken at: user records at or before it
		// were processed and are not delivered again.
		floor   lease.ExtendedSequenceNumber
		backoff time.Duration
		next    = env.clock.Now()
	)
	for {
		if k, stopped := c.waitUntil(ctx, next); stopped {
			return c.stop(ctx, k)
		}
		if !env.tenure.valid(c.lapses) {
			return c.stop(ctx, stopLost)
		}
		start := env.clock.Now()
		if iterator == "" {
			var pos stream.Position
			pos, floor = c.resumePosition(lastDelivered)
			iterator, err = c.getIterator(ctx, pos)
			if err != nil {
				if c.pastRetention(ctx, err) {
					return c.shardEnded(ctx, nil)
				}
				backoff = c.failed("get shard iterator", err, backoff)
				next = start.Add(backoff)
				continue
			}
		}
		rctx, cancel := context.WithTimeout(ctx, cfg.streamTimeout())
		batch, err := env.stream.GetRecords(rctx, iterator, cfg.MaxRecordsPerGet)
		cancel()
		if err != nil {
			if errors.Is(err, stream.ErrExpiredIterator) {
				// Resume after the last record handed to the processor: nothing twice.
				iterator, backoff, next = "", 0, start
				continue
			}
			if c.pastRetention(ctx, err) {
				return c.shardEnded(ctx, nil)
			}
			backoff = c.failed("get records", err, backoff)
			next = start.Add(backoff)
			continue
		}
		env.hooks.recordsRead(c.lease.ShardID, len(batch.Records), batch.MillisBehindLatest)
		if n := len(batch.Records); n > 0 {
			users, aggs, err := c.split(ctx, batch.Records, floor)
			if err != nil {
				// The same batch is read again with the same iterator.
				backoff = c.failed("list shards for the shard's hash key range (to de-aggregate KPL records)", err, backoff)
				next = start.Add(backoff)
				continue
			}
			if len(users) > 0 {
				b := batch
				b.Records = users
				c.cp.delivering(aggs)
				if k, stopped := c.process(ctx, b); stopped {
					return c.stop(ctx, k)
				}
			}
			// Later records are after the last one read, so after the floor too.
			lastDelivered, floor = batch.Records[n-1].SequenceNumber, lease.ExtendedSequenceNumber{}
		}
		backoff = 0
		if c.cp.flush(ctx) != nil { // A coalesced checkpoint, due: the lease was lost.
			return c.stop(ctx, stopLost)
		}
		if batch.NextIterator == "" {
			return c.shardEnded(ctx, batch.ChildShards)
		}
		iterator = batch.NextIterator
		wait := cfg.MinTimeBetweenReads
		if len(batch.Records) == 0 {
			wait = max(wait, cfg.IdleTimeBetweenReads)
		}
		next = start.Add(wait)
	}
}

func (c *shardConsumer) getIterator(ctx context.Context, pos stream.Position) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.env.cfg.streamTimeout())
	defer cancel()
	return c.env.stream.GetShardIterator(ctx, c.lease.ShardID, pos)
}

// stillOwned confirms that the lease is still this tenure's when the last confirmation is
// older than every, so that a consumer learns of a lease taken from it (by an operator, by
// a process sharing its worker id) before it delivers a batch, within LeaseScanInterval,
// even when its processor never checkpoints. An accepted checkpoint confirms it for free,
// so a processor that checkpoints costs no read. A failed read confirms nothing and is
// retried. A consumer with nothing to deliver reads nothing: the coordinator notices the
// lease missing from the worker's count and asks it to recheck (balancer.recheck).
func (c *shardConsumer) stillOwned(ctx context.Context, every time.Duration) bool {
	env, cfg := c.env, c.env.cfg
	now := env.clock.Now()
	if now.Sub(c.cp.confirmedAt()) < every || now.Before(c.nextCheck) {
		return true
	}
	switch c.readOwnership(ctx) {
	case owned:
		c.cp.confirm(now)
		return true
	case notOwned:
		return false
	}
	c.nextCheck = now.Add(cfg.PollInterval)
	return true
}

// ownership is what a read of a consumer's lease showed.
type ownership int

const (
	ownershipUnknown ownership = iota // the read failed
	owned                             // still this tenure's owner and epoch
	notOwned                          // someone else's, another epoch, or deleted
)

// readOwnership reads the consumer's lease and says whether it is still this tenure's,
// logging when it is not. It is the one judgement of a lease confirmation, whether the
// consumer makes it or the control loop does for it (balancer.recheck).
func (c *shardConsumer) readOwnership(ctx context.Context) ownership {
	gctx, cancel := context.WithTimeout(ctx, c.env.cfg.callTimeout())
	cur, err := c.env.leases.GetLease(gctx, c.lease.ShardID)
	cancel()
	switch {
	case err == nil && cur.Owner == c.lease.Owner && cur.Epoch == c.lease.Epoch:
		return owned
	case err == nil || errors.Is(err, lease.ErrNotFound):
		c.log.Error("the lease is no longer this worker's: stopping the shard", "owner", cur.Owner, "owner_epoch", cur.Epoch)
		return notOwned
	}
	return ownershipUnknown
}

// pastRetention reports whether err says the shard does not exist while the stream does
// and no longer lists it: the shard aged out of the stream's retention period. Nothing is
// left to read, so it ends like a shard read to its end, and its children may start.
func (c *shardConsumer) pastRetention(ctx context.Context, err error) bool {
	if !errors.Is(err, stream.ErrStreamNotFound) {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, c.env.cfg.streamTimeout())
	shards, lerr := c.env.stream.ListShards(lctx)
	cancel()
	if lerr != nil {
		return false
	}
	for _, s := range shards {
		if s.ID == c.lease.ShardID {
			return false
		}
	}
	c.log.Warn("the shard is past the stream's retention period (no longer listed): ending it so its children can start", "err", err)
	return true
}

// process hands one batch to the processor, retrying it while it fails, and after
// ProcessorRetries retries does what OnProcessorFailure says (by default it retries
// forever: a batch is never skipped). A retry hands over only the records after the
// processor's last accepted checkpoint. It returns a stop request that arrived meanwhile.
func (c *shardConsumer) process(ctx context.Context, batch stream.Batch) (stopKind, bool) {
	env, cfg := c.env, c.env.cfg
	var backoff time.Duration
	records := batch.Records
	for failures := 0; ; failures++ {
		if !env.tenure.valid(c.lapses) || !c.stillOwned(ctx, cfg.LeaseScanInterval) {
			return stopLost, true
		}
		c.cp.behind.Store(batch.MillisBehindLatest)
		began := env.clock.Now()
		err := c.proc.ProcessRecords(ctx, ProcessRecordsInput{
			ShardID:            c.lease.ShardID,
			Epoch:              c.lease.Epoch,
			Records:            records,
			MillisBehindLatest: batch.MillisBehindLatest,
			Checkpointer:       c.cp,
		})
		env.hooks.processorReturned(c.lease.ShardID, len(records), env.clock.Now().Sub(began), err)
		if err == nil {
			env.hooks.recordsProcessed(c.lease.ShardID, len(records), batch.MillisBehindLatest)
			return 0, false
		}
		if errors.Is(err, ErrLeaseLost) || ctx.Err() != nil {
			return stopLost, true
		}
		env.hooks.processorFailed(c.lease.ShardID, err)
		records = after(records, c.cp.LastExtendedSequenceNumber())
		if len(records) == 0 {
			return 0, false // Everything was checkpointed before the error.
		}
		if cfg.OnProcessorFailure != FailureRetry && failures == cfg.ProcessorRetries {
			return c.giveUp(ctx, records, err)
		}
		backoff = c.failed("process records (the batch will be retried)", err, backoff)
		if k, stopped := c.waitUntil(ctx, env.clock.Now().Add(backoff)); stopped {
			return k, true
		}
	}
}

// giveUp does what OnProcessorFailure says with the records of a batch the processor
// kept failing on: stop the shard until a stop request, or skip or dead-letter the
// records and checkpoint past them. It returns a stop request, or a lost lease.
func (c *shardConsumer) giveUp(ctx context.Context, records []stream.Record, cause error) (stopKind, bool) {
	env, policy := c.env, c.env.cfg.OnProcessorFailure
	first, last := records[0], records[len(records)-1]
	attrs := []any{"policy", policy, "retries", env.cfg.ProcessorRetries, "records", len(records),
		"first_sequence_number", first.SequenceNumber, "last_sequence_number", last.SequenceNumber, "err", cause}
	switch policy {
	case FailureStop:
		c.log.Error("the record processor keeps failing: stopped reading the shard (the lease stays held; "+
			"a restart of the worker or a move of the lease retries the batch)", attrs...)
		env.hooks.batchAbandoned(c.lease.ShardID, policy, len(records))
		c.stopped.Store(true)
		defer c.stopped.Store(false)
		select {
		case k := <-c.stopCh:
			return k, true
		case <-ctx.Done():
			return stopLost, true
		}
	case FailureDeadLetter:
		var backoff time.Duration
		for {
			dctx, cancel := context.WithTimeout(ctx, env.cfg.streamTimeout())
			err := env.cfg.DeadLetter.Put(dctx, c.lease.ShardID, records, cause)
			cancel()
			if err == nil {
				break
			}
			backoff = c.failed("put the batch on the dead-letter stream", err, backoff)
			if k, stopped := c.waitUntil(ctx, env.clock.Now().Add(backoff)); stopped {
				return k, true
			}
		}
		c.log.Error("the record processor keeps failing: put the rest of the batch on the dead-letter stream and moved past it", attrs...)
	default:
		c.log.Error("the record processor keeps failing: skipped the rest of the batch", attrs...)
	}
	env.hooks.batchAbandoned(c.lease.ShardID, policy, len(records))
	if err := c.cp.CheckpointRecord(ctx, last); err != nil {
		if errors.Is(err, ErrLeaseLost) || ctx.Err() != nil {
			return stopLost, true
		}
		// The records were handled; a failed checkpoint only means they may be handled
		// once more after a restart.
		c.log.Warn("cannot checkpoint past the abandoned batch", "err", err)
	}
	return 0, false
}

// after returns the records after the checkpoint cp, by (sequence number, sub-sequence
// number); all when cp is not a sequence number.
func after(records []stream.Record, cp lease.ExtendedSequenceNumber) []stream.Record {
	for i, r := range records {
		if c, ok := recordCheckpoint(r).Compare(cp); !ok || c > 0 {
			return records[i:]
		}
	}
	return nil
}

// failed logs a failed call and returns the next back-off: exponential with jitter,
// from 100ms up to 5s.
func (c *shardConsumer) failed(what string, err error, prev time.Duration) time.Duration {
	level := slog.LevelWarn
	if errors.Is(err, stream.ErrThrottled) {
		level = slog.LevelInfo
	}
	c.log.Log(context.Background(), level, what+" failed; backing off", "err", err)
	d := min(max(2*prev, 100*time.Millisecond), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// resumePosition returns where to read from: after the last delivered Kinesis record,
// else at the checkpoint, with the checkpoint as the floor at and below which user records
// are not delivered. Like the KCL, a checkpoint resumes AT_SEQUENCE_NUMBER and drops what
// it covers: a checkpoint may be inside a KPL aggregate, whose other user records are
// still to be delivered (for a plain record this only reads the record once more).
func (c *shardConsumer) resumePosition(lastDelivered string) (pos stream.Position, floor lease.ExtendedSequenceNumber) {
	if lastDelivered != "" {
		return stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: lastDelivered}, floor
	}
	cp := c.cp.LastExtendedSequenceNumber()
	switch cp.SequenceNumber {
	case lease.TrimHorizon, "":
		return stream.Position{Type: stream.TrimHorizon}, floor
	case lease.Latest:
		return stream.Position{Type: stream.Latest}, floor
	case lease.AtTimestamp:
		if ts := c.lease.StartTimestamp; !ts.IsZero() {
			return stream.Position{Type: stream.AtTimestamp, Timestamp: ts}, floor
		}
		// A lease the KCL created: it keeps the timestamp in its configuration, not in the
		// lease. This worker's, if it starts at a timestamp too; else the oldest record,
		// which loses nothing.
		if c.env.cfg.InitialPosition == lease.AtTimestamp {
			return stream.Position{Type: stream.AtTimestamp, Timestamp: c.env.cfg.InitialTimestamp}, floor
		}
		return stream.Position{Type: stream.TrimHorizon}, floor
	default:
		return stream.Position{Type: stream.AtSequenceNumber, SequenceNumber: cp.SequenceNumber}, cp
	}
}

// split de-aggregates the KPL aggregates of a batch (package kpl) and drops the user
// records at or before floor. It returns the user records to deliver and the aggregates
// among them. A record that only looks aggregated is delivered whole, with a warning and
// the MalformedAggregate hook; an aggregate with a hash key outside the shard's range is
// discarded whole, as the KCL does. The error is a failure to learn the shard's hash key
// range, needed only when the batch holds an aggregate.
func (c *shardConsumer) split(ctx context.Context, records []stream.Record, floor lease.ExtendedSequenceNumber) ([]stream.Record, []aggregateEnd, error) {
	aggregated := false
	for _, r := range records {
		if kpl.IsAggregated(r.Data) {
			aggregated = true
			break
		}
	}
	if !aggregated && floor.IsZero() {
		return records, nil, nil // The common case: plain records, nothing to drop.
	}
	var rng *kpl.HashKeyRange
	if aggregated {
		var err error
		if rng, err = c.hashKeyRange(ctx); err != nil {
			return nil, nil, err
		}
	}
	out := make([]stream.Record, 0, len(records))
	var aggs []aggregateEnd
	for _, r := range records {
		users, err := kpl.Deaggregate(r)
		if err != nil {
			c.log.Warn("record has the KPL aggregate prefix but is not a valid aggregate: delivering it whole", "seq", r.SequenceNumber, "err", err)
			c.env.hooks.malformedAggregate(c.lease.ShardID, r.SequenceNumber, err)
			users = []stream.Record{r}
		} else if len(users) > 0 && users[0].Aggregated {
			if rng != nil {
				if u, ok := rng.Admits(users); !ok {
					c.log.Warn("KPL aggregate has a user record whose hash key is outside the shard's range: discarding the aggregate, as the KCL does",
						"seq", r.SequenceNumber, "sub_seq", u.SubSequenceNumber, "partition_key", u.PartitionKey,
						"explicit_hash_key", u.ExplicitHashKey, "user_records", len(users))
					c.env.hooks.aggregateDiscarded(c.lease.ShardID, r.SequenceNumber, len(users))
					continue
				}
			}
			if n, ok := lease.ParseSequenceNumber(r.SequenceNumber); ok {
				aggs = append(aggs, aggregateEnd{seq: n, lastSub: users[len(users)-1].SubSequenceNumber})
			}
		}
		for _, u := range users {
			if cmp, ok := recordCheckpoint(u).Compare(floor); ok && cmp <= 0 {
				continue
			}
			out = append(out, u)
		}
	}
	return out, aggs, nil
}

// hashKeyRange returns the shard's hash key range, listing the shards the first time
// (once per tenure, and only for a shard that holds KPL aggregates). nil when the stream
// does not report a usable range: aggregates are then delivered without the check.
func (c *shardConsumer) hashKeyRange(ctx context.Context) (*kpl.HashKeyRange, error) {
	if c.hashRangeKnown {
		return c.hashRange, nil
	}
	lctx, cancel := context.WithTimeout(ctx, c.env.cfg.streamTimeout())
	shards, err := c.env.stream.ListShards(lctx)
	cancel()
	if err != nil {
		return nil, err
	}
	c.hashRangeKnown = true
	for _, s := range shards {
		if s.ID != c.lease.ShardID {
			continue
		}
		r, err := kpl.ParseHashKeyRange(s.StartingHashKey, s.EndingHashKey)
		if err != nil {
			c.log.Warn("the shard's hash key range is unknown: KPL user records are delivered without checking their hash keys", "err", err)
			return nil, nil
		}
		c.hashRange = &r
		return c.hashRange, nil
	}
	c.log.Warn("the shard is not listed: KPL user records are delivered without checking their hash keys")
	return nil, nil
}

// waitUntil sleeps until t, returning early with a stop request.
func (c *shardConsumer) waitUntil(ctx context.Context, t time.Time) (stopKind, bool) {
	select {
	case k := <-c.stopCh:
		return k, true
	default:
	}
	d := t.Sub(c.env.clock.Now())
	if d <= 0 {
		return 0, false
	}
	select {
	case k := <-c.stopCh:
		return k, true
	case <-ctx.Done():
		return stopLost, true
	case <-c.env.clock.After(d):
		return 0, false
	}
}

func (c *shardConsumer) stop(ctx context.Context, k stopKind) consumerExit {
	if k == stopLost || ctx.Err() != nil {
		c.cp.markLost()
		c.proc.LeaseLost(context.WithoutCancel(ctx))
		return consumerExit{reason: exitLost}
	}
	if err := c.proc.ShutdownRequested(ctx, c.cp); err != nil {
		c.log.Warn("record processor failed at shutdown; the next owner resumes from the last checkpoint", "err", err)
	}
	if !c.release(ctx, c.lease, c.cp.takePending()) {
		return consumerExit{reason: exitLost}
	}
	return consumerExit{reason: exitReleased}
}

func (c *shardConsumer) shardEnded(ctx context.Context, children []stream.ChildShard) consumerExit {
	if err := c.proc.ShardEnded(ctx, c.cp); err != nil {
		c.log.Error("record processor failed at shard end; releasing without SHARD_END so the shard is retried", "err", err)
		return consumerExit{reason: exitFailed, kept: !c.release(ctx, c.lease, c.cp.takePending())}
	}
	// The children are recorded with SHARD_END, as the KCL records them (see
	// lease.Lease.ChildShardIDs).
	held := c.lease
	held.ChildShardIDs = nil
	for _, ch := range children {
		held.ChildShardIDs = append(held.ChildShardIDs, ch.ShardID)
	}
	if !c.release(ctx, held, lease.ExtendedSequenceNumber{SequenceNumber: lease.ShardEnd}) {
		return consumerExit{reason: exitLost}
	}
	c.log.Info("shard ended", "children", len(children))
	return consumerExit{reason: exitEnded, children: children}
}

// release frees the lease held (c.lease, with what else to record), writing final unless
// it is zero, retrying transient errors until the lease is released, lost, or the worker
// gives up. It reports whether it released.
func (c *shardConsumer) release(ctx context.Context, held lease.Lease, final lease.ExtendedSequenceNumber) bool {
	env, cfg := c.env, c.env.cfg
	var backoff time.Duration
	for {
		rctx, cancel := context.WithTimeout(ctx, cfg.callTimeout())
		err := env.leases.ReleaseLease(rctx, held, final)
		cancel()
		switch {
		case err == nil:
			env.hooks.leaseReleased(c.lease.ShardID)
			return true
		case errors.Is(err, lease.ErrConflict):
			c.log.Warn("lease changed hands before it could be released")
			return false
		case ctx.Err() != nil:
			return false
		}
		backoff = c.failed("release lease", err, backoff)
		select {
		case <-ctx.Done():
			return false
		case <-env.clock.After(backoff):
		}
	}
}
