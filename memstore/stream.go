package memstore

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// MaxRecordsPerCall is the most records one GetRecords call returns, as in Kinesis.
const MaxRecordsPerCall = 10000

// seqWidth is the width of sequence numbers: wide enough for any uint64, so that string
// order equals numeric order.
const seqWidth = 21

// ErrInvalidArgument reports a malformed request (bad iterator, sequence number, position
// or resharding target), like Kinesis's InvalidArgumentException.
var ErrInvalidArgument = errors.New("invalid argument")

// Stream is an in-memory Kinesis stream implementing consumer.Stream. Records are kept
// until TrimShard removes a closed shard (there is no retention period otherwise).
//
// Operation names for Calls, ShardCalls and InjectError are "ListShards",
// "GetShardIterator" and "GetRecords". InjectError also accepts "GetRecords/<shard id>"
// and "GetShardIterator/<shard id>" to fail one shard only. Calls counts GetRecords calls
// refused by ReadsPerSecond under "GetRecords.throttled".
//
// Set the exported fields before the stream is shared.
type Stream struct {
	// Now stamps records' ApproximateArrivalTimestamp and drives MillisBehindLatest,
	// IteratorTTL and ReadsPerSecond. NewStream sets it to time.Now.
	Now func() time.Time
	// IteratorTTL, when positive, makes GetRecords fail with stream.ErrExpiredIterator for
	// iterators older than it (Kinesis: five minutes).
	IteratorTTL time.Duration
	// ReadsPerSecond, when positive, makes GetRecords fail with stream.ErrThrottled when a
	// shard already served that many calls in the last second (Kinesis: 5).
	ReadsPerSecond int

	faults

	mu     sync.Mutex
	shards map[string]*shard
	all    []*shard // in creation order, which is shard id order; trimmed shards removed
	open   []*shard // sorted by hash range; together they cover the whole range
	seq    uint64   // last sequence number handed out
	// created counts every shard ever created, trimmed ones included, so ids never repeat.
	created int
	// trimmed keeps the shards removed by TrimShard, for their children's parent links.
	trimmed map[string]*shard
}

type shard struct {
	info       stream.Shard
	start, end *big.Int // inclusive hash key range
	records    []stream.Record
	children   []string
	reads      []time.Time // times of recent accepted GetRecords calls, for ReadsPerSecond
}

// NewStream returns a stream of n open shards, shardId-000000000000 onwards, splitting the
// 128-bit hash key range evenly. It panics if n < 1.
func NewStream(n int) *Stream {
	if n < 1 {
		panic("memstore: NewStream needs at least one shard")
	}
	s := &Stream{Now: time.Now, shards: make(map[string]*shard, n)}
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	for i := range n {
		start := new(big.Int).Mul(space, big.NewInt(int64(i)))
		start.Div(start, big.NewInt(int64(n)))
		end := new(big.Int).Mul(space, big.NewInt(int64(i+1)))
		end.Div(end, big.NewInt(int64(n)))
		end.Sub(end, big.NewInt(1))
		s.open = append(s.open, s.addLocked(stream.Shard{}, start, end))
	}
	return s
}

// addLocked creates a shard with the next id.
func (s *Stream) addLocked(info stream.Shard, start, end *big.Int) *shard {
	info.ID = fmt.Sprintf("shardId-%012d", s.created)
	info.StartingHashKey, info.EndingHashKey = start.String(), end.String()
	s.created++
	sh := &shard{info: info, start: start, end: end}
	s.shards[info.ID] = sh
	s.all = append(s.all, sh)
	return sh
}

func (s *Stream) begin(ctx context.Context, op, shardID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var specific []string
	if shardID != "" {
		specific = []string{op + "/" + shardID}
	}
	return s.faults.begin(op, shardID, specific...)
}

// ShardCalls returns how many times each operation was called for the shard.
func (s *Stream) ShardCalls(shardID string) map[string]int { return s.keyCalls(shardID) }

// Put appends a record to the open shard whose hash key range holds the MD5 of
// partitionKey, as Kinesis PutRecord does, and returns the shard and sequence number.
func (s *Stream) Put(partitionKey string, data []byte) (shardID, seq string) {
	sum := md5.Sum([]byte(partitionKey))
	return s.PutHashKey(partitionKey, new(big.Int).SetBytes(sum[:]), data)
}

