package lease

import "testing"

func TestIndexParentsFinished(t *testing.T) {
	table := Table{
		Leases: []Lease{
			{ShardID: "done", Checkpoint: ShardEnd},
			{ShardID: "open", Checkpoint: "42"},
			{ShardID: "after-done", Checkpoint: TrimHorizon, ParentShardIDs: []string{"done"}},
			{ShardID: "after-open", Checkpoint: TrimHorizon, ParentShardIDs: []string{"open"}},
			{ShardID: "after-gone", Checkpoint: TrimHorizon, ParentShardIDs: []string{"aged-out"}},
			{ShardID: "after-corrupt", Checkpoint: TrimHorizon, ParentShardIDs: []string{"bad"}},
			{ShardID: "merge-half", Checkpoint: TrimHorizon, ParentShardIDs: []string{"done", "open"}},
			{ShardID: "merge-done", Checkpoint: TrimHorizon, ParentShardIDs: []string{"done", "aged-out"}},
			{ShardID: "finished-child", Checkpoint: ShardEnd, ParentShardIDs: []string{"old"}},
		},
		Corrupt: []CorruptItem{{Key: "bad", Reason: "leaseCounter: missing"}},
	}
	x := table.Index()
	for _, tc := range []struct {
		shard string
		want  bool
	}{
		{"open", true},           // no parents
		{"after-done", true},     // parent reached SHARD_END
		{"after-open", false},    // parent still open
		{"after-gone", true},     // parent has no lease: it aged out of the stream
		{"after-corrupt", false}, // nothing proves a corrupt parent ended
		{"merge-half", false},
		{"merge-done", true},
	} {
		l, ok := x.Lease(tc.shard)
		if !ok {
			t.Fatalf("Lease(%q) not found", tc.shard)
		}
		if got := x.ParentsFinished(l); got != tc.want {
			t.Errorf("ParentsFinished(%s) = %v, want %v", tc.shard, got, tc.want)
		}
	}
	if _, ok := x.Lease("bad"); ok {
		t.Error("a corrupt item is indexed as a lease")
	}
	if !x.Corrupt("bad") || x.Corrupt("open") {
		t.Error("Corrupt: want true for bad only")
	}
	for id, want := range map[string]bool{"open": true, "done": true, "bad": true, "aged-out": true, "old": false, "after-open": false} {
		if got := x.IsOpenParent(id); got != want {
			t.Errorf("IsOpenParent(%s) = %v, want %v (only parents of unfinished leases count)", id, got, want)
		}
	}
}

func TestIndexOutgrown(t *testing.T) {
	x := Table{
		Leases: []Lease{
			{ShardID: "p", Checkpoint: ShardEnd},
			{ShardID: "c1", Checkpoint: TrimHorizon, ParentShardIDs: []string{"p"}},
			{ShardID: "c2", Checkpoint: "5", ParentShardIDs: []string{"p"}},
			{ShardID: "open", Checkpoint: "7"},
			{ShardID: "leaf-end", Checkpoint: ShardEnd},
			{ShardID: "q", Checkpoint: ShardEnd},
		},
		Corrupt: []CorruptItem{{Key: "bad-child", Reason: "x"}},
	}.Index()
	for _, tc := range []struct {
		name, shard string
		stream      []string
		want        bool
	}{
		{"every child has a lease, started or not", "p", []string{"c1", "c2"}, true},
		{"the table's children suffice", "p", nil, true},
		{"a listed child without a lease", "p", []string{"c1", "c2", "c3"}, false},
		{"not finished", "open", nil, false},
		{"finished without any child known", "leaf-end", nil, false},
		{"a corrupt child", "q", []string{"bad-child"}, false},
		{"no lease", "gone", []string{"c1"}, false},
	} {
		if got := x.Outgrown(tc.shard, tc.stream); got != tc.want {
			t.Errorf("%s: Outgrown(%s, %v) = %v, want %v", tc.name, tc.shard, tc.stream, got, tc.want)
		}
	}
}

// The special checkpoints are the KCL's sentinel strings (its SentinelCheckpoint), so
// that a KCL lease table's checkpoints mean the same here and back.
func TestSpecialCheckpointsAreTheKCLs(t *testing.T) {
	for _, tc := range []struct{ got, kcl string }{
		{TrimHorizon, "TRIM_HORIZON"}, {Latest, "LATEST"}, {AtTimestamp, "AT_TIMESTAMP"}, {ShardEnd, "SHARD_END"},
	} {
		if tc.got != tc.kcl {
			t.Errorf("%q, want the KCL's %q", tc.got, tc.kcl)
		}
	}
}
