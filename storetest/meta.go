package storetest

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// MetaOptions hold what TestMetaStore cannot do through consumer.MetaStore. Every field is
// optional; the tests that need an unset one are skipped.
type MetaOptions[S consumer.MetaStore] struct {
	// CoordinatorKey returns the key of the coordinator item: PutWorker must refuse it as a
	// worker id, and a corrupt coordinator item is reported under it.
	CoordinatorKey func(s S) string
	// PutCorrupt stores an item under key that the store cannot decode: a worker record,
	// or for CoordinatorKey a coordinator item without a usable epoch (which a claim that
	// saw no record replaces).
	PutCorrupt func(t *testing.T, s S, key string)
	// Missing returns a store whose metadata table does not exist.
	Missing func(t *testing.T) S
	// Now, if set, is what the store's clock reads: the coordinator record is stamped
	// with it (UpdatedAt) when created and updated. Zero: any time but the zero time.
	Now time.Time
	// ListSize is how many workers the listing test writes (default 25): more than the
	// store's page size, so that pagination is exercised.
	ListSize int
}

// TestMetaStore runs the metadata-table contract against the stores newStore returns.
// Each subtest calls newStore once and expects an empty metadata table.
func TestMetaStore[S consumer.MetaStore](t *testing.T, newStore func(t *testing.T) S, opts MetaOptions[S]) {
	t.Run("Workers", func(t *testing.T) { testWorkers(t, newStore, opts) })
	t.Run("Coordinator", func(t *testing.T) { testCoordinator(t, newStore, opts) })
	t.Run("of concurrent first claims exactly one wins", func(t *testing.T) {
		s := newStore(t)
		w := race(t, 10, func(i int) error {
			_, err := s.ClaimCoordinator(t.Context(), fmt.Sprintf("w%d", i), nil)
			return err
		})
		if c := readMeta(t, s).Coordinator; c == nil || c.CoordinatorID != fmt.Sprintf("w%d", w) || c.Epoch != 1 {
			t.Errorf("stored %+v, want the winner w%d at epoch 1", c, w)
		}
	})
	t.Run("of concurrent takeovers with one observation exactly one wins", func(t *testing.T) {
		s := newStore(t)
		held := heldCoordinator(t, s)
		w := race(t, 10, func(i int) error {
			_, err := s.ClaimCoordinator(t.Context(), fmt.Sprintf("w%d", i), &held)
			return err
		})
		if c := readMeta(t, s).Coordinator; c == nil || c.CoordinatorID != fmt.Sprintf("w%d", w) || c.Epoch != held.Epoch+1 {
			t.Errorf("stored %+v, want the winner w%d at epoch %d", c, w, held.Epoch+1)
		}
	})
	optional(t, "corrupt items are reported, not returned, and match no write", opts.PutCorrupt != nil && opts.CoordinatorKey != nil,
		"MetaOptions.PutCorrupt or CoordinatorKey", func(t *testing.T) { testCorruptMeta(t, newStore(t), opts) })
	optional(t, "a missing metadata table is ErrTableNotFound", opts.Missing != nil, "MetaOptions.Missing",
		func(t *testing.T) { testMissingMetaTable(t, opts.Missing(t)) })
}

func readMeta(t *testing.T, s consumer.MetaStore) lease.Meta {
	t.Helper()
	m, err := s.ReadMeta(t.Context())
	if err != nil {
		t.Fatalf("ReadMeta: %v", err)
	}
	return m
}

func putWorker(t *testing.T, s consumer.MetaStore, w lease.WorkerRecord) lease.WorkerRecord {
	t.Helper()
	if err := s.PutWorker(t.Context(), w); err != nil {
		t.Fatalf("PutWorker %s: %v", w.WorkerID, err)
	}
	// As stored: times in UTC.
	w.LastSeen, w.StartedAt = w.LastSeen.UTC(), w.StartedAt.UTC()
	return w
}

// checkWorkers checks that m holds exactly want, sorted by worker id.
func checkWorkers(t *testing.T, what string, m lease.Meta, want ...lease.WorkerRecord) {
	t.Helper()
	if len(m.Workers) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(m.Workers, want) {
		t.Errorf("%s: workers\n%+v\nwant\n%+v", what, m.Workers, want)
	}
}