// PutHashKey is Put with an explicit hash key h (in [0, 2^128)), as PutRecord with
// ExplicitHashKey does: the record goes to the open shard whose range holds h.
func (s *Stream) PutHashKey(partitionKey string, h *big.Int, data []byte) (shardID, seq string) {
	now := wallTime(s.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	// The open shards tile the range in order, so the owner is the last one starting at
	// or below h.
	i := sort.Search(len(s.open), func(i int) bool { return s.open[i].start.Cmp(h) > 0 }) - 1
	sh := s.open[i]
	if n := len(sh.records); n > 0 && now.Before(sh.records[n-1].ApproximateArrivalTimestamp) {
		// Keep arrival times ordered within a shard so AT_TIMESTAMP can binary-search.
		now = sh.records[n-1].ApproximateArrivalTimestamp
	}
	s.seq++
	seq = formatSeq(s.seq)
	sh.records = append(sh.records, stream.Record{
		SequenceNumber:              seq,
		PartitionKey:                partitionKey,
		Data:                        slices.Clone(data),
		ApproximateArrivalTimestamp: now,
	})
	return sh.info.ID, seq
}

// ListShards implements consumer.Stream. Shards are in id order.
func (s *Stream) ListShards(ctx context.Context) ([]stream.Shard, error) {
	if err := s.begin(ctx, "ListShards", ""); err != nil {
		return nil, err
	}
	return s.Shards(), nil
}

// Shards returns every shard like ListShards, bypassing counts and injected errors.
func (s *Stream) Shards() []stream.Shard {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]stream.Shard, len(s.all))
	for i, sh := range s.all {
		out[i] = sh.info
	}
	return out
}

// OpenShards returns the number of open shards.
func (s *Stream) OpenShards() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// HashRange returns the inclusive hash key range of the shard.
func (s *Stream) HashRange(shardID string) (start, end *big.Int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.shards[shardID]
	if !ok {
		return nil, nil, fmt.Errorf("memstore: shard %q: %w", shardID, stream.ErrStreamNotFound)
	}
	return new(big.Int).Set(sh.start), new(big.Int).Set(sh.end), nil
}

// GetShardIterator implements consumer.Stream. A sequence number need not belong to the
// shard: the iterator starts at the shard's first record at (or after) it.
func (s *Stream) GetShardIterator(ctx context.Context, shardID string, pos stream.Position) (string, error) {
	if err := s.begin(ctx, "GetShardIterator", shardID); err != nil {
		return "", err
	}
	now := s.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.shards[shardID]
	if !ok {
		return "", fmt.Errorf("memstore: shard %q: %w", shardID, stream.ErrStreamNotFound)
	}
	recs := sh.records
	var i int
	switch pos.Type {
	case stream.TrimHorizon:
		i = 0
	case stream.Latest:
		i = len(recs)
	case stream.AtTimestamp:
		i = sort.Search(len(recs), func(i int) bool { return !recs[i].ApproximateArrivalTimestamp.Before(pos.Timestamp) })
	case stream.AtSequenceNumber, stream.AfterSequenceNumber:
		seq, err := normalizeSeq(pos.SequenceNumber)
		if err != nil {
			return "", err
		}
		after := pos.Type == stream.AfterSequenceNumber
		i = sort.Search(len(recs), func(i int) bool {
			c := strings.Compare(recs[i].SequenceNumber, seq)
			return c > 0 || (c == 0 && !after)
		})
	default:
		return "", fmt.Errorf("memstore: position type %q: %w", pos.Type, ErrInvalidArgument)
	}
	return encodeIterator(shardID, i, now), nil
}

