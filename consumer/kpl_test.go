package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/kpl"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// userLog records the user records processors saw, in order.
type userLog struct {
	mu   sync.Mutex
	seen []seenRecord
}

type seenRecord struct {
	worker, seq, data string
	sub               int64
	aggregated        bool
}

func (l *userLog) add(worker string, recs []stream.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		l.seen = append(l.seen, seenRecord{worker: worker, seq: r.SequenceNumber, sub: r.SubSequenceNumber, data: string(r.Data), aggregated: r.Aggregated})
	}
}

func (l *userLog) snapshot() []seenRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen)
}

// kplProcessor logs user records and checkpoints: each user record (perRecord) or the
// batch's last Kinesis record. With crashAfter it stops making progress after that many
// user records, as a process killed in the middle of a batch.
type kplProcessor struct {
	log        *userLog
	worker     string
	perRecord  bool
	crashAfter int
	crashed    chan struct{}
	n          int
}

func (p *kplProcessor) Initialize(context.Context, InitializeInput) error { return nil }

func (p *kplProcessor) ProcessRecords(ctx context.Context, in ProcessRecordsInput) error {
	for _, r := range in.Records {
		if p.crashAfter > 0 && p.n == p.crashAfter {
			close(p.crashed)
			<-ctx.Done() // "Killed": nothing more is processed or checkpointed.
			return ctx.Err()
		}
		p.log.add(p.worker, []stream.Record{r})
		p.n++
		if p.perRecord {
			if err := in.Checkpointer.CheckpointRecord(ctx, r); err != nil {
				return err
			}
		}
	}
	if p.perRecord {
		return nil
	}
	return in.Checkpointer.Checkpoint(ctx, in.Records[len(in.Records)-1].SequenceNumber)
}

func (p *kplProcessor) ShardEnded(context.Context, Checkpointer) error        { return nil }
func (p *kplProcessor) ShutdownRequested(context.Context, Checkpointer) error { return nil }
func (p *kplProcessor) LeaseLost(context.Context)                             {}

func users(prefix string, n int) []kpl.UserRecord {
	out := make([]kpl.UserRecord, n)
	for i := range out {
		out[i] = kpl.UserRecord{PartitionKey: fmt.Sprintf("%s-%d", prefix, i), Data: []byte(fmt.Sprintf("%s-%d", prefix, i))}
	}
	return out
}

// putAt puts data on shard 0 of a one-shard stream (every hash key is in its range).
func putAt(c *cluster, data []byte) string {
	_, seq := c.stream.PutHashKey("pk", big.NewInt(1), data)
	return seq
}

