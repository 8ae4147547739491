package consumer

import (
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// liveness decides which workers are alive from what this worker observed, on its own
// clock: a worker is alive while its heartbeat (or incarnation) changed less than a lease
// duration ago, counted from the moment this worker first saw the new value. Wall-clock
// times written by others are never compared, so clock skew does not matter. A worker
// that wrote state "gone" is dead at once. It is used by one goroutine only.
type liveness struct {
	leaseDuration time.Duration
	workers       map[string]*observation
	// missing records when an id was first asked about without having a record, so that
	// owners that never wrote a heartbeat (or whose record was deleted) expire too.
	missing map[string]time.Time
}

type observation struct {
	rec        lease.WorkerRecord
	lastChange time.Time
}

func newLiveness(leaseDuration time.Duration) *liveness {
	return &liveness{
		leaseDuration: leaseDuration,
		workers:       make(map[string]*observation),
		missing:       make(map[string]time.Time),
	}
}

// observe records a read of the metadata table made at now.
func (l *liveness) observe(now time.Time, recs []lease.WorkerRecord) {
	present := make(map[string]bool, len(recs))
	for _, r := range recs {
		present[r.WorkerID] = true
		delete(l.missing, r.WorkerID)
		o, ok := l.workers[r.WorkerID]
		switch {
		case !ok:
			l.workers[r.WorkerID] = &observation{rec: r, lastChange: now}
		case r.Incarnation != o.rec.Incarnation || r.Heartbeat > o.rec.Heartbeat || r.State != o.rec.State:
			o.rec, o.lastChange = r, now
		default:
			// Same heartbeat, or an older one from a stale read: not a sign of life.
			o.rec.LeasesHeld = r.LeasesHeld
		}
	}
	for id := range l.workers {
		if !present[id] {
			delete(l.workers, id)
			l.missing[id] = now
		}
	}
}

// alive reports whether id is a live worker at now.
func (l *liveness) alive(id string, now time.Time) bool {
	o, ok := l.workers[id]
	if !ok {
		return false
	}
	return o.rec.State != lease.WorkerGone && now.Sub(o.lastChange) < l.leaseDuration
}

// expired reports whether leases owned by id may be taken at now: the owner said it is
// gone, or nothing changed for a lease duration, or it has had no record for that long.
func (l *liveness) expired(id string, now time.Time) bool {
	if o, ok := l.workers[id]; ok {
		return o.rec.State == lease.WorkerGone || now.Sub(o.lastChange) >= l.leaseDuration
	}
	first, ok := l.missing[id]
	if !ok {
		l.missing[id] = now
		return false
	}
	return now.Sub(first) >= l.leaseDuration
}

// liveCount returns how many observed workers are alive at now.
func (l *liveness) liveCount(now time.Time) int {
	n := 0
	for id := range l.workers {
		if l.alive(id, now) {
			n++
		}
	}
	return n
}
