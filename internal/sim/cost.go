package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Request accounting: every store request a worker makes is counted by operation, with
// the DynamoDB capacity units it would consume, computed from the size of the items the
// real codec (package dynamostore) writes.
//
// DynamoDB rules used (provisioned and on-demand alike):
//   - item size: the sum of the attribute names' lengths and the values' sizes; strings
//     and binary by their UTF-8 bytes, numbers about one byte per two significant digits
//     plus one, booleans and null one byte, sets and lists the sum of their elements
//     (plus 3 bytes for a list or map);
//   - strongly consistent GetItem: 1 read unit per 4 KB of the item, at least 1;
//   - strongly consistent Scan: per request (a page of at most 1 MB), 1 read unit per
//     4 KB of the items read, rounded up once for the page, at least 1;
//   - PutItem, UpdateItem, DeleteItem: 1 write unit per KB of the larger of the item
//     before and after, at least 1; a failed condition still costs the write.

// Prices: DynamoDB on-demand, us-east-1 (USD per million request units), as since
// November 2024 and as `make bench` prices the real engines' figures. The table
// used the earlier prices, twice these; the ratios between consumers do not depend on them.
const (
	PricePerMillionWRU = 0.625
	PricePerMillionRRU = 0.125
	MinutesPerMonth    = 43200
)

// scanPageBytes is DynamoDB's limit of data read by one Scan request.
const scanPageBytes = 1 << 20

// ItemSize is the DynamoDB size of an item in bytes.
func ItemSize(item map[string]types.AttributeValue) int {
	n := 0
	for name, v := range item {
		n += len(name) + valueSize(v)
	}
	return n
}

func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value) // Go strings are UTF-8 bytes
	case *types.AttributeValueMemberN:
		return numberSize(v.Value)
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		return sumSizes(v.Value, func(s string) int { return len(s) })
	case *types.AttributeValueMemberNS:
		return sumSizes(v.Value, numberSize)
	case *types.AttributeValueMemberBS:
		return sumSizes(v.Value, func(b []byte) int { return len(b) })
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + valueSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += 1 + len(k) + valueSize(e)
		}
		return n
	}
	return 0
}

// sumSizes is the size of a set: the sum of its members' sizes.
func sumSizes[T any](members []T, size func(T) int) int {
	n := 0
	for _, m := range members {
		n += size(m)
	}
	return n
}

// numberSize is the size of a number: one byte per two significant digits, plus one
// (the AWS rule: "approximately", up to 21 bytes).
func numberSize(s string) int {
	s = strings.TrimLeft(s, "+-")
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		s = s[:i]
	}
	s = strings.Replace(s, ".", "", 1)
	s = strings.TrimLeft(s, "0")
	s = strings.TrimRight(s, "0")
	digits := utf8.RuneCountInString(s)
	return min((digits+1)/2+1, 21)
}

// ReadUnits is the strongly consistent read units of a read of size bytes.
func ReadUnits(size int) int64 { return max(1, int64(math.Ceil(float64(size)/4096))) }

// WriteUnits is the write units of a write whose item is size bytes.
func WriteUnits(size int) int64 { return max(1, int64(math.Ceil(float64(size)/1024))) }

// ScanCost splits a Scan over items of the given sizes into requests (1 MB pages) and
// returns the requests and the read units.
func ScanCost(sizes []int) (requests, units int64) {
	page := 0
	flush := func() {
		requests++
		units += ReadUnits(page)
		page = 0
	}
	for _, s := range sizes {
		if page > 0 && page+s > scanPageBytes {
			flush()
		}
		page += s
	}
	flush()
	return requests, units
}

// Monthly is the on-demand cost per month of rru read and wru write units a minute.
func Monthly(rruPerMin, wruPerMin float64) float64 {
	return (rruPerMin*PricePerMillionRRU + wruPerMin*PricePerMillionWRU) * MinutesPerMonth / 1e6
}

// sizer computes item sizes with package dynamostore's encoder: a Store on a client that
// captures the item of a PutItem and applies nothing.
type sizer struct {
	store   *dynamostore.Store
	mu      sync.Mutex
	last    map[string]types.AttributeValue
	leases  map[leaseKey]int
	workers map[lease.WorkerRecord]int
}

// captureClient is a DynamoDB client that remembers the last item put.
type captureClient struct {
	dynamostore.DynamoDB // nil: any other call panics
	s                    *sizer
}

func (c captureClient) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.s.last = in.Item
	return &dynamodb.PutItemOutput{}, nil
}

// Attribute names the codec gives the fields CreateLease and ClaimCoordinator leave at
// their zero values; sizeLease and sizeCoordinator set them on the captured item (the
// tests check that the codec writes these names).
const (
	attrLeaseOwner   = "leaseOwner"
	attrLeaseCounter = "leaseCounter"
	attrMillisBehind = "millisBehindLatest"
)

