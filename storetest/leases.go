package storetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// LeaseOptions hold what TestLeaseStore cannot do through consumer.LeaseStore. Every field
// is optional; the tests that need an unset one are skipped.
type LeaseOptions[S consumer.LeaseStore] struct {
	// PutCorrupt stores an item under key that the store cannot decode and that no
	// conditional write can match (in DynamoDB: an item without a numeric leaseCounter).
	PutCorrupt func(t *testing.T, s S, key string)
	// ErrCorrupt is the error GetLease of such an item matches. Nil: any error that is
	// not lease.ErrNotFound.
	ErrCorrupt error
	// Missing returns a store whose lease table does not exist.
	Missing func(t *testing.T) S
	// ListSize is how many leases the listing test writes (default 25): more than the
	// store's page size, so that pagination is exercised.
	ListSize int
}

// TestLeaseStore runs the lease-table contract against the stores newStore returns. Each
// subtest calls newStore once and expects an empty lease table.
func TestLeaseStore[S consumer.LeaseStore](t *testing.T, newStore func(t *testing.T) S, opts LeaseOptions[S]) {
	t.Run("CreateLease", func(t *testing.T) { testCreate(t, newStore) })
	t.Run("GetLease of a missing shard is ErrNotFound", func(t *testing.T) {
		if _, err := newStore(t).GetLease(t.Context(), "shardId-missing"); !errors.Is(err, lease.ErrNotFound) {
			t.Errorf("GetLease: %v, want lease.ErrNotFound", err)
		}
	})
	t.Run("ConditionalWrites", func(t *testing.T) { testConditionalWrites(t, newStore) })
	t.Run("a taken lease fences its former owner until released", func(t *testing.T) { testFencing(t, newStore(t)) })
	t.Run("a checkpoint inside a KPL aggregate keeps its sub-sequence number", func(t *testing.T) { testSubSequence(t, newStore(t)) })
	t.Run("hash key range and children survive every write", func(t *testing.T) { testKCLFields(t, newStore(t)) })
	t.Run("of concurrent takes with one observation exactly one wins", func(t *testing.T) {
		s := newStore(t)
		free := create(t, s, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon})
		w := race(t, 10, func(i int) error { _, err := s.TakeLease(t.Context(), free, fmt.Sprintf("w%d", i)); return err })
		if got := get(t, s, "s1"); got.Owner != fmt.Sprintf("w%d", w) || got.Epoch != 1 {
			t.Errorf("stored %+v, want the winner w%d at epoch 1", got, w)
		}
	})
	t.Run("ListLeases returns every lease across pages", func(t *testing.T) {
		testList(t, newStore(t), cmp.Or(opts.ListSize, defaultListSize))
	})
	optional(t, "corrupt leases are reported, not returned, and match no write", opts.PutCorrupt != nil, "LeaseOptions.PutCorrupt",
		func(t *testing.T) { testCorruptLeases(t, newStore(t), opts) })
	optional(t, "a missing lease table is ErrTableNotFound", opts.Missing != nil, "LeaseOptions.Missing",
		func(t *testing.T) { testMissingLeaseTable(t, opts.Missing(t)) })
}

func create(t *testing.T, s consumer.LeaseStore, l lease.Lease) lease.Lease {
	t.Helper()
	if err := s.CreateLease(t.Context(), l); err != nil {
		t.Fatalf("CreateLease %s: %v", l.ShardID, err)
	}
	return get(t, s, l.ShardID)
}

func get(t *testing.T, s consumer.LeaseStore, shardID string) lease.Lease {
	t.Helper()
	l, err := s.GetLease(t.Context(), shardID)
	if err != nil {
		t.Fatalf("GetLease %s: %v", shardID, err)
	}
	return l
}

func take(t *testing.T, s consumer.LeaseStore, observed lease.Lease, owner string) lease.Lease {
	t.Helper()
	l, err := s.TakeLease(t.Context(), observed, owner)
	if err != nil {
		t.Fatalf("TakeLease %s for %s: %v", observed.ShardID, owner, err)
	}
	return l
}

