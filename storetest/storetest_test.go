package storetest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/storetest"
)

// Each mutant breaks one rule of the contract in a wrapper around memstore; the suite must
// fail on it, in the subtest named.
type mutant struct {
	leases func(*memstore.Leases) leaseStore
	meta   func(*memstore.Meta) metaStore
	fails  string // a subtest that must fail
}

type (
	leaseStore = consumer.LeaseStore
	metaStore  = consumer.MetaStore
)

// takeAnyEpoch takes a lease whatever its epoch.
type takeAnyEpoch struct{ *memstore.Leases }

func (s takeAnyEpoch) TakeLease(ctx context.Context, observed lease.Lease, owner string) (lease.Lease, error) {
	if l, ok := s.Lease(observed.ShardID); ok {
		observed.Epoch = l.Epoch
	}
	return s.Leases.TakeLease(ctx, observed, owner)
}

// checkpointAnyOwner accepts a checkpoint from anyone.
type checkpointAnyOwner struct{ *memstore.Leases }

func (s checkpointAnyOwner) Checkpoint(ctx context.Context, held lease.Lease, to lease.ExtendedSequenceNumber, lag int64) error {
	if l, ok := s.Lease(held.ShardID); ok {
		held.Owner = l.Owner
	}
	return s.Leases.Checkpoint(ctx, held, to, lag)
}

// createAsGiven stores a new lease with the owner and epoch it is given.
type createAsGiven struct{ *memstore.Leases }

func (s createAsGiven) CreateLease(ctx context.Context, l lease.Lease) error {
	if err := s.Leases.CreateLease(ctx, l); err != nil {
		return err
	}
	s.Put(l)
	return nil
}

// firstPageOnly lists what one page of ten would hold.
type firstPageOnly struct{ *memstore.Leases }

func (s firstPageOnly) ListLeases(ctx context.Context) (lease.Table, error) {
	t, err := s.Leases.ListLeases(ctx)
	t.Leases = t.Leases[:min(len(t.Leases), 10)]
	return t, err
}

// positionRewritten lets every update move the initial position.
type positionRewritten struct{ *memstore.Meta }

func (s positionRewritten) UpdateCoordinator(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	got, err := s.Meta.UpdateCoordinator(ctx, rec)
	if err == nil && rec.InitialPosition != "" {
		got.InitialPosition, got.InitialTimestamp = rec.InitialPosition, rec.InitialTimestamp.UTC()
		s.PutCoordinator(&got)
	}
	return got, err
}

// corruptHidden leaves undecodable items out of ReadMeta.
type corruptHidden struct{ *memstore.Meta }

func (s corruptHidden) ReadMeta(ctx context.Context) (lease.Meta, error) {
	m, err := s.Meta.ReadMeta(ctx)
	m.Corrupt = nil
	return m, err
}

var mutants = map[string]mutant{
	"take at any epoch": {leases: func(s *memstore.Leases) leaseStore { return takeAnyEpoch{s} },
		fails: "ConditionalWrites/take_with_a_stale_epoch_is_a_conflict"},
	"checkpoint by any owner": {leases: func(s *memstore.Leases) leaseStore { return checkpointAnyOwner{s} },
		fails: "ConditionalWrites/checkpoint_with_a_stale_owner_is_a_conflict"},
	"create as given": {leases: func(s *memstore.Leases) leaseStore { return createAsGiven{s} },
		fails: "CreateLease/starts_free_at_epoch_0_whatever_owner_and_epoch_it_is_given"},
	"first page only": {leases: func(s *memstore.Leases) leaseStore { return firstPageOnly{s} },
		fails: "ListLeases_returns_every_lease_across_pages"},
	"position rewritten": {meta: func(s *memstore.Meta) metaStore { return positionRewritten{s} },
		fails: "Coordinator/a_later_update_never_changes_the_recorded_position"},
	"corrupt hidden": {meta: func(s *memstore.Meta) metaStore { return corruptHidden{s} },
		fails: "corrupt_items_are_reported,_not_returned,_and_match_no_write"},
}

const mutantEnv = "STORETEST_MUTANT"

// TestMutant runs the suite against the mutant named by $STORETEST_MUTANT; without it,
// against memstore as it is.
func TestMutant(t *testing.T) {
	m := mutants[os.Getenv(mutantEnv)]
	newLeases := func(*testing.T) leaseStore { return memstore.NewLeases() }
	if m.leases != nil {
		newLeases = func(*testing.T) leaseStore { return m.leases(memstore.NewLeases()) }
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	newMeta := func(*testing.T) metaStore {
		s := memstore.NewMeta()
		s.Now = func() time.Time { return t0 }
		if m.meta != nil {
			return m.meta(s)
		}
		return s
	}
	storetest.TestLeaseStore(t, newLeases, storetest.LeaseOptions[leaseStore]{
		PutCorrupt: func(_ *testing.T, s leaseStore, key string) { unwrap(s).(*memstore.Leases).PutCorrupt(key, "bad") },
	})
	storetest.TestMetaStore(t, newMeta, storetest.MetaOptions[metaStore]{
		CoordinatorKey: func(metaStore) string { return memstore.CoordinatorKey },
		PutCorrupt:     func(_ *testing.T, s metaStore, key string) { unwrap(s).(*memstore.Meta).PutCorrupt(key, "bad") },
		Now:            t0,
	})
}

// unwrap returns the memstore inside a mutant.
func unwrap(s any) any {
	switch s := s.(type) {
	case takeAnyEpoch:
		return s.Leases
	case checkpointAnyOwner:
		return s.Leases
	case createAsGiven:
		return s.Leases
	case firstPageOnly:
		return s.Leases
	case positionRewritten:
		return s.Meta
	case corruptHidden:
		return s.Meta
	}
	return s
}

// The suite fails on every mutant, in the subtest that covers the broken rule.
func TestSuiteFailsOnBrokenStores(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("running as a mutant")
	}
	for name, m := range mutants {
		t.Run(name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMutant$", "-test.v")
			cmd.Env = append(os.Environ(), mutantEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store that breaks %q:\n%s", name, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestMutant/"+m.fails) {
				t.Errorf("subtest %s did not fail:\n%s", m.fails, out)
			}
		})
	}
}