func testWorkers[S consumer.MetaStore](t *testing.T, newStore func(t *testing.T) S, opts MetaOptions[S]) {
	t.Run("ReadMetaItems reads the coordinator and the named workers, leaving absent ones out", func(t *testing.T) {
		s := newStore(t)
		w1 := putWorker(t, s, lease.WorkerRecord{WorkerID: "w1", Incarnation: "i", Heartbeat: 4, State: lease.WorkerActive, LeasesHeld: 2})
		putWorker(t, s, lease.WorkerRecord{WorkerID: "w2", Incarnation: "i", Heartbeat: 1, State: lease.WorkerActive})
		for _, consistent := range []bool{true, false} {
			m, err := s.ReadMetaItems(t.Context(), []string{"w1", "nobody"}, consistent)
			if err != nil {
				t.Fatalf("ReadMetaItems (consistent %v): %v", consistent, err)
			}
			checkWorkers(t, "ReadMetaItems before any coordinator", m, w1)
			if m.Coordinator != nil || len(m.Corrupt) != 0 {
				t.Errorf("coordinator %+v, corrupt %v; want none", m.Coordinator, m.Corrupt)
			}
		}
		held := heldCoordinator(t, s)
		m, err := s.ReadMetaItems(t.Context(), []string{}, true)
		if err != nil {
			t.Fatalf("ReadMetaItems: %v", err)
		}
		checkWorkers(t, "ReadMetaItems of the coordinator alone", m)
		if m.Coordinator == nil || !reflect.DeepEqual(*m.Coordinator, held) {
			t.Errorf("coordinator %+v, want %+v", m.Coordinator, held)
		}
	})
	t.Run("a record follows its worker: registration, heartbeats, gone, restart", func(t *testing.T) {
		s := newStore(t)
		local := time.FixedZone("UTC-5", -5*3600)
		start := time.Date(2026, 1, 2, 3, 4, 5, 123_456_789, local)
		other := putWorker(t, s, lease.WorkerRecord{WorkerID: "w2", Incarnation: "x", Heartbeat: 7, State: lease.WorkerActive, LastSeen: start, StartedAt: start})
		w := lease.WorkerRecord{WorkerID: "w1", Incarnation: "inc-1", Heartbeat: 1, State: lease.WorkerActive, LastSeen: start, StartedAt: start}
		steps := []struct {
			name   string
			change func(w *lease.WorkerRecord)
		}{
			{"registration", func(*lease.WorkerRecord) {}},
			{"heartbeat", func(w *lease.WorkerRecord) { w.Heartbeat, w.LeasesHeld, w.LastSeen = 2, 3, start.Add(time.Second) }},
			{"another heartbeat", func(w *lease.WorkerRecord) { w.Heartbeat, w.LeasesHeld, w.LastSeen = 3, 4, start.Add(2*time.Second) }},
			{"gone", func(w *lease.WorkerRecord) { w.Heartbeat, w.LeasesHeld, w.State = 4, 0, lease.WorkerGone }},
			{"restart with a new incarnation", func(w *lease.WorkerRecord) {
				w.Incarnation, w.Heartbeat, w.State, w.StartedAt, w.LastSeen = "inc-2", 1, lease.WorkerActive, start.Add(time.Hour), start.Add(time.Hour)
			}},
		}
		for _, step := range steps {
			step.change(&w)
			stored := putWorker(t, s, w)
			checkWorkers(t, step.name, readMeta(t, s), stored, other)
		}
		if m := readMeta(t, s); m.Coordinator != nil || len(m.Corrupt) != 0 {
			t.Errorf("worker records showed up as coordinator %+v or corrupt items %v", m.Coordinator, m.Corrupt)
		}
	})
	t.Run("ReadMeta returns every worker across pages, sorted by id, apart from the coordinator", func(t *testing.T) {
		s := newStore(t)
		n := cmp.Or(opts.ListSize, defaultListSize)
		want := make([]lease.WorkerRecord, n)
		for i := n - 1; i >= 0; i-- {
			want[i] = putWorker(t, s, lease.WorkerRecord{WorkerID: fmt.Sprintf("worker-%03d", i), Incarnation: "i",
				Heartbeat: int64(i), State: lease.WorkerActive, LeasesHeld: i % 4})
		}
		c, err := s.ClaimCoordinator(t.Context(), "worker-000", nil)
		if err != nil {
			t.Fatal(err)
		}
		m := readMeta(t, s)
		checkWorkers(t, "ReadMeta", m, want...)
		if m.Coordinator == nil || !reflect.DeepEqual(*m.Coordinator, c) {
			t.Errorf("coordinator %+v, want %+v", m.Coordinator, c)
		}
	})
	t.Run("PutWorker refuses ids that are not a worker's", func(t *testing.T) {
		s := newStore(t)
		c, err := s.ClaimCoordinator(t.Context(), "w1", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{"an empty id": ""}
		if opts.CoordinatorKey != nil {
			ids["the coordinator's key"] = opts.CoordinatorKey(s)
		}
		for name, id := range ids {
			err := s.PutWorker(t.Context(), lease.WorkerRecord{WorkerID: id, State: lease.WorkerActive})
			checkErr(t, "PutWorker with "+name, err, errInvalid)
		}
		if m := readMeta(t, s); len(m.Workers) != 0 || m.Coordinator == nil || !reflect.DeepEqual(*m.Coordinator, c) {
			t.Errorf("after the refused puts: %+v, want no workers and coordinator %+v", m, c)
		}
	})
	t.Run("DeleteWorker", func(t *testing.T) {
		tests := []struct {
			name      string
			id        string
			heartbeat int64
			err       error
		}{
			{"with a stale heartbeat is a conflict", "w1", 4, lease.ErrConflict},
			{"of a missing worker is a conflict", "w9", 5, lease.ErrConflict},
			{"with the observed heartbeat removes the record", "w1", 5, nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s := newStore(t)

				w := putWorker(t, s, lease.WorkerRecord{WorkerID: "w1", Incarnation: "i", Heartbeat: 5, State: lease.WorkerActive})
				if checkErr(t, "DeleteWorker", s.DeleteWorker(t.Context(), tc.id, tc.heartbeat), tc.err) && tc.err == nil {
					checkWorkers(t, "after the delete", readMeta(t, s))
					checkErr(t, "second DeleteWorker", s.DeleteWorker(t.Context(), tc.id, tc.heartbeat), lease.ErrConflict)
					return
				}
				checkWorkers(t, "after the refused delete", readMeta(t, s), w)
			})
		}
	})
}

