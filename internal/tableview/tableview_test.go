package tableview

import (
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

func TestLeaseStatesAndLoad(t *testing.T) {
	tab := lease.Table{Leases: []lease.Lease{
		{ShardID: "s0", Owner: "w1", Checkpoint: lease.ShardEnd},
		{ShardID: "s1", Owner: "w1", Checkpoint: "4965", ParentShardIDs: []string{"s0"}, MillisBehindLatest: 1500},
		{ShardID: "s2", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"s1"}},
		{ShardID: "s3", Checkpoint: lease.TrimHorizon},
		{ShardID: "s4", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"aged-out"}},
	}}
	v := NewLeases("app", tab)
	for i, want := range []struct {
		shard, state string
		lag          int64 // -1: unknown
	}{
		{"s0", StateFinished, -1},
		{"s1", StateActive, 1500},
		{"s2", StateWaiting, -1},
		{"s3", StateUnowned, -1},
		{"s4", StateUnowned, -1}, // a parent without a lease aged out: finished
	} {
		got := v.Leases[i]
		lag := int64(-1)
		if got.MillisBehindLatest != nil {
			lag = *got.MillisBehindLatest
		}
		if got.Shard != want.shard || got.State != want.state || lag != want.lag {
			t.Errorf("lease %d: %s %q lag %d, want %s %q lag %d", i, got.Shard, got.State, lag, want.shard, want.state, want.lag)
		}
	}
	// The finished lease does not count against its owner.
	if len(v.Workers) != 1 || v.Workers[0] != (WorkerLoad{Worker: "w1", Leases: 1}) {
		t.Errorf("workers %+v, want w1 with 1", v.Workers)
	}
	if v.Summary != (LeaseSummary{Total: 5, Active: 1, Unowned: 2, Waiting: 1, Finished: 1}) {
		t.Errorf("summary %+v", v.Summary)
	}
}