// list reads the table and indexes its leases, failing t on corrupt items.
func list(t *testing.T, s consumer.LeaseStore) map[string]lease.Lease {
	t.Helper()
	tab, err := s.ListLeases(t.Context())
	if err != nil {
		t.Fatalf("ListLeases: %v", err)
	}
	if len(tab.Corrupt) > 0 {
		t.Errorf("ListLeases reported corrupt items %v", tab.Corrupt)
	}
	return byKey(t, "ListLeases", tab.Leases, func(l lease.Lease) string { return l.ShardID })
}

func testCreate[S consumer.LeaseStore](t *testing.T, newStore func(t *testing.T) S) {
	local := time.FixedZone("UTC+1", 3600)
	tests := []struct {
		name string
		in   lease.Lease
		err  error
		want *lease.Lease // stored afterwards; nil: none
	}{
		{
			name: "starts free at epoch 0 whatever owner and epoch it is given",
			in:   lease.Lease{ShardID: "s1", Owner: "w1", Epoch: 9, Checkpoint: lease.TrimHorizon},
			want: &lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon},
		},
		{
			name: "keeps a sequence number checkpoint",
			in:   lease.Lease{ShardID: "s1", Checkpoint: "49590338271490256608559692538361571095921575989136588898"},
			want: &lease.Lease{ShardID: "s1", Checkpoint: "49590338271490256608559692538361571095921575989136588898"},
		},
		{
			name: "stores the start timestamp in UTC milliseconds and the parents as a sorted set",
			in: lease.Lease{ShardID: "s1", Checkpoint: lease.AtTimestamp,
				StartTimestamp: time.Date(2026, 1, 2, 3, 4, 5, 6_789_123, local), ParentShardIDs: []string{"p2", "p1", "p2"}},
			want: &lease.Lease{ShardID: "s1", Checkpoint: lease.AtTimestamp,
				StartTimestamp: time.Date(2026, 1, 2, 2, 4, 5, 6_000_000, time.UTC), ParentShardIDs: []string{"p1", "p2"}},
		},
		{
			name: "keeps a checkpoint's sub-sequence number",
			in:   lease.Lease{ShardID: "s1", Checkpoint: "49590338271490256608559692538361571095921575989136588898", CheckpointSubSequence: 3},
			want: &lease.Lease{ShardID: "s1", Checkpoint: "49590338271490256608559692538361571095921575989136588898", CheckpointSubSequence: 3},
		},
		{
			name: "keeps the hash key range and the children as a sorted set",
			in: lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon, StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727",
				ChildShardIDs: []string{"c2", "c1", "c2"}},
			want: &lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon, StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727",
				ChildShardIDs: []string{"c1", "c2"}},
		},
		{
			name: "stores empty parents as none",
			in:   lease.Lease{ShardID: "s1", Checkpoint: lease.Latest, ParentShardIDs: []string{}},
			want: &lease.Lease{ShardID: "s1", Checkpoint: lease.Latest},
		},
		{
			name: "refuses an empty shard id",
			in:   lease.Lease{Checkpoint: lease.TrimHorizon},
			err:  errInvalid,
		},
		{
			name: "refuses an empty checkpoint",
			in:   lease.Lease{ShardID: "s1"},
			err:  errInvalid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			checkErr(t, "CreateLease", s.CreateLease(t.Context(), tc.in), tc.err)
			got := list(t, s)
			var want map[string]lease.Lease
			if tc.want != nil {
				want = map[string]lease.Lease{tc.want.ShardID: *tc.want}
				if l, err := s.GetLease(t.Context(), tc.want.ShardID); err != nil || !reflect.DeepEqual(l, *tc.want) {
					t.Errorf("GetLease = %+v, %v; want %+v", l, err, *tc.want)
				}
			}
			if len(got) != 0 || len(want) != 0 {
				if !reflect.DeepEqual(got, want) {
					t.Errorf("stored %+v, want %+v", got, want)
				}
			}
		})
	}
	t.Run("of an existing shard is ErrExists and changes nothing", func(t *testing.T) {
		s := newStore(t)
		held := take(t, s, create(t, s, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon}), "w1")
		err := s.CreateLease(t.Context(), lease.Lease{ShardID: "s1", Checkpoint: lease.Latest})
		checkErr(t, "second CreateLease", err, lease.ErrExists)
		if got := get(t, s, "s1"); !reflect.DeepEqual(got, held) {
			t.Errorf("stored %+v, want %+v", got, held)
		}
	})
}

