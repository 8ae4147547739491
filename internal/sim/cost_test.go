package sim

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

func TestNumberSize(t *testing.T) {
	for _, c := range []struct {
		n    string
		want int
	}{
		{"0", 1}, {"5", 2}, {"12", 2}, {"123", 3}, {"1000", 2}, {"1234567890", 6}, {"-12.50", 3}, {"1733000000000", 3},
	} {
		if got := numberSize(c.n); got != c.want {
			t.Errorf("numberSize(%q) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestItemSize(t *testing.T) {
	for _, c := range []struct {
		name string
		item map[string]types.AttributeValue
		want int
	}{
		{"string", map[string]types.AttributeValue{"ab": &types.AttributeValueMemberS{Value: "xyz"}}, 5},
		{"utf-8", map[string]types.AttributeValue{"k": &types.AttributeValueMemberS{Value: "é"}}, 3},
		{"number", map[string]types.AttributeValue{"n": &types.AttributeValueMemberN{Value: "12345"}}, 5},
		{"string set", map[string]types.AttributeValue{"p": &types.AttributeValueMemberSS{Value: []string{"a", "bc"}}}, 4},
		{"bool", map[string]types.AttributeValue{"b": &types.AttributeValueMemberBOOL{Value: true}}, 2},
	} {
		if got := ItemSize(c.item); got != c.want {
			t.Errorf("%s: ItemSize = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestUnits(t *testing.T) {
	for _, c := range []struct {
		size      int
		read, wrt int64
	}{
		{0, 1, 1}, {1, 1, 1}, {1024, 1, 1}, {1025, 1, 2}, {4096, 1, 4}, {4097, 2, 5}, {10000, 3, 10},
	} {
		if r, w := ReadUnits(c.size), WriteUnits(c.size); r != c.read || w != c.wrt {
			t.Errorf("size %d: read %d write %d, want %d %d", c.size, r, w, c.read, c.wrt)
		}
	}
	rep := func(n, size int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = size
		}
		return out
	}
	for _, c := range []struct {
		name        string
		sizes       []int
		reqs, units int64
	}{
		{"empty table", nil, 1, 1},
		{"5 items of 1000 B: one request, rounded up once", rep(5, 1000), 1, 2},
		{"10000 leases of 150 B: 1.5 MB in two pages", rep(10000, 150), 2, 367},
	} {
		r, u := ScanCost(c.sizes)
		if r != c.reqs || u != c.units {
			t.Errorf("%s: ScanCost = %d requests, %d units; want %d, %d", c.name, r, u, c.reqs, c.units)
		}
	}
}

func TestMonthly(t *testing.T) {
	for _, c := range []struct {
		rru, wru, want float64
	}{
		{0, 1e6 / MinutesPerMonth, 0.625},
		{1e6 / MinutesPerMonth, 0, 0.125},
		{100, 100, (100*0.125 + 100*0.625) * 43200 / 1e6},
	} {
		if got := Monthly(c.rru, c.wru); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Monthly(%v, %v) = %v, want %v", c.rru, c.wru, got, c.want)
		}
	}
}

// The sizes of known items as package dynamostore's codec writes them.
func TestCodecSizes(t *testing.T) {
	sz := newSizer()
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name string
		size int
		want int
	}{
		// leaseKey 8+20, leaseCounter 12+2, checkpoint 10+12, itemVersion 11+2, leaseOwner 10+2,
		// ownerSwitchesSinceCheckpoint 28+1 (the KCL's attribute: a KCL worker needs it).
		{"owned lease", sz.lease(lease.Lease{ShardID: "shardId-000000000000", Owner: "w1", Epoch: 5, Checkpoint: lease.TrimHorizon}), 118},
		{"free lease", sz.lease(lease.Lease{ShardID: "shardId-000000000000", Epoch: 6, Checkpoint: lease.TrimHorizon}), 106},
		// + parentShardId 13+20, millisBehindLatest 18+2, a 21-digit checkpoint (+9 bytes).
		{"child lease", sz.lease(lease.Lease{ShardID: "shardId-000000000000", Owner: "w1", Epoch: 5, Checkpoint: "496000000000000000001",
			ParentShardIDs: []string{"shardId-000000000001"}, MillisBehindLatest: 12}), 118 + 33 + 20 + 9},
		// worker_id 9+2, incarnation 11+3, heartbeat 9+2, state 5+6, leases_held 11+2,
		// last_seen 9+20, started_at 10+20, itemVersion 11+2.
		{"worker", sz.worker(lease.WorkerRecord{WorkerID: "w1", Incarnation: "abc", Heartbeat: 42, State: lease.WorkerActive,
			LeasesHeld: 20, LastSeen: ts, StartedAt: ts}), 132},
	} {
		if c.size != c.want {
			t.Errorf("%s: size %d, want %d", c.name, c.size, c.want)
		}
	}
	// The attributes sizeLease and sizeCoordinator set must be the codec's own.
	item := sz.leaseItem(lease.Lease{ShardID: "s", Checkpoint: lease.TrimHorizon, MillisBehindLatest: 0})
	if _, ok := item[attrLeaseCounter]; !ok {
		t.Errorf("the codec's lease item has no %s: %v", attrLeaseCounter, item)
	}
	// The coordinator item is the codec's whole, the membership view included.
	view := lease.CoordinatorRecord{CoordinatorID: "w1", Epoch: 3}
	bare := sz.coordinator(view)
	view.DeadWorkers = []lease.DeadWorker{{WorkerID: "kds-consumer-17", Incarnation: "0123456789abcdef", Heartbeat: 1 << 40}}
	view.RecheckWorkers, view.OwnedLeases, view.WaitingParents = []string{"kds-consumer-3"}, 300, 2
	if grown := sz.coordinator(view); grown < bare+len("kds-consumer-17")+len("0123456789abcdef")+len("kds-consumer-3") {
		t.Errorf("coordinator item with a view: %d bytes, without: %d; the view is not sized", grown, bare)
	}
}

func TestMeter(t *testing.T) {
	ctx := context.Background()
	m := NewMeter()
	table := memstore.NewLeases()
	s := meterLeases{m: m, table: table, inner: table}
	l := lease.Lease{ShardID: "shardId-000000000000", Checkpoint: lease.TrimHorizon}
	if err := s.CreateLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLease(ctx, l); !errors.Is(err, lease.ErrExists) {
		t.Fatal(err)
	}
	if _, err := s.TakeLease(ctx, l, "w1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeLease(ctx, l, "w2"); !errors.Is(err, lease.ErrConflict) {
		t.Fatal(err)
	}
	if _, err := s.ListLeases(ctx); err != nil {
		t.Fatal(err)
	}
	u := m.Snapshot()
	want := Usage{
		opCreateLease: {Requests: 2, Conflicts: 1, WriteUnits: 2},
		opTake:        {Requests: 2, Conflicts: 1, WriteUnits: 2},
		opScanLeases:  {Requests: 1, ReadUnits: 1},
	}
	for op, w := range want {
		if u[op] != w {
			t.Errorf("%s: %+v, want %+v", op, u[op], w)
		}
	}
	r := RateOver(u, 30*time.Second)
	if r.Requests != 10 || r.WriteUnits != 8 || r.ReadUnits != 2 {
		t.Errorf("rate: %+v", r)
	}
	if got := u.Sub(u).Total(); got != (OpStats{}) {
		t.Errorf("u - u = %+v", got)
	}
}