// coordinatorValues are the values the coordinator fixture publishes.
var coordinatorValues = lease.CoordinatorRecord{
	MaxLeasesPerWorker: 4, TargetLeasesPerWorker: 5, ShardCount: 8, WorkerCount: 2, LiveWorkers: 1,
	Cap: 10, UnownedShards: 0, RecommendedWorkers: 1, LeaseGeneration: 3,
	DeadWorkers: []lease.DeadWorker{{WorkerID: "w3", Incarnation: "i3", Heartbeat: 30}, {WorkerID: "w7"}}, OwnedLeases: 6,
	WaitingParents: 2,
}

// heldCoordinator makes "a" the coordinator at epoch 2 (by a takeover from "z") with
// coordinatorValues written once (version 2: the claims wrote 0 and 1), and returns the
// record as read.
func heldCoordinator(t *testing.T, s consumer.MetaStore) lease.CoordinatorRecord {
	t.Helper()
	ctx := t.Context()
	z, err := s.ClaimCoordinator(ctx, "z", nil)
	if err != nil {
		t.Fatalf("first claim: %v", err)
	}
	a, err := s.ClaimCoordinator(ctx, "a", &z)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	rec := coordinatorValues
	rec.CoordinatorID, rec.Epoch, rec.Version = a.CoordinatorID, a.Epoch, a.Version
	if _, err := s.UpdateCoordinator(ctx, rec); err != nil {
		t.Fatalf("update: %v", err)
	}
	c := readMeta(t, s).Coordinator
	if c == nil || c.CoordinatorID != "a" || c.Epoch != 2 || c.Version != 2 || c.UpdatedAt.IsZero() {
		t.Fatalf("coordinator fixture %+v, want a at epoch 2, version 2, stamped", c)
	}
	return *c
}

// The start states of the coordinator cases.
const (
	noRecord   = "no record"
	held       = "held by a"
	resigned   = "resigned by a"
	positioned = "held by a with the initial position recorded"
)

var (
	initialTS = time.Date(2025, 12, 24, 18, 0, 0, 500_000_000, time.UTC)
	laterTS   = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	// stamped in an expected record stands for "UpdatedAt set to the store's clock".
	stamped = time.Unix(1, 0)
)

