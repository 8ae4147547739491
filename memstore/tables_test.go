package memstore_test

// What is particular to memstore's lease and metadata tables: sort order, isolation of
// returned values, call counts and injected errors. The contracts the tables share with
// dynamostore are tested by package storetest (conformance_test.go).

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Lists come sorted by key; creating, deleting and repairing items keeps them so.
func TestLeaseListSortedByKey(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewLeases()
	for _, id := range []string{"c", "a", "d", "b"} {
		if err := s.CreateLease(ctx, lease.Lease{ShardID: id, Checkpoint: lease.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	s.PutCorrupt("e", "no key")
	s.PutCorrupt("b", "bad counter")
	keys := func() (ids []string, corrupt []lease.CorruptItem) {
		tab, err := s.ListLeases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range tab.Leases {
			ids = append(ids, l.ShardID)
		}
		return ids, tab.Corrupt
	}
	ids, corrupt := keys()
	wantCorrupt := []lease.CorruptItem{{Key: "b", Reason: "bad counter"}, {Key: "e", Reason: "no key"}}
	if want := []string{"a", "c", "d"}; !reflect.DeepEqual(ids, want) || !reflect.DeepEqual(corrupt, wantCorrupt) {
		t.Errorf("listed %v and corrupt %v, want %v and %v", ids, corrupt, want, wantCorrupt)
	}
	if err := s.DeleteLease(ctx, lease.Lease{ShardID: "a"}); err != nil {
		t.Fatal(err)
	}
	s.Put(lease.Lease{ShardID: "b", Checkpoint: lease.TrimHorizon})
	if err := s.CreateLease(ctx, lease.Lease{ShardID: "0", Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	ids, corrupt = keys()
	if want := []string{"0", "b", "c", "d"}; !reflect.DeepEqual(ids, want) || len(corrupt) != 1 {
		t.Errorf("after delete, repair and create: listed %v and corrupt %v, want %v and only e", ids, corrupt, want)
	}
}

// Arguments dynamostore rejects before sending a request are rejected without a call.
func TestArgumentErrorsAreNotCalls(t *testing.T) {
	ctx := context.Background()
	held := lease.Lease{ShardID: "s1", Owner: "a", Epoch: 1}
	leases := memstore.NewLeases()
	meta := memstore.NewMeta()
	calls := map[string]func() error{
		"CreateLease without shard id":   func() error { return leases.CreateLease(ctx, lease.Lease{Checkpoint: lease.Latest}) },
		"CreateLease without checkpoint": func() error { return leases.CreateLease(ctx, lease.Lease{ShardID: "s1"}) },
		"TakeLease for nobody":           func() error { _, err := leases.TakeLease(ctx, held, ""); return err },
		"ReleaseLease of a free lease": func() error {
			return leases.ReleaseLease(ctx, lease.Lease{ShardID: "s1"}, lease.ExtendedSequenceNumber{})
		},
		"Checkpoint without owner": func() error {
			return leases.Checkpoint(ctx, lease.Lease{ShardID: "s1"}, lease.ExtendedSequenceNumber{SequenceNumber: "1"}, -1)
		},
		"empty Checkpoint":     func() error { return leases.Checkpoint(ctx, held, lease.ExtendedSequenceNumber{}, -1) },
		"PutWorker without id": func() error { return meta.PutWorker(ctx, lease.WorkerRecord{}) },
		"PutWorker as the coordinator": func() error {
			return meta.PutWorker(ctx, lease.WorkerRecord{WorkerID: memstore.CoordinatorKey})
		},
		"ClaimCoordinator for nobody": func() error { _, err := meta.ClaimCoordinator(ctx, "", nil); return err },
		"UpdateCoordinator without id": func() error {
			_, err := meta.UpdateCoordinator(ctx, lease.CoordinatorRecord{Epoch: 1})
			return err
		},
		"UpdateCoordinator at LATEST": func() error {
			_, err := meta.UpdateCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: "a", Epoch: 1, InitialPosition: lease.Latest})
			return err
		},
		"ResignCoordinator without id": func() error { return meta.ResignCoordinator(ctx, lease.CoordinatorRecord{Epoch: 1}) },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if c := leases.Calls(); len(c) != 0 {
		t.Errorf("lease calls counted: %v", c)
	}
	if c := meta.Calls(); len(c) != 0 {
		t.Errorf("meta calls counted: %v", c)
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

func TestMetaCopiesAndFaults(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewMeta()
	rec, err := s.ClaimCoordinator(ctx, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.ReadMeta(ctx)
	m.Coordinator.Epoch = 100
	rec.Epoch = 100
	if c := s.Snapshot().Coordinator; c.Epoch != 1 {
		t.Fatalf("stored record changed through a returned one: %+v", c)
	}

	s.InjectError("ReadMeta", errors.New("timeout"), 1)
	if _, err := s.ReadMeta(ctx); err == nil {
		t.Fatal("injected error not returned")
	}
	if _, err := s.ReadMeta(ctx); err != nil {
		t.Fatal(err)
	}
	s.InjectError("PutWorker", errors.New("denied"), 1)
	if err := s.PutWorker(ctx, lease.WorkerRecord{WorkerID: "a"}); err == nil {
		t.Fatal("injected PutWorker error not returned")
	}
	want := map[string]int{"ClaimCoordinator": 1, "ReadMeta": 3, "PutWorker": 1}
	if got := s.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("Calls() = %v, want %v", got, want)
	}
}