// The fixture of the conditional-write cases: s1 held by "a" at epoch 1 with checkpoint
// "100", parent "s0" and a lag of 50; s2 free at epoch 0 at TRIM_HORIZON.
func conditionalFixture(t *testing.T, s consumer.LeaseStore) (held, free lease.Lease) {
	t.Helper()
	s1 := create(t, s, lease.Lease{ShardID: "s1", Checkpoint: "100", ParentShardIDs: []string{"s0"}})
	held = take(t, s, s1, "a")
	if err := s.Checkpoint(t.Context(), held, at("100"), 50); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	held = get(t, s, "s1")
	free = create(t, s, lease.Lease{ShardID: "s2", Checkpoint: lease.TrimHorizon})
	want := lease.Lease{ShardID: "s1", Owner: "a", Epoch: 1, Checkpoint: "100", ParentShardIDs: []string{"s0"}, MillisBehindLatest: 50}
	if !reflect.DeepEqual(held, want) {
		t.Fatalf("fixture lease %+v, want %+v", held, want)
	}
	return held, free
}

type leaseOp func(ctx context.Context, s consumer.LeaseStore) (*lease.Lease, error)

func takeOp(observed lease.Lease, owner string) leaseOp {
	return func(ctx context.Context, s consumer.LeaseStore) (*lease.Lease, error) {
		l, err := s.TakeLease(ctx, observed, owner)
		return &l, err
	}
}

func releaseOp(held lease.Lease, final lease.ExtendedSequenceNumber) leaseOp {
	return func(ctx context.Context, s consumer.LeaseStore) (*lease.Lease, error) {
		return nil, s.ReleaseLease(ctx, held, final)
	}
}

func checkpointOp(held lease.Lease, to lease.ExtendedSequenceNumber, lag int64) leaseOp {
	return func(ctx context.Context, s consumer.LeaseStore) (*lease.Lease, error) {
		return nil, s.Checkpoint(ctx, held, to, lag)
	}
}

// at returns the checkpoint at seq (a sequence number or a special value), with
// sub-sequence number 0.
func at(seq string) lease.ExtendedSequenceNumber {
	return lease.ExtendedSequenceNumber{SequenceNumber: seq}
}

// none is no checkpoint: ReleaseLease leaves the stored one.
var none lease.ExtendedSequenceNumber

func deleteOp(observed lease.Lease) leaseOp {
	return func(ctx context.Context, s consumer.LeaseStore) (*lease.Lease, error) {
		return nil, s.DeleteLease(ctx, observed)
	}
}

// with returns l changed by f.
func with[T any](l T, f func(*T)) T {
	f(&l)
	return l
}