// A worker killed after checkpointing user record 2 of a 5-record aggregate: the next
// owner resumes at user record 3, and every user record is processed exactly once. A
// record that only looks aggregated is delivered whole (and counted); Checkpoint of an
// aggregate's sequence number covers all its user records, also for the next owner.
func TestKPLResumeInsideAggregate(t *testing.T) {
	c := newCluster(t, 1)
	var malformed, discarded atomic.Int64
	hooks := func(cfg *Config) {
		cfg.Hooks.MalformedAggregate = func(string, string, error) { malformed.Add(1) }
		cfg.Hooks.AggregateDiscarded = func(string, string, int) { discarded.Add(1) }
	}
	bad := kpl.Aggregate(users("m", 2))
	bad[len(bad)-1] ^= 0xff // bad MD5
	seqP0 := putAt(c, []byte("p0"))
	seqA := putAt(c, kpl.Aggregate(users("a", 5)))
	seqM := putAt(c, bad)
	seqB := putAt(c, kpl.Aggregate(users("b", 3)))

	log := &userLog{}
	crashed := make(chan struct{})
	c.proc = func(worker, shard string) RecordProcessor {
		if worker == "w0" {
			// p0, a-0, a-1, a-2 processed and checkpointed one by one; then killed.
			return &kplProcessor{log: log, worker: worker, perRecord: true, crashAfter: 4, crashed: crashed}
		}
		return &kplProcessor{log: log, worker: worker}
	}
	w0 := c.start("w0", hooks)
	select {
	case <-crashed:
	case <-time.After(10 * time.Second):
		t.Fatal("w0 never reached user record a-3")
	}
	w0.cut.cut.Store(true) // w0 is gone: its lease expires and w1 takes it.
	l, err := c.leases.GetLease(t.Context(), "shardId-000000000000")
	if err != nil || l.Checkpoint != seqA || l.CheckpointSubSequence != 2 {
		t.Fatalf("lease after the crash %+v, %v; want checkpoint %s sub-sequence 2", l, err, seqA)
	}
	c.start("w1", hooks)
	want := []seenRecord{
		{"w0", seqP0, "p0", 0, false},
		{"w0", seqA, "a-0", 0, true}, {"w0", seqA, "a-1", 1, true}, {"w0", seqA, "a-2", 2, true},
		{"w1", seqA, "a-3", 3, true}, {"w1", seqA, "a-4", 4, true},
		{"w1", seqM, string(bad), 0, false},
		{"w1", seqB, "b-0", 0, true}, {"w1", seqB, "b-1", 1, true}, {"w1", seqB, "b-2", 2, true},
	}
	c.waitFor("every user record", 15*time.Second, func() bool { return len(log.snapshot()) >= len(want) })
	time.Sleep(300 * time.Millisecond) // anything delivered twice would show up now
	if got := log.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("user records processed:\n got %v\nwant %v", got, want)
	}
	// Both workers read the malformed record (w0 in the batch it was killed in).
	if malformed.Load() != 2 || discarded.Load() != 0 {
		t.Errorf("MalformedAggregate called %d times (want 2), AggregateDiscarded %d (want 0)", malformed.Load(), discarded.Load())
	}
	// w1 checkpointed the batch by its last sequence number, an aggregate: all of it.
	c.waitFor("checkpoint after the last aggregate", 5*time.Second, func() bool {
		l, err := c.leases.GetLease(t.Context(), "shardId-000000000000")
		return err == nil && l.Checkpoint == seqB && l.CheckpointSubSequence == 2
	})
	c.stop("w1")
	c.start("w2", hooks)
	seqP1 := putAt(c, []byte("p1"))
	c.waitFor("p1", 10*time.Second, func() bool { return len(log.snapshot()) > len(want) })
	time.Sleep(300 * time.Millisecond)
	if got := log.snapshot()[len(want):]; !slices.Equal(got, []seenRecord{{"w2", seqP1, "p1", 0, false}}) {
		t.Fatalf("after a restart at the aggregate's checkpoint: %v, want only p1", got)
	}
}

// An aggregate on a shard whose range does not hold one of its user records' hash keys
// is discarded whole, as the KCL does; the records around it are delivered.
func TestKPLAggregateOutsideHashKeyRangeIsDiscarded(t *testing.T) {
	c := newCluster(t, 2)
	var discarded atomic.Int64
	low, _, err := c.stream.HashRange("shardId-000000000000")
	if err != nil {
		t.Fatal(err)
	}
	highStart, _, err := c.stream.HashRange("shardId-000000000001")
	if err != nil {
		t.Fatal(err)
	}
	inHigh := highStart.String()
	stray := kpl.Aggregate([]kpl.UserRecord{{PartitionKey: "x", ExplicitHashKey: "0", Data: []byte("x0")},
		{PartitionKey: "x", ExplicitHashKey: inHigh, Data: []byte("x1")}})
	fine := kpl.Aggregate([]kpl.UserRecord{{PartitionKey: "y", ExplicitHashKey: "0", Data: []byte("y0")},
		{PartitionKey: "y", ExplicitHashKey: "5", Data: []byte("y1")}})
	_, seqStray := c.stream.PutHashKey("x", low, stray)
	_, seqFine := c.stream.PutHashKey("y", low, fine)
	log := &userLog{}
	c.proc = func(worker, shard string) RecordProcessor { return &kplProcessor{log: log, worker: worker} }
	c.start("w0", func(cfg *Config) {
		cfg.Hooks.AggregateDiscarded = func(_, seq string, n int) {
			if seq == seqStray && n == 2 {
				discarded.Add(1)
			}
		}
	})
	c.waitFor("the aggregate in range", 10*time.Second, func() bool { return len(log.snapshot()) >= 2 })
	time.Sleep(300 * time.Millisecond)
	want := []seenRecord{{"w0", seqFine, "y0", 0, true}, {"w0", seqFine, "y1", 1, true}}
	if got := log.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if discarded.Load() != 1 {
		t.Errorf("AggregateDiscarded for the stray aggregate called %d times, want 1", discarded.Load())
	}
}

