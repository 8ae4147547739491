package consumer

import (
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// read is one read of the metadata table, started and returned at offsets from t0.
type read struct {
	start, end time.Duration
	recs       []lease.WorkerRecord
}

func TestLivenessJudgesOnlyFromReadsOnItsOwnClock(t *testing.T) {
	const ld = 10 * time.Second
	s := time.Second
	farFuture := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC) // a skewed writer's clock
	rec := func(hb int64, state lease.WorkerState) []lease.WorkerRecord {
		return []lease.WorkerRecord{{WorkerID: "a", Incarnation: "i1", Heartbeat: hb, State: state, LastSeen: farFuture}}
	}
	active := lease.WorkerActive
	tests := []struct {
		name    string
		reads   []read
		alive   bool
		expired bool
	}{
		{"fresh worker is alive", []read{{0, 0, rec(1, active)}}, true, false},
		{"a confirming read started just under a lease after first seen", []read{{0, 0, rec(1, active)}, {ld - time.Millisecond, ld + 3*s, rec(1, active)}}, true, false},
		{"a confirming read started a lease after first seen expires it, whatever LastSeen says", []read{{0, 0, rec(1, active)}, {ld, ld, rec(1, active)}}, false, true},
		{"time alone expires nobody: no read after the first", []read{{0, 0, rec(1, active)}}, true, false},
		{"a change restarts the count", []read{{0, 0, rec(1, active)}, {9 * s, 9 * s, rec(2, active)}, {ld + s, ld + s, rec(2, active)}}, true, false},
		// The value seen by a slow read is dated when the read returned: the heartbeat may
		// have been written just before that.
		{"a slow read dates its news at its end", []read{{0, 0, rec(1, active)}, {5 * s, 9 * s, rec(2, active)}, {9*s + ld - time.Millisecond, 30 * s, rec(2, active)}}, true, false},
		{"a slow read dates its news at its end, then a lease", []read{{0, 0, rec(1, active)}, {5 * s, 9 * s, rec(2, active)}, {9*s + ld, 9*s + ld, rec(2, active)}}, false, true},
		{"an older heartbeat (a late write) neither renews nor confirms", []read{{0, 0, rec(5, active)}, {ld, ld, rec(4, active)}}, true, false},
		{"gone is dead at once", []read{{0, 0, rec(1, active)}, {s, s, rec(2, lease.WorkerGone)}}, false, true},
		{"an active write landing after gone is not a sign of life", []read{{0, 0, rec(1, active)}, {s, s, rec(3, lease.WorkerGone)}, {2 * s, 2 * s, rec(2, active)}}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			l := newLiveness(ld)
			for _, r := range tc.reads {
				l.observe(t0.Add(r.start), t0.Add(r.end), r.recs)
			}
			if got := l.alive("a"); got != tc.alive {
				t.Errorf("alive = %v, want %v", got, tc.alive)
			}
			if got := l.expired("a"); got != tc.expired {
				t.Errorf("expired = %v, want %v", got, tc.expired)
			}
		})
	}
}

func TestLivenessRestartedIncarnationIsAlive(t *testing.T) {
	l := newLiveness(10 * time.Second)
	t0 := time.Unix(0, 0)
	l.observe(t0, t0, []lease.WorkerRecord{{WorkerID: "a", Incarnation: "old", Heartbeat: 50}})
	// The restarted process counts from 1 again: still a change.
	l.observe(t0.Add(9*time.Second), t0.Add(9*time.Second), []lease.WorkerRecord{{WorkerID: "a", Incarnation: "new", Heartbeat: 1}})
	l.observe(t0.Add(15*time.Second), t0.Add(15*time.Second), []lease.WorkerRecord{{WorkerID: "a", Incarnation: "new", Heartbeat: 1}})
	if !l.alive("a") {
		t.Fatal("a new incarnation with a lower heartbeat must count as a sign of life")
	}
}

