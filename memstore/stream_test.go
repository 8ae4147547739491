package memstore_test

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newStream(t *testing.T, shards int) (*memstore.Stream, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	s := memstore.NewStream(shards)
	s.Now = clk.Now
	return s, clk
}

func shardID(i int) string { return fmt.Sprintf("shardId-%012d", i) }

// readAll reads a shard from pos until it is caught up or ends.
func readAll(t *testing.T, s *memstore.Stream, id string, pos stream.Position, limit int) ([]stream.Record, stream.Batch) {
	t.Helper()
	ctx := context.Background()
	it, err := s.GetShardIterator(ctx, id, pos)
	if err != nil {
		t.Fatal(err)
	}
	var recs []stream.Record
	for {
		b, err := s.GetRecords(ctx, it, limit)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, b.Records...)
		if b.NextIterator == "" || len(b.Records) == 0 {
			return recs, b
		}
		it = b.NextIterator
	}
}

func TestStreamRangesAndRouting(t *testing.T) {
	const n = 8
	s, _ := newStream(t, n)
	shards, err := s.ListShards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != n || shards[0].ID != "shardId-000000000000" || shards[n-1].ID != shardID(n-1) {
		t.Fatalf("shards %v", shards)
	}
	// The ranges tile [0, 2^128).
	next := new(big.Int)
	for _, sh := range shards {
		start, end, err := s.HashRange(sh.ID)
		if err != nil {
			t.Fatal(err)
		}
		if start.Cmp(next) != 0 || end.Cmp(start) < 0 {
			t.Fatalf("%s: [%v, %v] after %v", sh.ID, start, end, next)
		}
		next.Add(end, big.NewInt(1))
	}
	if want := new(big.Int).Lsh(big.NewInt(1), 128); next.Cmp(want) != 0 {
		t.Fatalf("ranges end at %v", next)
	}

	hits := map[string]int{}
	lastSeq := ""
	for i := range 4000 {
		key := "key-" + strconv.Itoa(i)
		id, seq := s.Put(key, []byte(key))
		hits[id]++
		if len(seq) < 20 || seq <= lastSeq {
			t.Fatalf("sequence %q after %q", seq, lastSeq)
		}
		lastSeq = seq
		sum := md5.Sum([]byte(key))
		h := new(big.Int).SetBytes(sum[:])
		start, end, _ := s.HashRange(id)
		if h.Cmp(start) < 0 || h.Cmp(end) > 0 {
			t.Fatalf("key %q (hash %v) routed to %s [%v, %v]", key, h, id, start, end)
		}
	}
	if len(hits) != n {
		t.Fatalf("only %d of %d shards received records: %v", len(hits), n, hits)
	}
}