func newSizer() *sizer {
	s := &sizer{leases: map[leaseKey]int{}, workers: map[lease.WorkerRecord]int{}}
	st, err := dynamostore.New(captureClient{s: s}, "simapp")
	if err != nil {
		panic(err)
	}
	s.store = st
	return s
}

// leaseItem returns the item the codec writes for l.
func (s *sizer) leaseItem(l lease.Lease) map[string]types.AttributeValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := l
	if cp.Checkpoint == "" {
		cp.Checkpoint = lease.TrimHorizon
	}
	if err := s.store.CreateLease(context.Background(), cp); err != nil {
		panic(fmt.Sprintf("sim: sizing lease %s: %v", l.ShardID, err))
	}
	item := s.last
	// CreateLease writes a free lease at counter 0 without lag.
	item[attrLeaseCounter] = &types.AttributeValueMemberN{Value: strconv.FormatInt(l.Epoch, 10)}
	if l.Owner != "" {
		item[attrLeaseOwner] = &types.AttributeValueMemberS{Value: l.Owner}
	}
	if l.MillisBehindLatest > 0 {
		item[attrMillisBehind] = &types.AttributeValueMemberN{Value: strconv.FormatInt(l.MillisBehindLatest, 10)}
	}
	return item
}

// leaseKey is what a lease's size depends on.
type leaseKey struct {
	shard, owner, checkpoint, parents string
	epoch, behind, start              int64
}

// lease returns the size of l's item, cached by value.
func (s *sizer) lease(l lease.Lease) int {
	k := leaseKey{shard: l.ShardID, owner: l.Owner, checkpoint: l.Checkpoint, epoch: l.Epoch, behind: l.MillisBehindLatest}
	if !l.StartTimestamp.IsZero() {
		k.start = l.StartTimestamp.UnixMilli()
	}
	if len(l.ParentShardIDs) > 0 {
		k.parents = strings.Join(l.ParentShardIDs, ",")
	}
	return cachedSize(&s.mu, s.leases, k, 1<<20, func() int { return ItemSize(s.leaseItem(l)) })
}

// cachedSize returns m[k], computing it with size (outside mu) when missing; the cache
// is emptied when it holds more than limit sizes.
func cachedSize[K comparable](mu *sync.Mutex, m map[K]int, k K, limit int, size func() int) int {
	mu.Lock()
	n, ok := m[k]
	mu.Unlock()
	if ok {
		return n
	}
	n = size()
	mu.Lock()
	if len(m) > limit {
		clear(m)
	}
	m[k] = n
	mu.Unlock()
	return n
}

func (s *sizer) workerItem(w lease.WorkerRecord) map[string]types.AttributeValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.store.PutWorker(context.Background(), w); err != nil {
		panic(fmt.Sprintf("sim: sizing worker %s: %v", w.WorkerID, err))
	}
	return s.last
}

// worker returns the size of w's item, cached by value.
func (s *sizer) worker(w lease.WorkerRecord) int {
	return cachedSize(&s.mu, s.workers, w, 1<<18, func() int { return ItemSize(s.workerItem(w)) })
}

// coordinatorItem returns the item the codec writes for c, the membership view included.
func (s *sizer) coordinatorItem(c lease.CoordinatorRecord) map[string]types.AttributeValue {
	return s.store.CoordinatorItem(c)
}

func (s *sizer) coordinator(c lease.CoordinatorRecord) int { return ItemSize(s.coordinatorItem(c)) }

// OpStats is what one operation cost.
type OpStats struct {
	Requests   int64
	Conflicts  int64   // failed conditions (lease.ErrConflict, lease.ErrExists)
	ReadUnits  float64 // eventually consistent reads cost half a unit per 4 KB
	WriteUnits int64
}

// Meter counts store requests by operation. It is safe for concurrent use.
type Meter struct {
	sz *sizer
	mu sync.Mutex
	by map[string]*OpStats
}

// NewMeter returns an empty meter.
func NewMeter() *Meter { return &Meter{sz: newSizer(), by: map[string]*OpStats{}} }

func (m *Meter) add(op string, requests int64, rru float64, wru int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.by[op]
	if st == nil {
		st = &OpStats{}
		m.by[op] = st
	}
	st.Requests += requests
	st.ReadUnits += rru
	st.WriteUnits += wru
	if errors.Is(err, lease.ErrConflict) || errors.Is(err, lease.ErrExists) {
		st.Conflicts++
	}
}

// Usage is a meter's counts at one moment, or the difference of two.
type Usage map[string]OpStats