// Checkpoints inside aggregates are ordered by (sequence number, sub-sequence number).
func TestCheckpointerSubSequence(t *testing.T) {
	ctx := context.Background()
	store, held := heldByA(t)
	cp := newCheckpointer(store, held, Hooks{}, clock.Real{}, time.Second, 0)
	rec := func(seq string, sub int64) stream.Record {
		return stream.Record{SequenceNumber: seq, SubSequenceNumber: sub, Aggregated: true}
	}
	stored := func() lease.ExtendedSequenceNumber {
		l, _ := store.GetLease(ctx, "s")
		return l.ExtendedSequenceNumber()
	}
	at := func(seq string, sub int64) lease.ExtendedSequenceNumber {
		return lease.ExtendedSequenceNumber{SequenceNumber: seq, SubSequenceNumber: sub}
	}
	cp.delivering([]aggregateEnd{{seq: big.NewInt(100), lastSub: 4}, {seq: big.NewInt(200), lastSub: 1}})
	steps := []struct {
		do      func() error
		wantErr error
		want    lease.ExtendedSequenceNumber
	}{
		{func() error { return cp.CheckpointRecord(ctx, rec("100", 1)) }, nil, at("100", 1)},
		{func() error { return cp.CheckpointRecord(ctx, rec("100", 1)) }, nil, at("100", 1)},
		{func() error { return cp.CheckpointRecord(ctx, rec("100", 0)) }, ErrCheckpointBackwards, at("100", 1)},
		{func() error { return cp.CheckpointRecord(ctx, rec("99", 7)) }, ErrCheckpointBackwards, at("100", 1)},
		{func() error { return cp.CheckpointRecord(ctx, rec("100", -1)) }, ErrInvalidSequenceNumber, at("100", 1)},
		{func() error { return cp.CheckpointRecord(ctx, rec("x", 1)) }, ErrInvalidSequenceNumber, at("100", 1)},
		{func() error { return cp.Checkpoint(ctx, "100:3") }, ErrInvalidSequenceNumber, at("100", 1)},
		// Checkpoint of the aggregate's sequence number: all its user records.
		{func() error { return cp.Checkpoint(ctx, "100") }, nil, at("100", 4)},
		{func() error { return cp.CheckpointRecord(ctx, rec("100", 4)) }, nil, at("100", 4)},
		{func() error { return cp.Checkpoint(ctx, "150") }, nil, at("150", 0)},
		{func() error { return cp.CheckpointRecord(ctx, rec("200", 0)) }, nil, at("200", 0)},
		{func() error { return cp.Checkpoint(ctx, "200") }, nil, at("200", 1)},
		{func() error { return cp.CheckpointRecord(ctx, stream.Record{SequenceNumber: "300"}) }, nil, at("300", 0)},
	}
	for i, s := range steps {
		err := s.do()
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
			t.Fatalf("step %d: %v, want %v", i, err, s.wantErr)
		}
		if got := stored(); got != s.want {
			t.Fatalf("step %d: stored %v, want %v", i, got, s.want)
		}
	}
	if last := cp.LastExtendedSequenceNumber(); last != at("300", 0) || cp.LastCheckpoint() != "300" {
		t.Errorf("LastExtendedSequenceNumber = %v", last)
	}
	if len(cp.aggregates) != 0 {
		t.Errorf("aggregates at or before the checkpoint are still remembered: %v", cp.aggregates)
	}
}

func TestAfterCheckpoint(t *testing.T) {
	recs := []stream.Record{{SequenceNumber: "5"}, {SequenceNumber: "7", SubSequenceNumber: 0, Aggregated: true},
		{SequenceNumber: "7", SubSequenceNumber: 1, Aggregated: true}, {SequenceNumber: "9"}}
	for _, tc := range []struct {
		cp   lease.ExtendedSequenceNumber
		want int
	}{{lease.ExtendedSequenceNumber{SequenceNumber: lease.TrimHorizon}, 4}, {lease.ExtendedSequenceNumber{SequenceNumber: "4"}, 4},
		{lease.ExtendedSequenceNumber{SequenceNumber: "5"}, 3}, {lease.ExtendedSequenceNumber{SequenceNumber: "7"}, 2},
		{lease.ExtendedSequenceNumber{SequenceNumber: "7", SubSequenceNumber: 1}, 1}, {lease.ExtendedSequenceNumber{SequenceNumber: "9"}, 0},
		{lease.ExtendedSequenceNumber{SequenceNumber: "10"}, 0}, {lease.ExtendedSequenceNumber{}, 4}} {
		if got := after(recs, tc.cp); len(got) != tc.want {
			t.Errorf("after(%v) = %d records, want %d", tc.cp, len(got), tc.want)
		}
	}
}
