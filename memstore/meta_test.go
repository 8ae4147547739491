package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

func coordinator() *lease.CoordinatorRecord {
	return &lease.CoordinatorRecord{CoordinatorID: "a", Epoch: 4, Version: 9, ShardCount: 10, WorkerCount: 2}
}

func TestCoordinatorConditions(t *testing.T) {
	with := func(f func(*lease.CoordinatorRecord)) *lease.CoordinatorRecord {
		c := coordinator()
		f(c)
		return c
	}
	tests := []struct {
		name    string
		stored  *lease.CoordinatorRecord
		op      func(*memstore.Meta) (*lease.CoordinatorRecord, error) // record returned, if any
		wantErr []error
		invalid bool                     // rejected as a bad argument, before any request
		want    *lease.CoordinatorRecord // stored afterwards
	}{
		{
			name:   "claim when absent creates epoch 1",
			stored: nil,
			op:     claim("b", nil),
			want:   &lease.CoordinatorRecord{CoordinatorID: "b", Epoch: 1, UpdatedAt: t0},
		},
		{
			name:    "claim as absent when present",
			stored:  coordinator(),
			op:      claim("b", nil),
			wantErr: []error{lease.ErrConflict},
			want:    coordinator(),
		},
		{
			name:   "claim with current epoch keeps values",
			stored: coordinator(),
			op:     claim("b", coordinator()),
			want:   with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "b"; c.Epoch = 5 }),
		},
		{
			name:    "claim with stale epoch",
			stored:  coordinator(),
			op:      claim("b", with(func(c *lease.CoordinatorRecord) { c.Epoch = 3 })),
			wantErr: []error{lease.ErrConflict},
			want:    coordinator(),
		},
		{
			name:    "claim with stale holder",
			stored:  coordinator(),
			op:      claim("b", with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "x" })),
			wantErr: []error{lease.ErrConflict},
			want:    coordinator(),
		},
		{
			name:    "claim observed record that vanished",
			stored:  nil,
			op:      claim("b", coordinator()),
			wantErr: []error{lease.ErrConflict},
		},
		{
			name:    "claim for nobody",
			stored:  nil,
			op:      claim("", nil),
			invalid: true,
		},
		{
			name:   "update by holder increments version",
			stored: coordinator(),
			op:     update(with(func(c *lease.CoordinatorRecord) { c.ShardCount = 20; c.Version = 0 })),
			want:   with(func(c *lease.CoordinatorRecord) { c.ShardCount = 20; c.Version = 10; c.UpdatedAt = t0 }),
		},
		{
			name:    "update at stale epoch",
			stored:  coordinator(),
			op:      update(with(func(c *lease.CoordinatorRecord) { c.Epoch = 3; c.ShardCount = 20 })),
			wantErr: []error{lease.ErrConflict},
			want:    coordinator(),
		},
		{
			name:    "update by other worker",
			stored:  coordinator(),
			op:      update(with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "b"; c.ShardCount = 20 })),
			wantErr: []error{lease.ErrConflict},
			want:    coordinator(),
		},
		{
			name:    "update missing",
			stored:  nil,
			op:      update(coordinator()),
			wantErr: []error{lease.ErrConflict},
		},
		{
			name:   "resign clears id only",
			stored: coordinator(),
			op:     resign(coordinator()),
			want:   with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }),
		},
		{
			name:    "resign by other worker",
			stored:  coordinator(),
			op:      resign(with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "b" })),
			wantErr: []error{lease.ErrConflict},
			want:    coordinator(),
		},
		{
			name:    "nobody may update a resigned record",
			stored:  with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }),
			op:      update(with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" })),
			invalid: true,
			want:    with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }),
		},
		{
			name:    "resign without id",
			stored:  with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }),
			op:      resign(with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" })),
			invalid: true,
			want:    with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }),
		},
		{
			name:   "claim after resignation",
			stored: with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }),
			op:     claim("b", with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" })),
			want:   with(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "b"; c.Epoch = 5 }),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := memstore.NewMeta()
			s.Now = func() time.Time { return t0 }
			s.PutCoordinator(tc.stored)
			got, err := tc.op(s)
			if tc.invalid {
				if err == nil || errors.Is(err, lease.ErrConflict) || len(s.Calls()) != 0 {
					t.Fatalf("err %v, calls %v: want an argument error and no call", err, s.Calls())
				}
				err, got = nil, nil
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
			stored := s.Snapshot().Coordinator
			if !reflect.DeepEqual(stored, tc.want) {
				t.Errorf("stored %+v, want %+v", stored, tc.want)
			}
			if err == nil && got != nil && !reflect.DeepEqual(got, stored) {
				t.Errorf("returned %+v, stored %+v", got, stored)
			}
		})
	}
}

func claim(id string, observed *lease.CoordinatorRecord) func(*memstore.Meta) (*lease.CoordinatorRecord, error) {
	return func(s *memstore.Meta) (*lease.CoordinatorRecord, error) {
		rec, err := s.ClaimCoordinator(context.Background(), id, observed)
		return &rec, err
	}
}