func testConditionalWrites[S consumer.LeaseStore](t *testing.T, newStore func(t *testing.T) S) {
	held := lease.Lease{ShardID: "s1", Owner: "a", Epoch: 1, Checkpoint: "100", ParentShardIDs: []string{"s0"}, MillisBehindLatest: 50}
	free := lease.Lease{ShardID: "s2", Checkpoint: lease.TrimHorizon}
	staleOwner := with(held, func(l *lease.Lease) { l.Owner = "x" })
	staleEpoch := with(held, func(l *lease.Lease) { l.Epoch = 0 })
	staleBoth := with(held, func(l *lease.Lease) { l.Owner, l.Epoch = "x", 0 })
	heldSeenFree := with(held, func(l *lease.Lease) { l.Owner = "" })
	freeSeenHeld := with(free, func(l *lease.Lease) { l.Owner = "a" })
	freeStaleEpoch := with(free, func(l *lease.Lease) { l.Epoch = 3 })
	missing := lease.Lease{ShardID: "s9", Owner: "a", Epoch: 1, Checkpoint: "100"}
	const seq = "49590338271490256608559692538361571095921575989136588898"

	tests := []struct {
		name string
		op   leaseOp
		err  error
		// change edits the expected table (s1 and s2 as in the fixture); a lease left
		// with an empty ShardID is expected to be gone.
		change func(s1, s2 *lease.Lease)
	}{
		{"take with the current owner and epoch moves the lease and increments the epoch", takeOp(held, "b"), nil,
			func(s1, _ *lease.Lease) { s1.Owner, s1.Epoch = "b", 2 }},
		{"take of a free lease observed free", takeOp(free, "b"), nil,
			func(_, s2 *lease.Lease) { s2.Owner, s2.Epoch = "b", 1 }},
		{"take with a stale owner is a conflict", takeOp(staleOwner, "b"), lease.ErrConflict, nil},
		{"take with a stale epoch is a conflict", takeOp(staleEpoch, "b"), lease.ErrConflict, nil},
		{"take with a stale owner and epoch is a conflict", takeOp(staleBoth, "b"), lease.ErrConflict, nil},
		{"take of a held lease observed free is a conflict", takeOp(heldSeenFree, "b"), lease.ErrConflict, nil},
		{"take of a free lease observed held is a conflict", takeOp(freeSeenHeld, "b"), lease.ErrConflict, nil},
		{"take of a free lease at a stale epoch is a conflict", takeOp(freeStaleEpoch, "b"), lease.ErrConflict, nil},
		{"take of a missing lease is a conflict and creates nothing", takeOp(missing, "b"), lease.ErrConflict, nil},
		{"take for an empty owner is refused", takeOp(held, ""), errInvalid, nil},

		{"release with a checkpoint frees the lease, increments the epoch and writes it", releaseOp(held, at("200")), nil,
			func(s1, _ *lease.Lease) { s1.Owner, s1.Epoch, s1.Checkpoint = "", 2, "200" }},
		{"release with a checkpoint inside an aggregate writes its sub-sequence number", releaseOp(held, lease.ExtendedSequenceNumber{SequenceNumber: "200", SubSequenceNumber: 3}), nil,
			func(s1, _ *lease.Lease) {
				s1.Owner, s1.Epoch, s1.Checkpoint, s1.CheckpointSubSequence = "", 2, "200", 3
			}},
		{"release without a checkpoint keeps the stored one", releaseOp(held, none), nil,
			func(s1, _ *lease.Lease) { s1.Owner, s1.Epoch = "", 2 }},
		{"release at SHARD_END", releaseOp(held, at(lease.ShardEnd)), nil,
			func(s1, _ *lease.Lease) { s1.Owner, s1.Epoch, s1.Checkpoint = "", 2, lease.ShardEnd }},
		{"release at SHARD_END records the held lease's children", releaseOp(withChildren(held, "c2", "c1"), at(lease.ShardEnd)), nil,
			func(s1, _ *lease.Lease) {
				s1.Owner, s1.Epoch, s1.Checkpoint, s1.ChildShardIDs = "", 2, lease.ShardEnd, []string{"c1", "c2"}
			}},
		{"release before SHARD_END records no children", releaseOp(withChildren(held, "c1"), at("200")), nil,
			func(s1, _ *lease.Lease) { s1.Owner, s1.Epoch, s1.Checkpoint = "", 2, "200" }},
		{"release with a stale owner is a conflict", releaseOp(staleOwner, at("200")), lease.ErrConflict, nil},
		{"release with a stale epoch is a conflict", releaseOp(staleEpoch, at("200")), lease.ErrConflict, nil},
		{"release with a stale owner and epoch is a conflict", releaseOp(staleBoth, at("200")), lease.ErrConflict, nil},
		{"release of a missing lease is a conflict and creates nothing", releaseOp(missing, at("200")), lease.ErrConflict, nil},
		{"release of a lease held by nobody is refused", releaseOp(free, none), errInvalid, nil},
		{"release with a negative sub-sequence number is refused", releaseOp(held, lease.ExtendedSequenceNumber{SequenceNumber: "200", SubSequenceNumber: -1}), errInvalid, nil},

		{"checkpoint by the owner writes the sequence number and lag, keeping owner and epoch", checkpointOp(held, at(seq), 1234), nil,
			func(s1, _ *lease.Lease) { s1.Checkpoint, s1.MillisBehindLatest = seq, 1234 }},
		{"checkpoint inside an aggregate writes the sequence and sub-sequence numbers", checkpointOp(held, lease.ExtendedSequenceNumber{SequenceNumber: seq, SubSequenceNumber: 4}, 7), nil,
			func(s1, _ *lease.Lease) { s1.Checkpoint, s1.CheckpointSubSequence, s1.MillisBehindLatest = seq, 4, 7 }},
		{"checkpoint at SHARD_END", checkpointOp(held, at(lease.ShardEnd), 0), nil,
			func(s1, _ *lease.Lease) { s1.Checkpoint, s1.MillisBehindLatest = lease.ShardEnd, 0 }},
		{"checkpoint with an unknown lag keeps the stored lag", checkpointOp(held, at("150"), -1), nil,
			func(s1, _ *lease.Lease) { s1.Checkpoint = "150" }},
		{"checkpoint with a stale owner is a conflict", checkpointOp(staleOwner, at("999"), 1), lease.ErrConflict, nil},
		{"checkpoint with a stale epoch is a conflict", checkpointOp(staleEpoch, at("999"), 1), lease.ErrConflict, nil},
		{"checkpoint with a stale owner and epoch is a conflict", checkpointOp(staleBoth, at("999"), 1), lease.ErrConflict, nil},
		{"checkpoint of a missing lease is a conflict and creates nothing", checkpointOp(missing, at("999"), 1), lease.ErrConflict, nil},
		{"checkpoint of a lease held by nobody is refused", checkpointOp(free, at("999"), 1), errInvalid, nil},
		{"an empty checkpoint is refused", checkpointOp(held, none, 1), errInvalid, nil},
		{"a negative sub-sequence number is refused", checkpointOp(held, lease.ExtendedSequenceNumber{SequenceNumber: seq, SubSequenceNumber: -1}, 1), errInvalid, nil},

		{"delete with the current owner and epoch removes the lease", deleteOp(held), nil,
			func(s1, _ *lease.Lease) { *s1 = lease.Lease{} }},
		{"delete of a free lease observed free", deleteOp(free), nil,
			func(_, s2 *lease.Lease) { *s2 = lease.Lease{} }},
		{"delete with a stale owner is a conflict", deleteOp(staleOwner), lease.ErrConflict, nil},
		{"delete with a stale epoch is a conflict", deleteOp(staleEpoch), lease.ErrConflict, nil},
		{"delete of a missing lease is a conflict", deleteOp(missing), lease.ErrConflict, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			s1, s2 := conditionalFixture(t, s)
			if tc.change != nil {
				tc.change(&s1, &s2)
			}
			got, err := tc.op(t.Context(), s)
			ok := checkErr(t, "the write", err, tc.err)
			want := map[string]lease.Lease{}
			for _, l := range []lease.Lease{s1, s2} {
				if l.ShardID != "" {
					want[l.ShardID] = l
				}
			}
			stored := list(t, s)
			if !reflect.DeepEqual(stored, want) {
				t.Errorf("stored\n%+v\nwant\n%+v", stored, want)
			}
			if ok && tc.err == nil && got != nil && !reflect.DeepEqual(*got, stored[got.ShardID]) {
				t.Errorf("returned %+v, stored %+v", *got, stored[got.ShardID])
			}
		})
	}
}