func coordinatorFixture(t *testing.T, s consumer.MetaStore, state string) *lease.CoordinatorRecord {
	t.Helper()
	if state == noRecord {
		return nil
	}
	c := heldCoordinator(t, s)
	switch state {
	case resigned:
		if err := s.ResignCoordinator(t.Context(), c); err != nil {
			t.Fatalf("resign: %v", err)
		}
	case positioned:
		c.InitialPosition, c.InitialTimestamp = lease.AtTimestamp, initialTS
		if _, err := s.UpdateCoordinator(t.Context(), c); err != nil {
			t.Fatalf("update: %v", err)
		}
	}
	return readMeta(t, s).Coordinator
}

type coordinatorOp func(ctx context.Context, s consumer.MetaStore, start lease.CoordinatorRecord) (*lease.CoordinatorRecord, error)

// claimOp claims for id having observed start changed by observe; observe nil: observed
// no record.
func claimOp(id string, observe func(c *lease.CoordinatorRecord)) coordinatorOp {
	return func(ctx context.Context, s consumer.MetaStore, start lease.CoordinatorRecord) (*lease.CoordinatorRecord, error) {
		var observed *lease.CoordinatorRecord
		if observe != nil {
			observed = &start
			observe(observed)
		}
		c, err := s.ClaimCoordinator(ctx, id, observed)
		return &c, err
	}
}

// updateOp writes start changed by change.
func updateOp(change func(c *lease.CoordinatorRecord)) coordinatorOp {
	return func(ctx context.Context, s consumer.MetaStore, start lease.CoordinatorRecord) (*lease.CoordinatorRecord, error) {
		change(&start)
		c, err := s.UpdateCoordinator(ctx, start)
		return &c, err
	}
}

// resignOp resigns with start changed by change.
func resignOp(change func(c *lease.CoordinatorRecord)) coordinatorOp {
	return func(ctx context.Context, s consumer.MetaStore, start lease.CoordinatorRecord) (*lease.CoordinatorRecord, error) {
		change(&start)
		return nil, s.ResignCoordinator(ctx, start)
	}
}

// asHeld turns a record observed in any start state into the one "a" held at epoch 2.
func asHeld(c *lease.CoordinatorRecord) { c.CoordinatorID, c.Epoch = "a", 2 }

func unchanged(*lease.CoordinatorRecord) {}