func TestStreamIteratorPositions(t *testing.T) {
	s, clk := newStream(t, 1)
	id := shardID(0)
	var seqs []string
	for i := range 5 {
		_, seq := s.Put("k", []byte{byte(i)})
		seqs = append(seqs, seq)
		clk.Advance(time.Second)
	}
	tests := []struct {
		name    string
		shard   string
		pos     stream.Position
		want    []string // sequence numbers read
		wantErr error
	}{
		{"trim horizon", id, stream.Position{Type: stream.TrimHorizon}, seqs, nil},
		{"latest", id, stream.Position{Type: stream.Latest}, nil, nil},
		{"at sequence", id, stream.Position{Type: stream.AtSequenceNumber, SequenceNumber: seqs[2]}, seqs[2:], nil},
		{"after sequence", id, stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: seqs[2]}, seqs[3:], nil},
		{"after last", id, stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: seqs[4]}, nil, nil},
		{"after sequence without leading zeros", id, stream.Position{Type: stream.AfterSequenceNumber, SequenceNumber: "3"}, seqs[3:], nil},
		{"at timestamp", id, stream.Position{Type: stream.AtTimestamp, Timestamp: t0.Add(1500 * time.Millisecond)}, seqs[2:], nil},
		{"at exact timestamp", id, stream.Position{Type: stream.AtTimestamp, Timestamp: t0.Add(time.Second)}, seqs[1:], nil},
		{"timestamp in the future", id, stream.Position{Type: stream.AtTimestamp, Timestamp: t0.Add(time.Hour)}, nil, nil},
		{"bad sequence", id, stream.Position{Type: stream.AtSequenceNumber, SequenceNumber: "x"}, nil, memstore.ErrInvalidArgument},
		{"bad type", id, stream.Position{Type: "NOW"}, nil, memstore.ErrInvalidArgument},
		{"unknown shard", "shardId-999", stream.Position{Type: stream.TrimHorizon}, nil, stream.ErrStreamNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			it, err := s.GetShardIterator(context.Background(), tc.shard, tc.pos)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			b, err := s.GetRecords(context.Background(), it, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range b.Records {
				got = append(got, r.SequenceNumber)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("read %v, want %v", got, tc.want)
			}
			if b.NextIterator == "" || b.MillisBehindLatest != 0 {
				t.Fatalf("open shard caught up: next %q, behind %d", b.NextIterator, b.MillisBehindLatest)
			}
		})
	}

	// LATEST sees records put after the iterator was made.
	it, _ := s.GetShardIterator(context.Background(), id, stream.Position{Type: stream.Latest})
	_, seq := s.Put("k", nil)
	b, _ := s.GetRecords(context.Background(), it, 10)
	if len(b.Records) != 1 || b.Records[0].SequenceNumber != seq {
		t.Fatalf("LATEST read %v", b.Records)
	}
}

func TestStreamPagingAndLag(t *testing.T) {
	s, clk := newStream(t, 1)
	for range 10 {
		s.Put("k", []byte("v"))
	}
	clk.Advance(3 * time.Second)
	it, _ := s.GetShardIterator(context.Background(), shardID(0), stream.Position{Type: stream.TrimHorizon})
	b, err := s.GetRecords(context.Background(), it, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Records) != 4 || b.MillisBehindLatest != 3000 {
		t.Fatalf("first page: %d records, %d ms behind", len(b.Records), b.MillisBehindLatest)
	}
	if !b.Records[0].ApproximateArrivalTimestamp.Equal(t0) {
		t.Fatalf("arrival %v", b.Records[0].ApproximateArrivalTimestamp)
	}
	recs, last := readAll(t, s, shardID(0), stream.Position{Type: stream.TrimHorizon}, 4)
	if len(recs) != 10 || last.MillisBehindLatest != 0 {
		t.Fatalf("read %d, behind %d", len(recs), last.MillisBehindLatest)
	}
	// A record arriving now is still unread: lag must not read as caught up.
	s.Put("k", nil)
	it, _ = s.GetShardIterator(context.Background(), shardID(0), stream.Position{Type: stream.TrimHorizon})
	if b, _ := s.GetRecords(context.Background(), it, 10); b.MillisBehindLatest == 0 {
		t.Fatal("behind but MillisBehindLatest is 0")
	}
	if _, err := s.GetRecords(context.Background(), "garbage", 10); !errors.Is(err, memstore.ErrInvalidArgument) {
		t.Fatalf("bad iterator: %v", err)
	}
}