// GetRecords implements consumer.Stream. A limit outside 1..MaxRecordsPerCall means
// MaxRecordsPerCall. The call that reaches the end of a closed shard returns its last
// records (if any) with an empty NextIterator and the shard's children.
func (s *Stream) GetRecords(ctx context.Context, iterator string, limit int) (stream.Batch, error) {
	if err := ctx.Err(); err != nil {
		return stream.Batch{}, err
	}
	shardID, i, issued, err := decodeIterator(iterator)
	if err != nil {
		s.faults.countKey("GetRecords")
		return stream.Batch{}, err
	}
	if err := s.begin(ctx, "GetRecords", shardID); err != nil {
		return stream.Batch{}, err
	}
	if limit < 1 || limit > MaxRecordsPerCall {
		limit = MaxRecordsPerCall
	}
	now := s.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.shards[shardID]
	if !ok {
		return stream.Batch{}, fmt.Errorf("memstore: shard %q: %w", shardID, stream.ErrStreamNotFound)
	}
	if i > len(sh.records) {
		return stream.Batch{}, fmt.Errorf("memstore: iterator past the shard's end: %w", ErrInvalidArgument)
	}
	if s.IteratorTTL > 0 && now.Sub(issued) > s.IteratorTTL {
		return stream.Batch{}, fmt.Errorf("memstore: iterator for %q issued %v ago: %w", shardID, now.Sub(issued), stream.ErrExpiredIterator)
	}
	if s.ReadsPerSecond > 0 {
		// Forget calls that left the one-second window, then count this one if it fits.
		cut := 0
		for cut < len(sh.reads) && now.Sub(sh.reads[cut]) >= time.Second {
			cut++
		}
		sh.reads = sh.reads[cut:]
		if len(sh.reads) >= s.ReadsPerSecond {
			s.faults.countKey("GetRecords.throttled")
			return stream.Batch{}, fmt.Errorf("memstore: shard %q read more than %d times a second: %w", shardID, s.ReadsPerSecond, stream.ErrThrottled)
		}
		sh.reads = append(sh.reads, now)
	}

	j := min(i+limit, len(sh.records))
	b := stream.Batch{Records: make([]stream.Record, j-i)}
	for k, r := range sh.records[i:j] {
		r.Data = slices.Clone(r.Data)
		b.Records[k] = r
	}
	if j < len(sh.records) {
		// At least 1, so that 0 always means caught up even when the clock has not moved.
		b.MillisBehindLatest = max(1, now.Sub(sh.records[j].ApproximateArrivalTimestamp).Milliseconds())
	}
	if sh.info.Closed && j == len(sh.records) {
		for _, id := range sh.children {
			ch, ok := s.shards[id]
			if !ok {
				ch = s.trimmed[id]
			}
			b.ChildShards = append(b.ChildShards, stream.ChildShard{ShardID: id, ParentShardIDs: ch.info.Parents()})
		}
		return b, nil
	}
	b.NextIterator = encodeIterator(shardID, j, now)
	return b, nil
}

// SplitShard closes an open shard and creates two children that share its hash key range
// at the midpoint.
func (s *Stream) SplitShard(shardID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, err := s.openIndexLocked(shardID)
	if err != nil {
		return err
	}
	s.open = slices.Replace(s.open, i, i+1, s.splitLocked(s.open[i])...)
	return nil
}

// MergeShards closes two open shards with adjacent hash key ranges and creates their
// child, whose ParentShardID is shardID and AdjacentParentShardID adjacentID.
func (s *Stream) MergeShards(shardID, adjacentID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, err := s.openIndexLocked(shardID)
	if err != nil {
		return err
	}
	j, err := s.openIndexLocked(adjacentID)
	if err != nil {
		return err
	}
	if j != i+1 && i != j+1 {
		return fmt.Errorf("memstore: shards %q and %q are not adjacent: %w", shardID, adjacentID, ErrInvalidArgument)
	}
	child := s.mergeLocked(s.open[i], s.open[j])
	s.open = slices.Replace(s.open, min(i, j), max(i, j)+1, child)
	return nil
}

// UpdateShardCount reshards uniformly, like Kinesis UNIFORM_SCALING restricted to the
// simple cases: to twice the open shards it splits every open shard, to half (from an even
// count) it merges neighbours pairwise. Other targets fail with ErrInvalidArgument.
func (s *Stream) UpdateShardCount(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := len(s.open)
	switch {
	case n == c:
		return nil
	case n == 2*c:
		open := make([]*shard, 0, n)
		for _, sh := range s.open {
			open = append(open, s.splitLocked(sh)...)
		}
		s.open = open
	case c%2 == 0 && n == c/2:
		open := make([]*shard, 0, n)
		for i := 0; i < c; i += 2 {
			open = append(open, s.mergeLocked(s.open[i], s.open[i+1]))
		}
		s.open = open
	default:
		return fmt.Errorf("memstore: UpdateShardCount from %d to %d (only doubling or halving): %w", c, n, ErrInvalidArgument)
	}
	return nil
}

