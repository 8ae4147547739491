package consumer

import (
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

func TestLivenessIgnoresWallClocks(t *testing.T) {
	const ld = 10 * time.Second
	t0 := time.Unix(1000, 0)
	farFuture := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC) // a skewed writer's clock
	rec := func(id string, hb int64, state lease.WorkerState) lease.WorkerRecord {
		return lease.WorkerRecord{WorkerID: id, Incarnation: "i1", Heartbeat: hb, State: state, LastSeen: farFuture}
	}
	tests := []struct {
		name    string
		reads   [][]lease.WorkerRecord // one read per second, starting at t0
		at      time.Duration          // when to ask, after t0
		id      string
		alive   bool
		expired bool
	}{
		{"fresh worker is alive", [][]lease.WorkerRecord{{rec("a", 1, lease.WorkerActive)}}, time.Second, "a", true, false},
		{"unchanged for less than a lease", [][]lease.WorkerRecord{{rec("a", 1, lease.WorkerActive)}}, ld - time.Millisecond, "a", true, false},
		{"unchanged for a lease expires even with a future LastSeen", [][]lease.WorkerRecord{{rec("a", 1, lease.WorkerActive)}}, ld, "a", false, true},
		{"a change restarts the count", [][]lease.WorkerRecord{{rec("a", 1, lease.WorkerActive)}, {rec("a", 1, lease.WorkerActive)}, {rec("a", 2, lease.WorkerActive)}}, ld + time.Second, "a", true, false},
		{"an older heartbeat from a stale read is not a sign of life", [][]lease.WorkerRecord{{rec("a", 5, lease.WorkerActive)}, {rec("a", 4, lease.WorkerActive)}}, ld, "a", false, true},
		{"gone is dead at once", [][]lease.WorkerRecord{{rec("a", 1, lease.WorkerActive)}, {rec("a", 2, lease.WorkerGone)}}, 2 * time.Second, "a", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLiveness(ld)
			for i, r := range tc.reads {
				l.observe(t0.Add(time.Duration(i)*time.Second), r)
			}
			now := t0.Add(tc.at)
			if got := l.alive(tc.id, now); got != tc.alive {
				t.Errorf("alive = %v, want %v", got, tc.alive)
			}
			if got := l.expired(tc.id, now); got != tc.expired {
				t.Errorf("expired = %v, want %v", got, tc.expired)
			}
		})
	}
}

func TestLivenessRestartedIncarnationIsAlive(t *testing.T) {
	l := newLiveness(10 * time.Second)
	t0 := time.Unix(0, 0)
	l.observe(t0, []lease.WorkerRecord{{WorkerID: "a", Incarnation: "old", Heartbeat: 50}})
	// The restarted process counts from 1 again: still a change.
	l.observe(t0.Add(9*time.Second), []lease.WorkerRecord{{WorkerID: "a", Incarnation: "new", Heartbeat: 1}})
	if !l.alive("a", t0.Add(15*time.Second)) {
		t.Fatal("a new incarnation with a lower heartbeat must count as a sign of life")
	}
}

func TestLivenessOwnerWithoutRecordExpiresAfterLease(t *testing.T) {
	l := newLiveness(10 * time.Second)
	t0 := time.Unix(0, 0)
	if l.expired("ghost", t0) {
		t.Fatal("an owner first seen now must not be expired yet")
	}
	if l.expired("ghost", t0.Add(9*time.Second)) {
		t.Fatal("expired before a lease duration")
	}
	if !l.expired("ghost", t0.Add(10*time.Second)) {
		t.Fatal("an owner with no record for a lease duration must be expired")
	}
	// A record that disappears starts the same count.
	l.observe(t0, []lease.WorkerRecord{{WorkerID: "b", Heartbeat: 1}})
	l.observe(t0.Add(time.Second), nil)
	if l.expired("b", t0.Add(5*time.Second)) || !l.expired("b", t0.Add(11*time.Second)) {
		t.Fatal("a deleted record must expire a lease duration after it was last seen")
	}
	if n := l.liveCount(t0.Add(time.Second)); n != 0 {
		t.Fatalf("liveCount = %d, want 0", n)
	}
}