func TestLivenessOwnerWithoutRecordExpiresAfterALeaseOfReads(t *testing.T) {
	l := newLiveness(10 * time.Second)
	b := []lease.WorkerRecord{{WorkerID: "b", Heartbeat: 1}}
	// Each step is a read (started and returned at second at, returning recs), then a
	// question about id.
	for _, step := range []struct {
		at          time.Duration
		recs        []lease.WorkerRecord
		id          string
		wantExpired bool
		why         string
	}{
		{0, nil, "ghost", false, "an owner first asked about now is not expired yet"},
		{1 * time.Second, nil, "ghost", false, "its absence counts from the first read after the question"},
		{10 * time.Second, nil, "ghost", false, "not before a lease duration"},
		{11 * time.Second, nil, "ghost", true, "an owner with no record in reads a lease duration apart is expired"},
		// A record that disappears starts the same count.
		{20 * time.Second, b, "b", false, "a live record"},
		{21 * time.Second, nil, "b", false, "a deleted record is not expired at once"},
		{26 * time.Second, nil, "b", false, "nor before a lease duration"},
		{31 * time.Second, nil, "b", true, "a deleted record expires a lease duration after it was last seen"},
	} {
		at := time.Unix(0, 0).Add(step.at)
		l.observe(at, at, step.recs)
		if got := l.expired(step.id); got != step.wantExpired {
			t.Fatalf("at %s: expired(%s) = %v: %s", step.at, step.id, got, step.why)
		}
	}
	if n := l.liveCount(); n != 0 {
		t.Fatalf("liveCount = %d, want 0", n)
	}
}

// A new coordinator takes over its predecessor's judgement of a dead worker only while
// that worker's record is exactly as judged (or still absent): any other record, a
// renewal since, is judged afresh over a lease duration.
func TestLivenessInheritsDeadWorkersOnlyWhileTheirRecordIsUnchanged(t *testing.T) {
	l := newLiveness(10 * time.Second)
	l.inherit([]lease.DeadWorker{
		{WorkerID: "same", Incarnation: "i", Heartbeat: 5},
		{WorkerID: "renewed", Incarnation: "i", Heartbeat: 5},
		{WorkerID: "restarted", Incarnation: "i", Heartbeat: 5},
		{WorkerID: "deleted", Incarnation: "i", Heartbeat: 5},
		{WorkerID: "never", Incarnation: ""},
	})
	t0 := time.Unix(100, 0)
	l.observe(t0, t0, []lease.WorkerRecord{
		{WorkerID: "same", Incarnation: "i", Heartbeat: 5},
		{WorkerID: "renewed", Incarnation: "i", Heartbeat: 6},
		{WorkerID: "restarted", Incarnation: "j", Heartbeat: 1},
	})
	for id, want := range map[string]bool{"same": true, "renewed": false, "restarted": false, "deleted": true, "never": true} {
		if got := l.expired(id); got != want {
			t.Errorf("expired(%s) = %v, want %v", id, got, want)
		}
	}
	var ids []string
	for _, d := range l.dead("self") {
		ids = append(ids, d.WorkerID)
	}
	if got := strings.Join(ids, ","); got != "deleted,never,same" {
		t.Errorf("dead = %s, want deleted,never,same", got)
	}
	// Inherited judgements are settled by the first read; later ones judge as usual.
	t1 := t0.Add(time.Second)
	l.observe(t1, t1, []lease.WorkerRecord{{WorkerID: "same", Incarnation: "i", Heartbeat: 5}, {WorkerID: "renewed", Incarnation: "i", Heartbeat: 6}})
	if !l.expired("same") || l.expired("renewed") {
		t.Errorf("after a second read: expired(same) = %v, expired(renewed) = %v; want true, false", l.expired("same"), l.expired("renewed"))
	}
}

// The coordinator's heartbeat seen in the view dates a new value, so a worker that starts
// reading the coordinator's record only when the view stalls can judge it a lease
// duration after the view last showed a new heartbeat; but a view read never confirms a
// value (it may be stale): only a strong read of the record does.
func TestLivenessDatesTheCoordinatorsHeartbeatFromTheView(t *testing.T) {
	l := newLiveness(10 * time.Second)
	t0 := time.Unix(100, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	l.sawInView("c", "i", 7, at(0))
	l.sawInView("c", "i", 7, at(11)) // the same value again: no confirmation
	if l.expired("c") {
		t.Fatal("expired on view reads alone")
	}
	l.sawInView("c", "i", 6, at(12)) // a stale view: ignored
	rec := []lease.WorkerRecord{{WorkerID: "c", Incarnation: "i", Heartbeat: 7, State: lease.WorkerActive}}
	l.observeSome(at(12), at(12), []string{"c"}, rec)
	if !l.expired("c") {
		t.Fatal("a strong read 12 s after the view first showed heartbeat 7 still returns it: want expired")
	}
	// A newer heartbeat in the view is news.
	l.sawInView("c", "i", 8, at(13))
	if l.expired("c") {
		t.Fatal("expired right after the view showed a new heartbeat")
	}
}