func testCoordinator[S consumer.MetaStore](t *testing.T, newStore func(t *testing.T) S, opts MetaOptions[S]) {
	newValues := func(c *lease.CoordinatorRecord) {
		c.MaxLeasesPerWorker, c.TargetLeasesPerWorker, c.ShardCount, c.WorkerCount = 3, 3, 12, 4
		c.LiveWorkers, c.Cap, c.UnownedShards, c.RecommendedWorkers, c.LeaseGeneration = 4, 3, 0, 4, 4
		c.DeadWorkers = []lease.DeadWorker{{WorkerID: "w1", Incarnation: "a", Heartbeat: 1}, {WorkerID: "w2"}, {WorkerID: "w9", Incarnation: "b", Heartbeat: 1 << 40}}
		c.OwnedLeases, c.RecheckWorkers, c.WaitingParents = 9, []string{"w4", "w5"}, 7
		c.CoordinatorIncarnation, c.CoordinatorHeartbeat = "inc-a", 42
	}
	// claimed and resigned are what a claim and a resignation do to the rest of the record.
	claimed := func(id string) func(c *lease.CoordinatorRecord) *lease.CoordinatorRecord {
		return func(c *lease.CoordinatorRecord) *lease.CoordinatorRecord {
			c.CoordinatorID, c.Epoch, c.Version, c.DeadWorkers = id, c.Epoch+1, c.Version+1, nil
			return c
		}
	}
	resignedRec := func(c *lease.CoordinatorRecord) *lease.CoordinatorRecord {
		c.CoordinatorID, c.Version, c.DeadWorkers = "", c.Version+1, nil
		return c
	}
	updated := func(c *lease.CoordinatorRecord) { c.Version, c.UpdatedAt = c.Version+1, stamped }
	// updatedWith is the record after an update that changed what change changes.
	updatedWith := func(change func(c *lease.CoordinatorRecord)) func(c *lease.CoordinatorRecord) *lease.CoordinatorRecord {
		return func(c *lease.CoordinatorRecord) *lease.CoordinatorRecord {
			change(c)
			updated(c)
			return c
		}
	}
	local := time.FixedZone("UTC+9", 9*3600)
	tests := []struct {
		name  string
		start string
		op    coordinatorOp
		err   error
		// want returns the record expected afterwards from a copy of the start record
		// (nil for noRecord); nil want: unchanged.
		want func(c *lease.CoordinatorRecord) *lease.CoordinatorRecord
	}{
		{"the first claim creates the record at epoch 1 without values", noRecord, claimOp("b", nil), nil,
			func(*lease.CoordinatorRecord) *lease.CoordinatorRecord {
				return &lease.CoordinatorRecord{CoordinatorID: "b", Epoch: 1, UpdatedAt: stamped}
			}},
		{"a first claim over a held record is a conflict", held, claimOp("b", nil), lease.ErrConflict, nil},
		{"a first claim over a resigned record is a conflict", resigned, claimOp("b", nil), lease.ErrConflict, nil},
		{"a claim with the current holder and epoch takes over, keeping the values, clearing the dead workers", held, claimOp("b", unchanged), nil,
			claimed("b")},
		{"a claim with a stale epoch is a conflict", held, claimOp("b", func(c *lease.CoordinatorRecord) { c.Epoch = 1 }), lease.ErrConflict, nil},
		{"a claim with a stale holder is a conflict", held, claimOp("b", func(c *lease.CoordinatorRecord) { c.CoordinatorID = "z" }), lease.ErrConflict, nil},
		{"a claim with a stale holder and epoch is a conflict", held,
			claimOp("b", func(c *lease.CoordinatorRecord) { c.CoordinatorID, c.Epoch = "z", 1 }), lease.ErrConflict, nil},
		{"a claim that saw no holder while one holds the role is a conflict", held,
			claimOp("b", func(c *lease.CoordinatorRecord) { c.CoordinatorID = "" }), lease.ErrConflict, nil},
		{"a claim of a record that does not exist is a conflict and creates none", noRecord,
			claimOp("b", func(c *lease.CoordinatorRecord) { *c = coordinatorValues; asHeld(c) }), lease.ErrConflict, nil},
		{"a claim after a resignation with the record as read", resigned, claimOp("b", unchanged), nil,
			claimed("b")},
		{"a claim after a resignation that still sees the former holder is a conflict", resigned, claimOp("b", asHeld), lease.ErrConflict, nil},
		{"a claim for an empty worker id is refused", noRecord, claimOp("", nil), errInvalid, nil},

		{"an update by the holder writes every value and increments the version", held, updateOp(newValues), nil,
			updatedWith(func(c *lease.CoordinatorRecord) { newValues(c) })},
		{"an update without dead workers removes them", held, updateOp(func(c *lease.CoordinatorRecord) { c.DeadWorkers = nil }), nil,
			updatedWith(func(c *lease.CoordinatorRecord) { c.DeadWorkers = nil })},
		{"an update with no waiting parents clears them", held, updateOp(func(c *lease.CoordinatorRecord) { c.WaitingParents = 0 }), nil,
			updatedWith(func(c *lease.CoordinatorRecord) { c.WaitingParents = 0 })},
		{"an update at a stale version is a conflict", held, updateOp(func(c *lease.CoordinatorRecord) { newValues(c); c.Version-- }), lease.ErrConflict, nil},
		{"an update at a future version is a conflict", held, updateOp(func(c *lease.CoordinatorRecord) { newValues(c); c.Version++ }), lease.ErrConflict, nil},
		{"an update at a stale epoch is a conflict", held, updateOp(func(c *lease.CoordinatorRecord) { newValues(c); c.Epoch = 1 }), lease.ErrConflict, nil},
		{"an update by another worker is a conflict", held, updateOp(func(c *lease.CoordinatorRecord) { newValues(c); c.CoordinatorID = "b" }), lease.ErrConflict, nil},
		{"an update of a record that does not exist is a conflict and creates none", noRecord,
			updateOp(func(c *lease.CoordinatorRecord) { *c = coordinatorValues; asHeld(c) }), lease.ErrConflict, nil},
		{"an update by the holder after its resignation is a conflict", resigned, updateOp(asHeld), lease.ErrConflict, nil},
		{"an update without a coordinator id is refused", resigned, updateOp(newValues), errInvalid, nil},

		{"a resignation clears the holder and the dead workers, keeping the epoch and values", held, resignOp(unchanged), nil,
			resignedRec},
		{"a resignation by another worker is a conflict", held, resignOp(func(c *lease.CoordinatorRecord) { c.CoordinatorID = "b" }), lease.ErrConflict, nil},
		{"a resignation at a stale epoch is a conflict", held, resignOp(func(c *lease.CoordinatorRecord) { c.Epoch = 1 }), lease.ErrConflict, nil},
		{"resigning twice is a conflict", resigned, resignOp(asHeld), lease.ErrConflict, nil},
		{"a resignation of a record that does not exist is a conflict", noRecord,
			resignOp(func(c *lease.CoordinatorRecord) { *c = coordinatorValues; asHeld(c) }), lease.ErrConflict, nil},
		{"a resignation without a coordinator id is refused", resigned, resignOp(unchanged), errInvalid, nil},

		{"the first update with TRIM_HORIZON records the initial position", held,
			updateOp(func(c *lease.CoordinatorRecord) { c.InitialPosition = lease.TrimHorizon }), nil,
			updatedWith(func(c *lease.CoordinatorRecord) { c.InitialPosition = lease.TrimHorizon })},
		{"the first update with AT_TIMESTAMP records it with its timestamp in UTC", held,
			updateOp(func(c *lease.CoordinatorRecord) {
				c.InitialPosition, c.InitialTimestamp = lease.AtTimestamp, initialTS.In(local)
			}), nil,
			updatedWith(func(c *lease.CoordinatorRecord) { c.InitialPosition, c.InitialTimestamp = lease.AtTimestamp, initialTS })},
		{"a timestamp given with TRIM_HORIZON is not recorded", held,
			updateOp(func(c *lease.CoordinatorRecord) { c.InitialPosition, c.InitialTimestamp = lease.TrimHorizon, initialTS }), nil,
			updatedWith(func(c *lease.CoordinatorRecord) { c.InitialPosition = lease.TrimHorizon })},
		{"a later update never changes the recorded position", positioned,
			updateOp(func(c *lease.CoordinatorRecord) {
				c.InitialPosition, c.InitialTimestamp = lease.TrimHorizon, time.Time{}
			}), nil,
			updatedWith(func(*lease.CoordinatorRecord) {})},
		{"a later update never changes the recorded timestamp", positioned,
			updateOp(func(c *lease.CoordinatorRecord) { c.InitialTimestamp = laterTS }), nil,
			updatedWith(func(*lease.CoordinatorRecord) {})},
		{"an update without a position keeps the recorded one", positioned,
			updateOp(func(c *lease.CoordinatorRecord) { c.InitialPosition, c.InitialTimestamp = "", time.Time{} }), nil,
			updatedWith(func(*lease.CoordinatorRecord) {})},
		{"a claim keeps the recorded position", positioned, claimOp("b", unchanged), nil, claimed("b")},
		{"a resignation keeps the recorded position", positioned, resignOp(unchanged), nil, resignedRec},
		{"AT_TIMESTAMP without a timestamp is refused", held,
			updateOp(func(c *lease.CoordinatorRecord) { c.InitialPosition = lease.AtTimestamp }), errInvalid, nil},
		{"an initial position other than TRIM_HORIZON or AT_TIMESTAMP is refused", held,
			updateOp(func(c *lease.CoordinatorRecord) { c.InitialPosition = lease.Latest }), errInvalid, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			start := coordinatorFixture(t, s, tc.start)
			var op lease.CoordinatorRecord
			if start != nil {
				op = *start
			}
			got, err := tc.op(t.Context(), s, op)
			ok := checkErr(t, "the write", err, tc.err)
			want := start
			if tc.want != nil {
				var c *lease.CoordinatorRecord
				if start != nil {
					cp := *start
					c = &cp
				}
				want = tc.want(c)
			}
			stored := readMeta(t, s).Coordinator
			if want != nil && want.UpdatedAt == stamped {
				switch {
				case !opts.Now.IsZero():
					want.UpdatedAt = opts.Now.UTC()
				case stored != nil && !stored.UpdatedAt.IsZero() && (start == nil || !stored.UpdatedAt.Before(start.UpdatedAt)):
					want.UpdatedAt = stored.UpdatedAt
				}
			}
			if !reflect.DeepEqual(stored, want) {
				t.Errorf("stored\n%+v\nwant\n%+v", stored, want)
			}
			if ok && tc.err == nil && got != nil && (stored == nil || !reflect.DeepEqual(*got, *stored)) {
				t.Errorf("returned\n%+v\nstored\n%+v", *got, stored)
			}
		})
	}
}

