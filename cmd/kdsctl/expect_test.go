package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// leaseSeed is one lease to seed: shard, owner ("" for none), finished, parents.
type leaseSeed struct {
	shard, owner string
	finished     bool
	parents      []string
}

func seedLeases(t *testing.T, st *dynamostore.Store, seeds []leaseSeed) {
	t.Helper()
	for _, s := range seeds {
		cp := lease.TrimHorizon
		if s.finished {
			cp = lease.ShardEnd
		}
		seedLease(t, st, s.shard, s.owner, cp, s.parents...)
	}
}

func TestExpect(t *testing.T) {
	twoByTwo := []leaseSeed{{"s0", "w1", false, nil}, {"s1", "w1", false, nil}, {"s2", "w2", false, nil}, {"s3", "w2", false, nil}}
	coord := func(shards, workers, live, maxLeases, target int) lease.CoordinatorRecord {
		return lease.CoordinatorRecord{ShardCount: shards, WorkerCount: workers, LiveWorkers: live,
			MaxLeasesPerWorker: maxLeases, TargetLeasesPerWorker: target, Cap: 80}
	}
	tests := []struct {
		name     string
		coord    *lease.CoordinatorRecord
		leases   []leaseSeed
		args     []string
		wantCode int
		wantOut  []string
	}{
		{
			name: "converged", coord: new(coord(4, 2, 2, 2, 2)), leases: twoByTwo,
			args: []string{"--shards", "4", "--max-leases", "2", "--workers", "2"}, wantCode: 0,
			wantOut: []string{"PASS", "w1=2 w2=2"},
		},
		{
			name: "wrong max leases", coord: new(coord(4, 2, 2, 2, 2)), leases: twoByTwo,
			args: []string{"--shards", "4", "--max-leases", "3"}, wantCode: 1,
			wantOut: []string{"FAIL", "MISMATCH"},
		},
		{
			name: "wrong worker count", coord: new(coord(4, 2, 2, 2, 2)), leases: twoByTwo,
			args: []string{"--shards", "4", "--max-leases", "2", "--workers", "3"}, wantCode: 1,
		},
		{
			name: "unowned beyond the cap", coord: new(coord(5, 2, 2, 2, 2)),
			leases: append(twoByTwo, leaseSeed{"s4", "", false, nil}),
			args:   []string{"--shards", "5", "--max-leases", "2", "--unowned", "1"}, wantCode: 0,
		},
		{
			name: "unexpected unowned lease", coord: new(coord(5, 2, 2, 2, 2)),
			leases: append(twoByTwo, leaseSeed{"s4", "", false, nil}),
			args:   []string{"--shards", "5", "--max-leases", "2"}, wantCode: 1,
			wantOut: []string{"unowned"},
		},
		{
			// Finished leases of closed shards are not expected to be owned.
			name: "finished parent", coord: new(coord(4, 2, 2, 2, 2)),
			leases: append([]leaseSeed{{"p0", "", true, nil}}, twoByTwo...),
			args:   []string{"--shards", "4", "--max-leases", "2"}, wantCode: 0,
		},
		{
			// A parent still being read (its child waits) means resharding is in progress.
			name: "resharding in progress", coord: new(coord(4, 2, 2, 2, 2)),
			leases: append([]leaseSeed{{"c0", "", false, []string{"s0"}}}, twoByTwo...),
			args:   []string{"--shards", "4", "--max-leases", "2"}, wantCode: 1,
			wantOut: []string{"closed shards not finished"},
		},
		{
			name: "worker above max", coord: new(coord(4, 2, 2, 2, 2)),
			leases: []leaseSeed{{"s0", "w1", false, nil}, {"s1", "w1", false, nil}, {"s2", "w1", false, nil}, {"s3", "w2", false, nil}},
			args:   []string{"--shards", "4", "--max-leases", "2"}, wantCode: 1,
			wantOut: []string{"leases per worker", "w1=3"},
		},
		{
			// With a worker missing, the live ones may hold up to the target.
			name: "target while a worker is missing", coord: new(coord(4, 2, 1, 2, 4)),
			leases: []leaseSeed{{"s0", "w1", false, nil}, {"s1", "w1", false, nil}, {"s2", "w1", false, nil}, {"s3", "w1", false, nil}},
			args:   []string{"--shards", "4", "--max-leases", "2", "--workers", "2"}, wantCode: 0,
			wantOut: []string{"<= 4 (target: 1 of 2 workers live)"},
		},
		{
			name: "no coordinator yet", leases: twoByTwo,
			args: []string{"--shards", "4", "--max-leases", "2"}, wantCode: 1,
			wantOut: []string{"coordinator", "none"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := seededStore(t)
			if tt.coord != nil {
				seedCoordinator(t, st, *tt.coord)
			}
			seedLeases(t, st, tt.leases)
			args := append([]string{"--app", st.LeaseTable(), "expect", "--timeout", "400ms", "--interval", "100ms"}, tt.args...)
			r := kdsctl(t, args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d", r.code, tt.wantCode)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("output lacks %q", want)
				}
			}
		})
	}
}

func TestExpectWaitsForConvergence(t *testing.T) {
	st := seededStore(t)
	seedCoordinator(t, st, lease.CoordinatorRecord{ShardCount: 2, WorkerCount: 1, LiveWorkers: 1, MaxLeasesPerWorker: 2, TargetLeasesPerWorker: 2, Cap: 80})
	seedLease(t, st, "s0", "w1", lease.TrimHorizon)
	seedLease(t, st, "s1", "", lease.TrimHorizon)
	done := make(chan result, 1)
	go func() {
		done <- kdsctl(t, "--app", st.LeaseTable(), "expect", "--shards", "2", "--max-leases", "2", "--timeout", "20s", "--interval", "100ms", "-o", "json")
	}()
	time.Sleep(500 * time.Millisecond)
	if _, err := st.TakeLease(t.Context(), lease.Lease{ShardID: "s1", Checkpoint: lease.TrimHorizon}, "w1"); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	var res expectResult
	mustJSON(t, r, &res)
	if res.Result != "PASS" || res.Seconds < 0.4 || !allOK(res.Checks) {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(r.stderr, "waiting: owned 1 (want 2), unowned 1 (want 0)") {
		t.Errorf("no progress while waiting")
	}
}

// Tables that do not exist yet (workers not started) are waited for, until the timeout.
func TestExpectWithoutTables(t *testing.T) {
	r := kdsctl(t, "--app", "no-such-app-kdsctl", "expect", "--shards", "1", "--max-leases", "1", "--timeout", "300ms")
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL") || !strings.Contains(r.stdout, "not found") {
		t.Errorf("exit %d, want 1 with FAIL and the missing table", r.code)
	}
}
