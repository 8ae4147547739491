package memstore_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

func held() lease.Lease {
	return lease.Lease{ShardID: "s1", Owner: "a", Epoch: 3, Checkpoint: "100", ParentShardIDs: []string{"s0"}}
}

func TestLeaseConditionalWrites(t *testing.T) {
	ctx := context.Background()
	stale := held()
	stale.Owner = "x"
	oldCounter := held()
	oldCounter.Epoch = 2
	missing := lease.Lease{ShardID: "nope"}
	with := func(f func(*lease.Lease)) *lease.Lease {
		l := held()
		f(&l)
		return &l
	}

	tests := []struct {
		name    string
		op      func(*memstore.Leases) error
		wantErr []error      // every error the result must match
		invalid bool         // rejected as a bad argument, before any request
		want    *lease.Lease // stored s1 afterwards; nil means deleted
	}{
		{
			name: "take with current observation",
			op: func(s *memstore.Leases) error {
				got, err := s.TakeLease(ctx, held(), "b")
				if err == nil && (got.Owner != "b" || got.Epoch != 4) {
					t.Errorf("TakeLease returned %+v", got)
				}
				return err
			},
			want: with(func(l *lease.Lease) { l.Owner = "b"; l.Epoch = 4 }),
		},
		{
			name:    "take with stale owner",
			op:      func(s *memstore.Leases) error { _, err := s.TakeLease(ctx, stale, "b"); return err },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "take with stale counter",
			op:      func(s *memstore.Leases) error { _, err := s.TakeLease(ctx, oldCounter, "b"); return err },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "take missing lease",
			op:      func(s *memstore.Leases) error { _, err := s.TakeLease(ctx, missing, "b"); return err },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name: "release with checkpoint",
			op:   func(s *memstore.Leases) error { return s.ReleaseLease(ctx, held(), "200") },
			want: with(func(l *lease.Lease) { l.Owner = ""; l.Epoch = 4; l.Checkpoint = "200" }),
		},
		{
			name: "release keeps checkpoint when none given",
			op:   func(s *memstore.Leases) error { return s.ReleaseLease(ctx, held(), "") },
			want: with(func(l *lease.Lease) { l.Owner = ""; l.Epoch = 4 }),
		},
		{
			name:    "release by stale owner",
			op:      func(s *memstore.Leases) error { return s.ReleaseLease(ctx, stale, "200") },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name: "checkpoint by owner keeps counter",
			op:   func(s *memstore.Leases) error { return s.Checkpoint(ctx, held(), lease.ShardEnd, -1) },
			want: with(func(l *lease.Lease) { l.Checkpoint = lease.ShardEnd }),
		},
		{
			name:    "checkpoint by stale owner refused",
			op:      func(s *memstore.Leases) error { return s.Checkpoint(ctx, stale, "999", -1) },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "checkpoint at old counter refused",
			op:      func(s *memstore.Leases) error { return s.Checkpoint(ctx, oldCounter, "999", -1) },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name: "checkpoint missing lease",
			op: func(s *memstore.Leases) error {
				return s.Checkpoint(ctx, lease.Lease{ShardID: "nope", Owner: "a"}, "999", -1)
			},
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name: "delete with current observation",
			op:   func(s *memstore.Leases) error { return s.DeleteLease(ctx, held()) },
		},
		{
			name:    "delete with stale observation",
			op:      func(s *memstore.Leases) error { return s.DeleteLease(ctx, oldCounter) },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "delete missing",
			op:      func(s *memstore.Leases) error { return s.DeleteLease(ctx, missing) },
			wantErr: []error{lease.ErrConflict},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name: "create existing",
			op: func(s *memstore.Leases) error {
				return s.CreateLease(ctx, lease.Lease{ShardID: "s1", Checkpoint: lease.Latest})
			},
			wantErr: []error{lease.ErrExists},
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "take for nobody",
			op:      func(s *memstore.Leases) error { _, err := s.TakeLease(ctx, held(), ""); return err },
			invalid: true,
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "release of a free lease",
			op:      func(s *memstore.Leases) error { return s.ReleaseLease(ctx, missing, "") },
			invalid: true,
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "empty checkpoint",
			op:      func(s *memstore.Leases) error { return s.Checkpoint(ctx, held(), "", -1) },
			invalid: true,
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "create without checkpoint",
			op:      func(s *memstore.Leases) error { return s.CreateLease(ctx, lease.Lease{ShardID: "s2"}) },
			invalid: true,
			want:    with(func(*lease.Lease) {}),
		},
		{
			name:    "get missing",
			op:      func(s *memstore.Leases) error { _, err := s.GetLease(ctx, "nope"); return err },
			wantErr: []error{lease.ErrNotFound},
			want:    with(func(*lease.Lease) {}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := memstore.NewLeases()
			s.Put(held())
			err := tc.op(s)
			if tc.invalid {
				if err == nil || errors.Is(err, lease.ErrConflict) || len(s.Calls()) != 0 {
					t.Fatalf("err %v, calls %v: want an argument error and no call", err, s.Calls())
				}
				err = nil
			}
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if len(tc.wantErr) > 0 && err == nil {
				t.Fatalf("no error, want %v", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %v does not match %v", err, want)
				}
			}
			got, ok := s.Lease("s1")
			switch {
			case tc.want == nil && ok:
				t.Errorf("lease still stored: %+v", got)
			case tc.want != nil && !reflect.DeepEqual(got, *tc.want):
				t.Errorf("stored lease %+v, want %+v", got, *tc.want)
			}
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewLeases()
	// Owner and counter of a new lease are ignored: it is always created free.
	if err := s.CreateLease(ctx, lease.Lease{ShardID: "s1", Owner: "x", Epoch: 5, Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLease(ctx, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon}); !errors.Is(err, lease.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	free, err := s.GetLease(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if free.Owner != "" || free.Epoch != 0 {
		t.Fatalf("created %+v", free)
	}
	a, err := s.TakeLease(ctx, free, "a")
	if err != nil {
		t.Fatal(err)
	}
	// b steals from a; a's later checkpoint must be refused and leave the value alone.
	b, err := s.TakeLease(ctx, a, "b")
	if err != nil {
		t.Fatal(err)
	}
	if b.Epoch != 2 {
		t.Fatalf("counter after two takes = %d", b.Epoch)
	}
	if err := s.Checkpoint(ctx, a, "5", -1); !errors.Is(err, lease.ErrConflict) {
		t.Fatalf("checkpoint by old owner: %v", err)
	}
	if err := s.Checkpoint(ctx, b, "7", -1); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, a, ""); !errors.Is(err, lease.ErrConflict) {
		t.Fatalf("release by old owner: %v", err)
	}
	if err := s.ReleaseLease(ctx, b, ""); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Lease("s1")
	want := lease.Lease{ShardID: "s1", Epoch: 3, Checkpoint: "7"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("final lease %+v, want %+v", got, want)
	}
}

func TestLeaseListSortedAndCorrupt(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewLeases()
	for _, id := range []string{"c", "a", "d", "b"} {
		if err := s.CreateLease(ctx, lease.Lease{ShardID: id, Checkpoint: lease.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	s.PutCorrupt("b", "bad counter")
	s.PutCorrupt("e", "no key")
	tab, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range tab.Leases {
		ids = append(ids, l.ShardID)
	}
	if want := []string{"a", "c", "d"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	wantCorrupt := []lease.CorruptItem{{Key: "b", Reason: "bad counter"}, {Key: "e", Reason: "no key"}}
	if !reflect.DeepEqual(tab.Corrupt, wantCorrupt) {
		t.Errorf("corrupt %v, want %v", tab.Corrupt, wantCorrupt)
	}
	if _, err := s.GetLease(ctx, "b"); !errors.Is(err, memstore.ErrCorrupt) {
		t.Errorf("GetLease of corrupt item: %v", err)
	}
	if _, err := s.TakeLease(ctx, lease.Lease{ShardID: "b"}, "x"); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("TakeLease of corrupt item: %v", err)
	}
	if err := s.CreateLease(ctx, lease.Lease{ShardID: "b", Checkpoint: lease.Latest}); !errors.Is(err, lease.ErrExists) {
		t.Errorf("CreateLease over corrupt item: %v", err)
	}
	// Deleting and recreating invalidates the cached order.
	if err := s.DeleteLease(ctx, lease.Lease{ShardID: "a"}); err != nil {
		t.Fatal(err)
	}
	s.Put(lease.Lease{ShardID: "b"})
	tab = s.Snapshot()
	if len(tab.Leases) != 3 || tab.Leases[0].ShardID != "b" || len(tab.Corrupt) != 1 {
		t.Errorf("after repair: %+v", tab)
	}
}

func TestLeaseCopiesAreIsolated(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewLeases()
	in := lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"p1", "p2"}}
	if err := s.CreateLease(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.ParentShardIDs[0] = "changed input"

	got, _ := s.GetLease(ctx, "s1")
	got.ParentShardIDs[0] = "changed get"
	tab, _ := s.ListLeases(ctx)
	tab.Leases[0].ParentShardIDs[1] = "changed list"
	taken, _ := s.TakeLease(ctx, lease.Lease{ShardID: "s1"}, "a")
	taken.ParentShardIDs[0] = "changed take"

	stored, _ := s.Lease("s1")
	if want := []string{"p1", "p2"}; !reflect.DeepEqual(stored.ParentShardIDs, want) {
		t.Fatalf("stored parents %v, want %v", stored.ParentShardIDs, want)
	}
}

func TestLeaseTakeRace(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewLeases()
	if err := s.CreateLease(ctx, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	observed, _ := s.GetLease(ctx, "s1")
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.TakeLease(ctx, observed, string(rune('a'+i)))
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, lease.ErrConflict):
			t.Errorf("loser got %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d winners, want 1", wins)
	}
	if l, _ := s.Lease("s1"); l.Epoch != 1 {
		t.Fatalf("counter %d, want 1", l.Epoch)
	}
}

func TestLeaseFaults(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("network down")
	tests := []struct {
		name  string
		setup func(*memstore.Leases)
		// results of four consecutive GetLease calls: true means it failed
		want []bool
		is   error
	}{
		{"twice", func(s *memstore.Leases) { s.InjectError("GetLease", stream.ErrThrottled, 2) }, []bool{true, true, false, false}, stream.ErrThrottled},
		{"other op", func(s *memstore.Leases) { s.InjectError("TakeLease", boom, 2) }, []bool{false, false, false, false}, nil},
		{"any op", func(s *memstore.Leases) { s.InjectError(memstore.AnyOp, boom, 1) }, []bool{true, false, false, false}, boom},
		{"forever", func(s *memstore.Leases) { s.InjectError("GetLease", boom, -1) }, []bool{true, true, true, true}, boom},
		{"queued", func(s *memstore.Leases) {
			s.InjectError("GetLease", boom, 1)
			s.InjectError("GetLease", stream.ErrThrottled, 1)
		}, []bool{true, true, false, false}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := memstore.NewLeases()
			s.Put(lease.Lease{ShardID: "s1"})
			tc.setup(s)
			for i, wantFail := range tc.want {
				_, err := s.GetLease(ctx, "s1")
				if (err != nil) != wantFail {
					t.Fatalf("call %d: err %v, want failure %v", i, err, wantFail)
				}
				if err != nil && tc.is != nil && !errors.Is(err, tc.is) {
					t.Fatalf("call %d: err %v, want %v", i, err, tc.is)
				}
			}
			if got := s.Calls()["GetLease"]; got != len(tc.want) {
				t.Errorf("Calls()[GetLease] = %d, want %d", got, len(tc.want))
			}
			s.ClearErrors()
			if _, err := s.GetLease(ctx, "s1"); err != nil {
				t.Errorf("after ClearErrors: %v", err)
			}
		})
	}
}

func TestLeaseCallsAndContext(t *testing.T) {
	s := memstore.NewLeases()
	ctx := context.Background()
	_ = s.CreateLease(ctx, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon})
	_, _ = s.ListLeases(ctx)
	_, _ = s.ListLeases(ctx)
	s.Snapshot() // not counted
	want := map[string]int{"CreateLease": 1, "ListLeases": 2}
	if got := s.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("Calls() = %v, want %v", got, want)
	}
	s.Calls()["ListLeases"] = 100 // a copy
	s.ResetCalls()
	if got := s.Calls(); len(got) != 0 {
		t.Errorf("after reset: %v", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.ListLeases(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// Values come back as a DynamoDB round trip returns them.
func TestLeaseStoredLikeDynamoDB(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewLeases()
	local := time.FixedZone("local", 3600)
	in := lease.Lease{
		ShardID:        "s1",
		Checkpoint:     lease.AtTimestamp,
		StartTimestamp: time.Date(2026, 1, 2, 3, 4, 5, 6789123, local),
		ParentShardIDs: []string{"b", "a", "b"},
	}
	if err := s.CreateLease(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLease(ctx, lease.Lease{ShardID: "s2", Checkpoint: lease.Latest, ParentShardIDs: []string{}}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetLease(ctx, "s1")
	want := lease.Lease{
		ShardID:        "s1",
		Checkpoint:     lease.AtTimestamp,
		StartTimestamp: time.Date(2026, 1, 2, 2, 4, 5, 6000000, time.UTC),
		ParentShardIDs: []string{"a", "b"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got, _ := s.GetLease(ctx, "s2"); got.ParentShardIDs != nil {
		t.Fatalf("empty parents stored as %#v", got.ParentShardIDs)
	}
}