// TrimShard removes a closed shard as Kinesis does once its retention period has passed:
// ListShards no longer lists it, and GetShardIterator and GetRecords for it fail with an
// error wrapping stream.ErrStreamNotFound (iterators issued earlier included). Its
// children keep naming it as their parent. An open shard cannot be trimmed
// (ErrInvalidArgument).
func (s *Stream) TrimShard(shardID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.shards[shardID]
	if !ok {
		return fmt.Errorf("memstore: shard %q: %w", shardID, stream.ErrStreamNotFound)
	}
	if !sh.info.Closed {
		return fmt.Errorf("memstore: shard %q is open; only closed shards age out: %w", shardID, ErrInvalidArgument)
	}
	delete(s.shards, shardID)
	s.all = slices.DeleteFunc(s.all, func(x *shard) bool { return x == sh })
	if s.trimmed == nil {
		s.trimmed = make(map[string]*shard)
	}
	s.trimmed[shardID] = sh
	return nil
}

// openIndexLocked finds an open shard's position in s.open by its range start.
func (s *Stream) openIndexLocked(shardID string) (int, error) {
	sh, ok := s.shards[shardID]
	if !ok {
		return 0, fmt.Errorf("memstore: shard %q: %w", shardID, stream.ErrStreamNotFound)
	}
	if sh.info.Closed {
		return 0, fmt.Errorf("memstore: shard %q is closed: %w", shardID, ErrInvalidArgument)
	}
	i := sort.Search(len(s.open), func(i int) bool { return s.open[i].start.Cmp(sh.start) >= 0 })
	return i, nil
}

func (s *Stream) splitLocked(p *shard) []*shard {
	// The lower child gets [start, mid-1], the upper [mid, end]; a one-key range cannot
	// split, which at 2^128 keys no test will reach.
	mid := new(big.Int).Add(p.start, p.end)
	mid.Add(mid, big.NewInt(1))
	mid.Rsh(mid, 1)
	lowEnd := new(big.Int).Sub(mid, big.NewInt(1))
	p.info.Closed = true
	a := s.addLocked(stream.Shard{ParentShardID: p.info.ID}, p.start, lowEnd)
	b := s.addLocked(stream.Shard{ParentShardID: p.info.ID}, mid, p.end)
	p.children = []string{a.info.ID, b.info.ID}
	return []*shard{a, b}
}

func (s *Stream) mergeLocked(p, adj *shard) *shard {
	p.info.Closed = true
	adj.info.Closed = true
	lo, hi := p, adj
	if hi.start.Cmp(lo.start) < 0 {
		lo, hi = hi, lo
	}
	c := s.addLocked(stream.Shard{ParentShardID: p.info.ID, AdjacentParentShardID: adj.info.ID}, lo.start, hi.end)
	p.children = []string{c.info.ID}
	adj.children = []string{c.info.ID}
	return c
}

func formatSeq(n uint64) string { return fmt.Sprintf("%0*d", seqWidth, n) }

// normalizeSeq turns a sequence number into the stored fixed-width form, so it compares
// correctly with stored ones even if a caller dropped leading zeros.
func normalizeSeq(seq string) (string, error) {
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return "", fmt.Errorf("memstore: sequence number %q: %w", seq, ErrInvalidArgument)
	}
	return formatSeq(n), nil
}

// Iterators are opaque to callers; encoding them keeps callers from building their own.
func encodeIterator(shardID string, i int, issued time.Time) string {
	raw := fmt.Sprintf("%s|%d|%d", shardID, i, issued.UnixNano())
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeIterator(it string) (shardID string, i int, issued time.Time, err error) {
	bad := fmt.Errorf("memstore: shard iterator %q: %w", it, ErrInvalidArgument)
	raw, err := base64.RawURLEncoding.DecodeString(it)
	if err != nil {
		return "", 0, time.Time{}, bad
	}
	parts := strings.Split(string(raw), "|")
	if len(parts) != 3 || parts[0] == "" {
		return "", 0, time.Time{}, bad
	}
	i, err = strconv.Atoi(parts[1])
	if err != nil || i < 0 {
		return "", 0, time.Time{}, bad
	}
	ns, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return "", 0, time.Time{}, bad
	}
	return parts[0], i, time.Unix(0, ns), nil
}