func withChildren(l lease.Lease, ids ...string) lease.Lease {
	return with(l, func(l *lease.Lease) { l.ChildShardIDs = ids })
}

// testKCLFields: the hash key range and children a lease was created with survive takes,
// checkpoints and releases.
func testKCLFields(t *testing.T, s consumer.LeaseStore) {
	ctx := t.Context()
	want := create(t, s, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"s0"},
		StartingHashKey: "10", EndingHashKey: "20", ChildShardIDs: []string{"s2"}})
	a := take(t, s, want, "a")
	checkErr(t, "checkpoint", s.Checkpoint(ctx, a, at("5"), -1), nil)
	b := take(t, s, get(t, s, "s1"), "b")
	checkErr(t, "release", s.ReleaseLease(ctx, b, at("9")), nil)
	got := get(t, s, "s1")
	want.Epoch, want.Checkpoint = 3, "9"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after take, checkpoint, take and release:\n got %+v\nwant %+v", got, want)
	}
}

// testSubSequence: a checkpoint's sub-sequence number is stored with
// it, survives a take, and a later checkpoint without one sets it back to 0.
func testSubSequence(t *testing.T, s consumer.LeaseStore) {
	ctx := t.Context()
	a := take(t, s, create(t, s, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon}), "a")
	checkErr(t, "checkpoint of user record 2", s.Checkpoint(ctx, a, lease.ExtendedSequenceNumber{SequenceNumber: "5", SubSequenceNumber: 2}, -1), nil)
	if l := get(t, s, "s1"); l.Checkpoint != "5" || l.CheckpointSubSequence != 2 ||
		l.ExtendedSequenceNumber() != (lease.ExtendedSequenceNumber{SequenceNumber: "5", SubSequenceNumber: 2}) {
		t.Errorf("lease %+v, want checkpoint 5 sub-sequence 2", l)
	}
	b := take(t, s, a, "b")
	if b.Checkpoint != "5" || b.CheckpointSubSequence != 2 {
		t.Errorf("taken lease %+v, want checkpoint 5 sub-sequence 2", b)
	}
	checkErr(t, "plain checkpoint", s.Checkpoint(ctx, b, at("9"), -1), nil)
	if l := get(t, s, "s1"); l.Checkpoint != "9" || l.CheckpointSubSequence != 0 {
		t.Errorf("lease %+v, want checkpoint 9 sub-sequence 0", l)
	}
	checkErr(t, "release inside an aggregate", s.ReleaseLease(ctx, b, lease.ExtendedSequenceNumber{SequenceNumber: "12", SubSequenceNumber: 1}), nil)
	if l := get(t, s, "s1"); l.Checkpoint != "12" || l.CheckpointSubSequence != 1 || l.Owner != "" {
		t.Errorf("released lease %+v, want checkpoint 12 sub-sequence 1", l)
	}
}