// Snapshot returns the counts so far.
func (m *Meter) Snapshot() Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := Usage{}
	for k, v := range m.by {
		u[k] = *v
	}
	return u
}

// Sub returns u - o.
func (u Usage) Sub(o Usage) Usage {
	out := Usage{}
	for k, v := range u {
		w := o[k]
		d := OpStats{v.Requests - w.Requests, v.Conflicts - w.Conflicts, v.ReadUnits - w.ReadUnits, v.WriteUnits - w.WriteUnits}
		if d != (OpStats{}) {
			out[k] = d
		}
	}
	return out
}

// Total sums every operation.
func (u Usage) Total() OpStats {
	var t OpStats
	for _, v := range u {
		t.Requests += v.Requests
		t.Conflicts += v.Conflicts
		t.ReadUnits += v.ReadUnits
		t.WriteUnits += v.WriteUnits
	}
	return t
}

// Ops lists the operations by decreasing requests.
func (u Usage) Ops() []string {
	ops := make([]string, 0, len(u))
	for k := range u {
		ops = append(ops, k)
	}
	sort.Slice(ops, func(i, j int) bool {
		if u[ops[i]].Requests != u[ops[j]].Requests {
			return u[ops[i]].Requests > u[ops[j]].Requests
		}
		return ops[i] < ops[j]
	})
	return ops
}

// Rate is a usage over a window, per minute.
type Rate struct {
	Window                          time.Duration
	Requests, ReadUnits, WriteUnits float64 // per minute
	Monthly                         float64 // USD
	ByOp                            Usage
}

// RateOver turns a usage over window into per-minute figures.
func RateOver(u Usage, window time.Duration) Rate {
	t := u.Total()
	f := float64(time.Minute) / float64(window)
	r := Rate{Window: window, Requests: float64(t.Requests) * f, ReadUnits: float64(t.ReadUnits) * f,
		WriteUnits: float64(t.WriteUnits) * f, ByOp: u}
	r.Monthly = Monthly(r.ReadUnits, r.WriteUnits)
	return r
}

// OpsString lists requests per minute by operation.
func (r Rate) OpsString() string {
	f := float64(time.Minute) / float64(r.Window)
	var parts []string
	for _, op := range r.ByOp.Ops() {
		parts = append(parts, fmt.Sprintf("%s %.0f", op, float64(r.ByOp[op].Requests)*f))
	}
	return strings.Join(parts, ", ")
}

// Operation names: the DynamoDB operation, the table and what it is for.
const (
	opScanMeta     = "Scan meta"
	opGetView      = "GetItem coordinator (eventual)"
	opGetMeta      = "GetItem meta"
	opPutWorker    = "PutItem worker"
	opDelWorker    = "DeleteItem worker"
	opClaimCoord   = "UpdateItem coordinator claim"
	opCreateCoord  = "PutItem coordinator"
	opUpdateCoord  = "UpdateItem coordinator"
	opResignCoord  = "UpdateItem coordinator resign"
	opScanLeases   = "Scan leases"
	opGetLease     = "GetItem lease"
	opCreateLease  = "PutItem lease"
	opTake         = "UpdateItem take"
	opRelease      = "UpdateItem release"
	opCheckpoint   = "UpdateItem checkpoint"
	opDeleteLease  = "DeleteItem lease"
	opRenew        = "UpdateItem renew" // the KCL-style baseline
	opBaselineTake = opTake
)

// meterLeases counts a process's lease-table requests (faults are injected above it:
// only requests that reach the table count).
type meterLeases struct {
	m     *Meter
	table interface {
		Lease(string) (lease.Lease, bool)
	}
	inner consumer.LeaseStore
}

func (s meterLeases) ListLeases(ctx context.Context) (lease.Table, error) {
	t, err := s.inner.ListLeases(ctx)
	sizes := make([]int, len(t.Leases))
	for i, l := range t.Leases {
		sizes[i] = s.m.sz.lease(l)
	}
	req, ru := ScanCost(sizes)
	s.m.add(opScanLeases, req, float64(ru), 0, err)
	return t, err
}

func (s meterLeases) GetLease(ctx context.Context, id string) (lease.Lease, error) {
	l, err := s.inner.GetLease(ctx, id)
	size := 0
	if err == nil {
		size = s.m.sz.lease(l)
	}
	s.m.add(opGetLease, 1, float64(ReadUnits(size)), 0, err)
	return l, err
}

// write counts one write on a lease: units from the larger of the item before and after.
func (s meterLeases) write(op, shard string, err error, extra ...lease.Lease) {
	size := 0
	for _, l := range extra {
		size = max(size, s.m.sz.lease(l))
	}
	if l, ok := s.table.Lease(shard); ok {
		size = max(size, s.m.sz.lease(l))
	}
	s.m.add(op, 1, 0, WriteUnits(size), err)
}