func update(rec *lease.CoordinatorRecord) func(*memstore.Meta) (*lease.CoordinatorRecord, error) {
	return func(s *memstore.Meta) (*lease.CoordinatorRecord, error) {
		got, err := s.UpdateCoordinator(context.Background(), *rec)
		return &got, err
	}
}

func resign(rec *lease.CoordinatorRecord) func(*memstore.Meta) (*lease.CoordinatorRecord, error) {
	return func(s *memstore.Meta) (*lease.CoordinatorRecord, error) {
		return nil, s.ResignCoordinator(context.Background(), *rec)
	}
}

func TestCoordinatorClaimRace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored *lease.CoordinatorRecord
	}{
		{"first claim", nil},
		{"takeover", coordinator()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := memstore.NewMeta()
			s.PutCoordinator(tc.stored)
			const n = 20
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				results = make([]error, n)
			)
			for i := range n {
				wg.Go(func() {
					<-start
					_, results[i] = s.ClaimCoordinator(context.Background(), fmt.Sprintf("w%02d", i), tc.stored)
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range results {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("workers %d and %d both won", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, lease.ErrConflict):
					t.Fatalf("worker %d: %v", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no winner")
			}
			c := s.Snapshot().Coordinator
			wantEpoch := int64(1)
			if tc.stored != nil {
				wantEpoch = tc.stored.Epoch + 1
			}
			if c.CoordinatorID != fmt.Sprintf("w%02d", winner) || c.Epoch != wantEpoch {
				t.Fatalf("stored %+v, winner %d", c, winner)
			}
		})
	}
}

func TestWorkers(t *testing.T) {
	ctx := context.Background()
	s := memstore.NewMeta()
	for _, id := range []string{"w3", "w1", "w2"} {
		if err := s.PutWorker(ctx, lease.WorkerRecord{WorkerID: id, Heartbeat: 1, State: lease.WorkerActive}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutWorker(ctx, lease.WorkerRecord{WorkerID: "w1", Heartbeat: 2}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		id        string
		heartbeat int64
		wantErr   []error
	}{
		{"stale heartbeat", "w1", 1, []error{lease.ErrConflict}},
		{"missing worker", "w9", 1, []error{lease.ErrConflict}},
		{"observed heartbeat", "w1", 2, nil},
		{"already deleted", "w1", 2, []error{lease.ErrConflict}},
	}
	for _, tc := range tests {
		err := s.DeleteWorker(ctx, tc.id, tc.heartbeat)
		if (err != nil) != (len(tc.wantErr) > 0) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.wantErr)
		}
		for _, want := range tc.wantErr {
			if !errors.Is(err, want) {
				t.Errorf("%s: err %v does not match %v", tc.name, err, want)
			}
		}
	}
	s.PutCorrupt("w0", "bad heartbeat")
	s.PutCorrupt(memstore.CoordinatorKey, "bad epoch")
	m, err := s.ReadMeta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range m.Workers {
		ids = append(ids, w.WorkerID)
	}
	if want := []string{"w2", "w3"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("workers %v, want %v", ids, want)
	}
	wantCorrupt := []lease.CorruptItem{{Key: memstore.CoordinatorKey, Reason: "bad epoch"}, {Key: "w0", Reason: "bad heartbeat"}}
	if !reflect.DeepEqual(m.Corrupt, wantCorrupt) || m.Coordinator != nil {
		t.Errorf("corrupt %v coordinator %v", m.Corrupt, m.Coordinator)
	}
	// A coordinator item nobody can read is replaced by a claim that saw none, once.
	if rec, err := s.ClaimCoordinator(ctx, "w2", nil); err != nil || rec.CoordinatorID != "w2" || rec.Epoch != 1 {
		t.Errorf("claim over corrupt coordinator: %+v, %v", rec, err)
	}
	if _, err := s.ClaimCoordinator(ctx, "w3", nil); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("second claim over the replaced coordinator: %v", err)
	}
	if err := s.DeleteWorker(ctx, "w0", 0); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("delete corrupt worker: %v", err)
	}
	// A worker rewriting its own record repairs it.
	if err := s.PutWorker(ctx, lease.WorkerRecord{WorkerID: "w0"}); err != nil {
		t.Fatal(err)
	}
	if m := s.Snapshot(); len(m.Workers) != 3 || len(m.Corrupt) != 0 || m.Coordinator == nil {
		t.Errorf("after repair: %+v", m)
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
	s.Fail = func(op string) error {
		if op == "PutWorker" {
			return errors.New("denied")
		}
		return nil
	}
	if err := s.PutWorker(ctx, lease.WorkerRecord{WorkerID: "a"}); err == nil {
		t.Fatal("Fail hook not consulted")
	}
	want := map[string]int{"ClaimCoordinator": 1, "ReadMeta": 3, "PutWorker": 1}
	if got := s.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("Calls() = %v, want %v", got, want)
	}
}