// testFencing follows one lease through a steal: the former owner can neither checkpoint
// nor release, the new one can, and a released lease is free for the next taker.
func testFencing(t *testing.T, s consumer.LeaseStore) {
	ctx := t.Context()
	a := take(t, s, create(t, s, lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon}), "a")
	if err := s.Checkpoint(ctx, a, at("5"), 10); err != nil {
		t.Fatalf("checkpoint by the owner: %v", err)
	}
	b := take(t, s, a, "b")
	if b.Owner != "b" || b.Epoch != 2 || b.Checkpoint != "5" {
		t.Errorf("stolen lease %+v, want owner b at epoch 2 with checkpoint 5", b)
	}
	checkErr(t, "checkpoint by the former owner", s.Checkpoint(ctx, a, at("6"), 10), lease.ErrConflict)
	checkErr(t, "release by the former owner", s.ReleaseLease(ctx, a, at("6")), lease.ErrConflict)
	_, err := s.TakeLease(ctx, a, "a")
	checkErr(t, "take back with the former observation", err, lease.ErrConflict)
	checkErr(t, "checkpoint by the new owner", s.Checkpoint(ctx, b, at("7"), -1), nil)
	checkErr(t, "release by the new owner", s.ReleaseLease(ctx, b, none), nil)
	checkErr(t, "second release", s.ReleaseLease(ctx, b, none), lease.ErrConflict)
	free := get(t, s, "s1")
	if want := (lease.Lease{ShardID: "s1", Epoch: 3, Checkpoint: "7", MillisBehindLatest: 10}); !reflect.DeepEqual(free, want) {
		t.Errorf("released lease %+v, want %+v", free, want)
	}
	if c := take(t, s, free, "c"); c.Owner != "c" || c.Epoch != 4 || c.Checkpoint != "7" {
		t.Errorf("lease taken after the release %+v, want owner c at epoch 4 with checkpoint 7", c)
	}
}