func testCorruptMeta[S consumer.MetaStore](t *testing.T, s S, opts MetaOptions[S]) {
	ctx := t.Context()
	key := opts.CoordinatorKey(s)
	w1 := putWorker(t, s, lease.WorkerRecord{WorkerID: "w1", Incarnation: "i", Heartbeat: 1, State: lease.WorkerActive})
	w2 := putWorker(t, s, lease.WorkerRecord{WorkerID: "w2", Incarnation: "i", Heartbeat: 1, State: lease.WorkerActive})
	opts.PutCorrupt(t, s, "w0")
	opts.PutCorrupt(t, s, key)
	m := readMeta(t, s)
	checkWorkers(t, "ReadMeta", m, w1, w2)
	checkCorrupt(t, m.Corrupt, "w0", key)
	if m.Coordinator != nil {
		t.Errorf("a corrupt coordinator item read as %+v", m.Coordinator)
	}
	m, err := s.ReadMetaItems(ctx, []string{"w0", "w1"}, true)
	if err != nil {
		t.Fatalf("ReadMetaItems: %v", err)
	}
	checkWorkers(t, "ReadMetaItems", m, w1)
	checkCorrupt(t, m.Corrupt, "w0", key)
	if m.Coordinator != nil {
		t.Errorf("ReadMetaItems read a corrupt coordinator item as %+v", m.Coordinator)
	}

	rec := lease.CoordinatorRecord{CoordinatorID: "w1", Epoch: 1}
	_, err = s.ClaimCoordinator(ctx, "w1", &lease.CoordinatorRecord{})
	checkErr(t, "ClaimCoordinator of a corrupt item observed as resigned", err, lease.ErrConflict)
	_, err = s.UpdateCoordinator(ctx, rec)
	checkErr(t, "UpdateCoordinator of a corrupt item", err, lease.ErrConflict)
	checkErr(t, "ResignCoordinator of a corrupt item", s.ResignCoordinator(ctx, rec), lease.ErrConflict)
	checkErr(t, "DeleteWorker of a corrupt item", s.DeleteWorker(ctx, "w0", 0), lease.ErrConflict)

	// A coordinator item nobody can use would leave the application without coordinator:
	// a claim that saw no record replaces it, exactly once.
	w := race(t, 5, func(i int) error {
		_, err := s.ClaimCoordinator(ctx, fmt.Sprintf("w%d", i), nil)
		return err
	})
	m = readMeta(t, s)
	if c := m.Coordinator; c == nil || c.CoordinatorID != fmt.Sprintf("w%d", w) || c.Epoch != 1 {
		t.Errorf("coordinator after the claim %+v, want w%d at epoch 1", c, w)
	}
	checkCorrupt(t, m.Corrupt, "w0")

	// A worker rewriting its own record repairs it.
	w0 := putWorker(t, s, lease.WorkerRecord{WorkerID: "w0", Incarnation: "i", Heartbeat: 1, State: lease.WorkerActive})
	m = readMeta(t, s)
	checkWorkers(t, "after the repair", m, w0, w1, w2)
	checkCorrupt(t, m.Corrupt)
}

func testMissingMetaTable(t *testing.T, s consumer.MetaStore) {
	ctx := t.Context()
	rec := lease.CoordinatorRecord{CoordinatorID: "w", Epoch: 1}
	calls := map[string]func() error{
		"ReadMeta":  func() error { _, err := s.ReadMeta(ctx); return err },
		"PutWorker": func() error { return s.PutWorker(ctx, lease.WorkerRecord{WorkerID: "w", State: lease.WorkerActive}) },
		"first ClaimCoordinator": func() error {
			_, err := s.ClaimCoordinator(ctx, "w", nil)
			return err
		},
		"ClaimCoordinator": func() error { _, err := s.ClaimCoordinator(ctx, "w2", &rec); return err },
		"UpdateCoordinator": func() error {
			_, err := s.UpdateCoordinator(ctx, rec)
			return err
		},
		"ResignCoordinator": func() error { return s.ResignCoordinator(ctx, rec) },
		"DeleteWorker":      func() error { return s.DeleteWorker(ctx, "w", 1) },
	}
	checkAll(t, calls, lease.ErrTableNotFound)
}