func (s meterLeases) CreateLease(ctx context.Context, l lease.Lease) error {
	err := s.inner.CreateLease(ctx, l)
	s.write(opCreateLease, l.ShardID, err, l)
	return err
}

func (s meterLeases) TakeLease(ctx context.Context, o lease.Lease, owner string) (lease.Lease, error) {
	l, err := s.inner.TakeLease(ctx, o, owner)
	s.write(opTake, o.ShardID, err, o)
	return l, err
}

func (s meterLeases) ReleaseLease(ctx context.Context, h lease.Lease, cp lease.ExtendedSequenceNumber) error {
	err := s.inner.ReleaseLease(ctx, h, cp)
	s.write(opRelease, h.ShardID, err, h)
	return err
}

func (s meterLeases) Checkpoint(ctx context.Context, h lease.Lease, cp lease.ExtendedSequenceNumber, behind int64) error {
	err := s.inner.Checkpoint(ctx, h, cp, behind)
	s.write(opCheckpoint, h.ShardID, err, h)
	return err
}

func (s meterLeases) DeleteLease(ctx context.Context, o lease.Lease) error {
	err := s.inner.DeleteLease(ctx, o)
	s.write(opDeleteLease, o.ShardID, err, o)
	return err
}

// meterMeta counts a process's metadata-table requests.
type meterMeta struct {
	m     *Meter
	inner consumer.MetaStore
}

func (s meterMeta) ReadMeta(ctx context.Context) (lease.Meta, error) {
	meta, err := s.inner.ReadMeta(ctx)
	sizes := make([]int, 0, len(meta.Workers)+1)
	for _, w := range meta.Workers {
		sizes = append(sizes, s.m.sz.worker(w))
	}
	if meta.Coordinator != nil {
		sizes = append(sizes, s.m.sz.coordinator(*meta.Coordinator))
	}
	req, ru := ScanCost(sizes)
	s.m.add(opScanMeta, req, float64(ru), 0, err)
	return meta, err
}

func (s meterMeta) ReadMetaItems(ctx context.Context, ids []string, consistent bool) (lease.Meta, error) {
	meta, err := s.inner.ReadMetaItems(ctx, ids, consistent)
	op, units := opGetMeta, 0.0
	if !consistent {
		op = opGetView
	}
	add := func(size int) {
		u := float64(ReadUnits(size))
		if !consistent {
			u /= 2
		}
		units += u
	}
	if meta.Coordinator != nil {
		add(s.m.sz.coordinator(*meta.Coordinator))
	} else {
		add(0)
	}
	for _, w := range meta.Workers {
		add(s.m.sz.worker(w))
	}
	for range len(ids) - len(meta.Workers) {
		add(0) // a read of an absent item costs a unit too
	}
	s.m.add(op, int64(1+len(ids)), units, 0, err)
	return meta, err
}

func (s meterMeta) PutWorker(ctx context.Context, w lease.WorkerRecord) error {
	err := s.inner.PutWorker(ctx, w)
	s.m.add(opPutWorker, 1, 0, WriteUnits(s.m.sz.worker(w)), err)
	return err
}

func (s meterMeta) coordWrite(op string, r lease.CoordinatorRecord, err error, extra ...lease.CoordinatorRecord) {
	size := s.m.sz.coordinator(r)
	for _, e := range extra {
		size = max(size, s.m.sz.coordinator(e))
	}
	s.m.add(op, 1, 0, WriteUnits(size), err)
}

func (s meterMeta) ClaimCoordinator(ctx context.Context, id string, o *lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	r, err := s.inner.ClaimCoordinator(ctx, id, o)
	if o == nil {
		s.coordWrite(opCreateCoord, r, err)
	} else {
		s.coordWrite(opClaimCoord, r, err, *o)
	}
	return r, err
}

func (s meterMeta) UpdateCoordinator(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	r, err := s.inner.UpdateCoordinator(ctx, rec)
	s.coordWrite(opUpdateCoord, r, err, rec)
	return r, err
}

func (s meterMeta) ResignCoordinator(ctx context.Context, rec lease.CoordinatorRecord) error {
	err := s.inner.ResignCoordinator(ctx, rec)
	s.coordWrite(opResignCoord, rec, err)
	return err
}

func (s meterMeta) DeleteWorker(ctx context.Context, id string, heartbeat int64) error {
	err := s.inner.DeleteWorker(ctx, id, heartbeat)
	// The item deleted is a worker record; its size barely varies.
	s.m.add(opDelWorker, 1, 0, WriteUnits(s.m.sz.worker(lease.WorkerRecord{WorkerID: id, Incarnation: "00000000000000000000", Heartbeat: heartbeat, State: lease.WorkerActive})), err)
	return err
}