func TestStreamSplitAndReadThrough(t *testing.T) {
	s, _ := newStream(t, 1)
	parent := shardID(0)
	s.Put("before-1", nil)
	s.Put("before-2", nil)
	// An iterator taken before the split keeps working on the closed parent.
	it, _ := s.GetShardIterator(context.Background(), parent, stream.Position{Type: stream.TrimHorizon})
	if err := s.UpdateShardCount(2); err != nil {
		t.Fatal(err)
	}
	shards := s.Shards()
	const half, top = "170141183460469231731687303715884105728", "340282366920938463463374607431768211455"
	want := []stream.Shard{
		{ID: parent, Closed: true, StartingHashKey: "0", EndingHashKey: top},
		{ID: shardID(1), ParentShardID: parent, StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727"},
		{ID: shardID(2), ParentShardID: parent, StartingHashKey: half, EndingHashKey: top},
	}
	if !reflect.DeepEqual(shards, want) {
		t.Fatalf("shards %+v, want %+v", shards, want)
	}
	afterHits := map[string]int{}
	for i := range 200 {
		id, _ := s.Put(fmt.Sprintf("after-%d", i), nil)
		afterHits[id]++
	}
	if afterHits[parent] != 0 || afterHits[shardID(1)] == 0 || afterHits[shardID(2)] == 0 {
		t.Fatalf("puts after split went to %v", afterHits)
	}

	b, err := s.GetRecords(context.Background(), it, 1)
	if err != nil || len(b.Records) != 1 || b.NextIterator == "" || b.ChildShards != nil {
		t.Fatalf("first page of parent: %+v, %v", b, err)
	}
	b, err = s.GetRecords(context.Background(), b.NextIterator, 1)
	if err != nil {
		t.Fatal(err)
	}
	wantChildren := []stream.ChildShard{
		{ShardID: shardID(1), ParentShardIDs: []string{parent}},
		{ShardID: shardID(2), ParentShardIDs: []string{parent}},
	}
	if len(b.Records) != 1 || b.NextIterator != "" || !reflect.DeepEqual(b.ChildShards, wantChildren) {
		t.Fatalf("end of parent: %+v", b)
	}
	// Reading a closed shard from LATEST reports its end at once.
	_, end := readAll(t, s, parent, stream.Position{Type: stream.Latest}, 10)
	if end.NextIterator != "" || len(end.ChildShards) != 2 {
		t.Fatalf("LATEST on closed shard: %+v", end)
	}
	total := 0
	for _, c := range wantChildren {
		recs, _ := readAll(t, s, c.ShardID, stream.Position{Type: stream.TrimHorizon}, 1000)
		total += len(recs)
	}
	if total != 200 {
		t.Fatalf("children hold %d records, want 200", total)
	}
}

func TestStreamMerge(t *testing.T) {
	s, _ := newStream(t, 4)
	if err := s.UpdateShardCount(2); err != nil {
		t.Fatal(err)
	}
	got := s.Shards()[4:]
	want := []stream.Shard{
		{ID: shardID(4), ParentShardID: shardID(0), AdjacentParentShardID: shardID(1),
			StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727"},
		{ID: shardID(5), ParentShardID: shardID(2), AdjacentParentShardID: shardID(3),
			StartingHashKey: "170141183460469231731687303715884105728", EndingHashKey: "340282366920938463463374607431768211455"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("children %+v, want %+v", got, want)
	}
	for _, p := range []string{shardID(0), shardID(1)} {
		_, end := readAll(t, s, p, stream.Position{Type: stream.TrimHorizon}, 10)
		wantChild := []stream.ChildShard{{ShardID: shardID(4), ParentShardIDs: []string{shardID(0), shardID(1)}}}
		if end.NextIterator != "" || !reflect.DeepEqual(end.ChildShards, wantChild) {
			t.Fatalf("end of %s: %+v", p, end)
		}
	}
	start, end, _ := s.HashRange(shardID(4))
	s0, _, _ := s.HashRange(shardID(0))
	_, e1, _ := s.HashRange(shardID(1))
	if start.Cmp(s0) != 0 || end.Cmp(e1) != 0 {
		t.Fatalf("merged range [%v, %v]", start, end)
	}
}

func TestStreamReshardErrors(t *testing.T) {
	tests := []struct {
		name    string
		shards  int
		op      func(*memstore.Stream) error
		wantErr error
		open    int
	}{
		{"same count", 4, func(s *memstore.Stream) error { return s.UpdateShardCount(4) }, nil, 4},
		{"double", 3, func(s *memstore.Stream) error { return s.UpdateShardCount(6) }, nil, 6},
		{"halve odd", 3, func(s *memstore.Stream) error { return s.UpdateShardCount(1) }, memstore.ErrInvalidArgument, 3},
		{"triple", 2, func(s *memstore.Stream) error { return s.UpdateShardCount(6) }, memstore.ErrInvalidArgument, 2},
		{"split one", 2, func(s *memstore.Stream) error { return s.SplitShard(shardID(1)) }, nil, 3},
		{"split closed", 2, func(s *memstore.Stream) error {
			_ = s.SplitShard(shardID(0))
			return s.SplitShard(shardID(0))
		}, memstore.ErrInvalidArgument, 3},
		{"split unknown", 2, func(s *memstore.Stream) error { return s.SplitShard("x") }, stream.ErrStreamNotFound, 2},
		{"merge adjacent reversed", 3, func(s *memstore.Stream) error { return s.MergeShards(shardID(2), shardID(1)) }, nil, 2},
		{"merge not adjacent", 3, func(s *memstore.Stream) error { return s.MergeShards(shardID(0), shardID(2)) }, memstore.ErrInvalidArgument, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStream(t, tc.shards)
			if err := tc.op(s); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if got := s.OpenShards(); got != tc.open {
				t.Fatalf("%d open shards, want %d", got, tc.open)
			}
			// Whatever the topology, every key still has exactly one open shard.
			for i := range 100 {
				id, _ := s.Put(strconv.Itoa(i), nil)
				for _, sh := range s.Shards() {
					if sh.ID == id && sh.Closed {
						t.Fatalf("put routed to closed shard %s", id)
					}
				}
			}
		})
	}
}

func TestStreamFaultsAndLimits(t *testing.T) {
	ctx := context.Background()
	s, clk := newStream(t, 2)
	s.Put("k", []byte("v"))
	it0, _ := s.GetShardIterator(ctx, shardID(0), stream.Position{Type: stream.TrimHorizon})
	it1, _ := s.GetShardIterator(ctx, shardID(1), stream.Position{Type: stream.TrimHorizon})

	s.InjectError("GetRecords/"+shardID(1), stream.ErrThrottled, 1)
	if _, err := s.GetRecords(ctx, it0, 10); err != nil {
		t.Fatalf("other shard affected: %v", err)
	}
	if _, err := s.GetRecords(ctx, it1, 10); !errors.Is(err, stream.ErrThrottled) {
		t.Fatalf("targeted shard: %v", err)
	}
	s.InjectError("GetRecords", stream.ErrExpiredIterator, 1)
	if _, err := s.GetRecords(ctx, it0, 10); !errors.Is(err, stream.ErrExpiredIterator) {
		t.Fatalf("op-wide injection: %v", err)
	}
	s.InjectError("ListShards", stream.ErrAccessDenied, -1)
	if _, err := s.ListShards(ctx); !errors.Is(err, stream.ErrAccessDenied) {
		t.Fatalf("ListShards: %v", err)
	}
	s.ClearErrors()
	s.InjectError("GetShardIterator/"+shardID(0), stream.ErrThrottled, 1)
	if _, err := s.GetShardIterator(ctx, shardID(0), stream.Position{Type: stream.Latest}); !errors.Is(err, stream.ErrThrottled) {
		t.Fatalf("shard-specific injection: %v", err)
	}

	if got, want := s.ShardCalls(shardID(0)), map[string]int{"GetShardIterator": 2, "GetRecords": 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ShardCalls = %v, want %v", got, want)
	}
	if got, want := s.Calls(), map[string]int{"GetShardIterator": 3, "GetRecords": 3, "ListShards": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Calls = %v, want %v", got, want)
	}

	// Iterator expiry on the stream's clock.
	s.IteratorTTL = 5 * time.Minute
	clk.Advance(5*time.Minute + time.Millisecond)
	if _, err := s.GetRecords(ctx, it0, 10); !errors.Is(err, stream.ErrExpiredIterator) {
		t.Fatalf("old iterator: %v", err)
	}
	s.IteratorTTL = 0

	// Five reads a second per shard; the window slides with the clock.
	s.ResetCalls()
	s.ReadsPerSecond = 5
	it, _ := s.GetShardIterator(ctx, shardID(1), stream.Position{Type: stream.Latest})
	for i := range 5 {
		if _, err := s.GetRecords(ctx, it, 10); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		clk.Advance(100 * time.Millisecond)
	}
	if _, err := s.GetRecords(ctx, it, 10); !errors.Is(err, stream.ErrThrottled) {
		t.Fatalf("sixth read within a second: %v", err)
	}
	if _, err := s.GetRecords(ctx, it0, 10); err != nil {
		t.Fatalf("other shard throttled: %v", err)
	}
	clk.Advance(600 * time.Millisecond)
	if _, err := s.GetRecords(ctx, it, 10); err != nil {
		t.Fatalf("read after the window moved: %v", err)
	}
	if got := s.Calls()["GetRecords.throttled"]; got != 1 {
		t.Fatalf("throttled count %d", got)
	}
}

func TestStreamCopiesAreIsolated(t *testing.T) {
	s, _ := newStream(t, 1)
	data := []byte("abc")
	s.Put("k", data)
	data[0] = 'X'
	recs, _ := readAll(t, s, shardID(0), stream.Position{Type: stream.TrimHorizon}, 10)
	recs[0].Data[1] = 'Y'
	s.Shards()[0].ID = "changed"
	recs, _ = readAll(t, s, shardID(0), stream.Position{Type: stream.TrimHorizon}, 10)
	if string(recs[0].Data) != "abc" || s.Shards()[0].ID != shardID(0) {
		t.Fatalf("stored state changed through copies: %q", recs[0].Data)
	}
	start, _, _ := s.HashRange(shardID(0))
	start.SetInt64(42)
	if again, _, _ := s.HashRange(shardID(0)); again.Sign() != 0 {
		t.Fatal("hash range changed through a returned value")
	}
}

func TestStreamLargeReshard(t *testing.T) {
	s, _ := newStream(t, 5000)
	if err := s.UpdateShardCount(10000); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateShardCount(5000); err != nil {
		t.Fatal(err)
	}
	if got := len(s.Shards()); got != 20000 {
		t.Fatalf("%d shards", got)
	}
	for i := range 1000 {
		s.Put(strconv.Itoa(i), nil)
	}
}

func TestStreamTrimShard(t *testing.T) {
	s, _ := newStream(t, 2)
	ctx := context.Background()
	parent := shardID(0)
	s.Put("a", []byte("x"))
	if err := s.TrimShard(parent); !errors.Is(err, memstore.ErrInvalidArgument) {
		t.Fatalf("trimming an open shard: %v, want ErrInvalidArgument", err)
	}
	oldIt, err := s.GetShardIterator(ctx, parent, stream.Position{Type: stream.TrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SplitShard(parent); err != nil {
		t.Fatal(err)
	}
	if err := s.TrimShard(parent); err != nil {
		t.Fatal(err)
	}
	shards, err := s.ListShards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sh := range shards {
		ids = append(ids, sh.ID)
		if sh.ID == parent {
			t.Fatalf("trimmed shard still listed: %v", shards)
		}
	}
	// Ids are never reused after a trim; children keep their parent link.
	want := []string{shardID(1), shardID(2), shardID(3)}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("shards after trim %v, want %v", ids, want)
	}
	if shards[1].ParentShardID != parent {
		t.Fatalf("child lost its parent link: %+v", shards[1])
	}
	if _, err := s.GetShardIterator(ctx, parent, stream.Position{Type: stream.TrimHorizon}); !errors.Is(err, stream.ErrStreamNotFound) {
		t.Fatalf("GetShardIterator on a trimmed shard: %v, want ErrStreamNotFound", err)
	}
	if _, err := s.GetRecords(ctx, oldIt, 10); !errors.Is(err, stream.ErrStreamNotFound) {
		t.Fatalf("GetRecords on a trimmed shard: %v, want ErrStreamNotFound", err)
	}
	if err := s.TrimShard(parent); !errors.Is(err, stream.ErrStreamNotFound) {
		t.Fatalf("trimming twice: %v, want ErrStreamNotFound", err)
	}
	if err := s.SplitShard(shardID(1)); err != nil {
		t.Fatal(err)
	}
	if got := s.Shards(); got[len(got)-1].ID != shardID(5) {
		t.Fatalf("new shard ids after a trim: %v", got)
	}
}