func testList(t *testing.T, s consumer.LeaseStore, n int) {
	if l := list(t, s); len(l) != 0 {
		t.Fatalf("a new store lists %v", l)
	}
	want := map[string]lease.Lease{}
	for i := range n {
		l := lease.Lease{ShardID: fmt.Sprintf("shardId-%012d", i), Checkpoint: lease.TrimHorizon}
		if i%3 == 1 {
			l.Checkpoint = lease.AtTimestamp
			l.StartTimestamp = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
			l.ParentShardIDs = []string{fmt.Sprintf("shardId-%012d", i-1)}
		}
		l = create(t, s, l)
		if i%3 == 2 {
			l = take(t, s, l, fmt.Sprintf("w%d", i))
		}
		want[l.ShardID] = l
	}
	if got := list(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("ListLeases of %d leases returned %d:\n got %+v\nwant %+v", n, len(got), got, want)
	}
}

func testCorruptLeases[S consumer.LeaseStore](t *testing.T, s S, opts LeaseOptions[S]) {
	ctx := t.Context()
	good := map[string]lease.Lease{}
	for _, id := range []string{"a", "c", "d"} {
		good[id] = create(t, s, lease.Lease{ShardID: id, Checkpoint: lease.TrimHorizon})
	}
	opts.PutCorrupt(t, s, "b")
	opts.PutCorrupt(t, s, "e")
	tab, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatalf("ListLeases with corrupt items: %v", err)
	}
	if got := byKey(t, "ListLeases", tab.Leases, func(l lease.Lease) string { return l.ShardID }); !reflect.DeepEqual(got, good) {
		t.Errorf("leases %+v, want the readable ones %+v", got, good)
	}
	checkCorrupt(t, tab.Corrupt, "b", "e")

	_, err = s.GetLease(ctx, "b")
	switch {
	case err == nil || errors.Is(err, lease.ErrNotFound):
		t.Errorf("GetLease of a corrupt item: %v, want an error other than lease.ErrNotFound", err)
	case opts.ErrCorrupt != nil:
		checkErr(t, "GetLease of a corrupt item", err, opts.ErrCorrupt)
	}
	free := lease.Lease{ShardID: "b", Checkpoint: lease.TrimHorizon}
	held := lease.Lease{ShardID: "b", Owner: "a", Epoch: 1}
	_, err = s.TakeLease(ctx, free, "a")
	checkErr(t, "TakeLease of a corrupt item", err, lease.ErrConflict)
	checkErr(t, "ReleaseLease of a corrupt item", s.ReleaseLease(ctx, held, at("1")), lease.ErrConflict)
	checkErr(t, "Checkpoint of a corrupt item", s.Checkpoint(ctx, held, at("1"), 1), lease.ErrConflict)
	checkErr(t, "CreateLease over a corrupt item", s.CreateLease(ctx, free), lease.ErrExists)
	checkErr(t, "DeleteLease of a corrupt item", s.DeleteLease(ctx, free), lease.ErrConflict)
	if tab, err := s.ListLeases(ctx); err != nil || len(tab.Leases) != len(good) || len(tab.Corrupt) != 2 {
		t.Errorf("after the refused writes: %+v, %v; want the same table", tab, err)
	}
}

func testMissingLeaseTable(t *testing.T, s consumer.LeaseStore) {
	ctx := t.Context()
	l := lease.Lease{ShardID: "s1", Owner: "w", Epoch: 1, Checkpoint: lease.TrimHorizon}
	calls := map[string]func() error{
		"ListLeases":   func() error { _, err := s.ListLeases(ctx); return err },
		"GetLease":     func() error { _, err := s.GetLease(ctx, "s1"); return err },
		"CreateLease":  func() error { return s.CreateLease(ctx, l) },
		"TakeLease":    func() error { _, err := s.TakeLease(ctx, l, "w2"); return err },
		"ReleaseLease": func() error { return s.ReleaseLease(ctx, l, none) },
		"Checkpoint":   func() error { return s.Checkpoint(ctx, l, at("1"), -1) },
		"DeleteLease":  func() error { return s.DeleteLease(ctx, l) },
	}
	checkAll(t, calls, lease.ErrTableNotFound)
}
