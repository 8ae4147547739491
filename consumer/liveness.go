package consumer

import (
	"sort"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// liveness decides which workers are alive from what this worker read, on its own clock.
// Wall-clock times written by others are never compared, so clock skew does not matter.
// It is used by one goroutine only.
//
// A worker is expired (its leases may be taken) when it wrote that it is gone, or when a
// read that STARTED at least a lease duration after this worker first saw the worker's
// current heartbeat still returned that same heartbeat. Both ends are conservative:
//   - the new value is timed when the read that returned it came back, never earlier, so a
//     heartbeat written while a slow read was in flight is not dated back to the read's
//     start;
//   - the confirmation is timed when its read started, so a slow read never stretches the
//     observation, and expiry needs a fresh read: no decision rests on the passing of time
//     alone (a worker whose reads fail never expires anyone).
//
// The owner fences itself LeaseDuration - LeaseDuration/5 after its write started, which
// is before the value can have been seen, so before any confirming read can start.
type liveness struct {
	leaseDuration time.Duration
	workers       map[string]*observation
	// missing holds ids asked about or seen before that have no record now, so that owners
	// that never wrote a heartbeat (or whose record was deleted) expire the same way.
	missing map[string]*observation
	// inherited are the dead workers of the coordinator this worker succeeded, checked on
	// the next read that covers them (see inherit).
	inherited map[string]lease.DeadWorker
}

type observation struct {
	rec lease.WorkerRecord
	// firstSeen is when the read that first returned rec's heartbeat (or the absence of a
	// record) came back.
	firstSeen time.Time
	// confirmedStart is when the latest read that returned the same started.
	confirmedStart time.Time
	// pending: asked about, but no read has covered it yet.
	pending bool
}

func newLiveness(leaseDuration time.Duration) *liveness {
	return &liveness{
		leaseDuration: leaseDuration,
		workers:       make(map[string]*observation),
		missing:       make(map[string]*observation),
	}
}

// observe records a read of the whole metadata table that started at start and returned
// at end.
func (l *liveness) observe(start, end time.Time, recs []lease.WorkerRecord) {
	l.observeSome(start, end, nil, recs)
}

// observeSome records a read of the records of ids (nil: the whole table) that started at
// start and returned at end; recs are those it found. Workers it did not read are left
// as they were.
func (l *liveness) observeSome(start, end time.Time, ids []string, recs []lease.WorkerRecord) {
	inScope := func(string) bool { return true }
	if ids != nil {
		scope := make(map[string]bool, len(ids))
		for _, id := range ids {
			scope[id] = true
		}
		inScope = func(id string) bool { return scope[id] }
	}
	present := make(map[string]bool, len(recs))
	defer l.checkInherited(start, inScope, present, recs)
	for _, r := range recs {
		present[r.WorkerID] = true
		delete(l.missing, r.WorkerID)
		o, ok := l.workers[r.WorkerID]
		switch {
		case !ok, r.Incarnation != o.rec.Incarnation, r.Heartbeat > o.rec.Heartbeat:
			// A new value: a sign of life (or, with state gone, of a clean exit). Every write
			// increments the heartbeat, so a state change alone (an older write that landed
			// late, an "active" after "gone") is not one.
			l.workers[r.WorkerID] = &observation{rec: r, firstSeen: end}
		case r.Heartbeat == o.rec.Heartbeat:
			o.confirmedStart = start
			o.rec.LeasesHeld = r.LeasesHeld
		default:
			// An older heartbeat of the same incarnation (a write that landed late): neither
			// a sign of life nor a confirmation.
		}
	}
	for id := range l.workers {
		if !present[id] && inScope(id) {
			delete(l.workers, id)
			l.missing[id] = &observation{rec: lease.WorkerRecord{WorkerID: id}, firstSeen: end}
		}
	}
	for id, o := range l.missing {
		switch {
		case present[id] || !inScope(id):
		case o.pending:
			o.pending, o.firstSeen = false, end
		case start.After(o.firstSeen):
			o.confirmedStart = start
		}
	}
}

// inherit takes the dead workers another coordinator judged: each is dead as soon as a
// read shows its record as the judgement saw it (or no record at all). The judgement said
// that the worker's tenure from that heartbeat had ended; a strongly consistent read that
// still returns it shows the worker has not renewed since, so it is still dead, and no
// lease duration of new observation is needed. Any other record is judged afresh.
func (l *liveness) inherit(dead []lease.DeadWorker) {
	l.inherited = make(map[string]lease.DeadWorker, len(dead))
	for _, d := range dead {
		l.inherited[d.WorkerID] = d
	}
}

// checkInherited settles the inherited judgements of the workers a read covered.
func (l *liveness) checkInherited(start time.Time, inScope func(string) bool, present map[string]bool, recs []lease.WorkerRecord) {
	if len(l.inherited) == 0 {
		return
	}
	// Dated so that the read confirms it: stale on this read, as on the judging one.
	deadAt := func(rec lease.WorkerRecord) *observation {
		return &observation{rec: rec, firstSeen: start.Add(-l.leaseDuration), confirmedStart: start}
	}
	for _, r := range recs {
		if d, ok := l.inherited[r.WorkerID]; ok && d.Incarnation == r.Incarnation && d.Heartbeat == r.Heartbeat && d.Incarnation != "" {
			l.workers[r.WorkerID] = deadAt(r)
		}
	}
	for id := range l.inherited {
		if !inScope(id) {
			continue
		}
		if !present[id] {
			// No record: it did not renew (a renewal writes the record).
			delete(l.workers, id)
			l.missing[id] = deadAt(lease.WorkerRecord{WorkerID: id})
		}
		delete(l.inherited, id)
	}
}

// sawInView records the heartbeat of a worker as another worker's item showed it (the
// coordinator's own heartbeat in the view), in a read that returned at end. Such a read
// may be eventually consistent, so it only dates a new value (the value was written
// before the read returned, as for any read), and never confirms one: only a strongly
// consistent read of the worker's own record can show it unchanged.
func (l *liveness) sawInView(id, incarnation string, heartbeat int64, end time.Time) {
	if id == "" || incarnation == "" {
		return
	}
	o, ok := l.workers[id]
	if ok && (o.rec.Incarnation != incarnation || heartbeat <= o.rec.Heartbeat) {
		return // not newer than what was seen (a stale read, or an older incarnation)
	}
	delete(l.missing, id)
	l.workers[id] = &observation{rec: lease.WorkerRecord{WorkerID: id, Incarnation: incarnation, Heartbeat: heartbeat, State: lease.WorkerActive}, firstSeen: end}
}

// watch makes liveness judge ids that have no record (lease owners whose record was
// deleted, or never written) from the next read that covers them on, and forgets the
// records missing since before that no longer matter (not in ids).
func (l *liveness) watch(ids []string) {
	keep := make(map[string]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
		if _, ok := l.workers[id]; !ok && l.missing[id] == nil {
			l.missing[id] = &observation{rec: lease.WorkerRecord{WorkerID: id}, pending: true}
		}
	}
	for id := range l.missing {
		if !keep[id] {
			delete(l.missing, id)
		}
	}
}

// dead returns, sorted by id, the workers other than self whose leases may be taken, with
// their records as last read: those with a record that are expired, and those without one
// that expired while watched.
func (l *liveness) dead(self string) []lease.DeadWorker {
	var out []lease.DeadWorker
	for id, o := range l.workers {
		if id != self && l.expired(id) {
			out = append(out, lease.DeadWorker{WorkerID: id, Incarnation: o.rec.Incarnation, Heartbeat: o.rec.Heartbeat})
		}
	}
	for id, o := range l.missing {
		if id != self && o.stale(l.leaseDuration) {
			out = append(out, lease.DeadWorker{WorkerID: id})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WorkerID < out[j].WorkerID })
	return out
}

// expired reports whether leases owned by id may be taken: the owner said it is gone, or
// a read started a lease duration after its current heartbeat (or its absence) was first
// seen still returned the same.
func (l *liveness) expired(id string) bool {
	if o, ok := l.workers[id]; ok {
		return o.rec.State == lease.WorkerGone || o.stale(l.leaseDuration)
	}
	o, ok := l.missing[id]
	if !ok {
		// Never seen: watch for its absence from the next read that covers it on.
		l.missing[id] = &observation{rec: lease.WorkerRecord{WorkerID: id}, pending: true}
		return false
	}
	return o.stale(l.leaseDuration)
}

func (o *observation) stale(leaseDuration time.Duration) bool {
	return !o.pending && !o.confirmedStart.IsZero() && o.confirmedStart.Sub(o.firstSeen) >= leaseDuration
}

// alive reports whether id is a live worker: it has a record and is not expired. It is
// the same notion as expired on purpose: a worker counted alive keeps its leases, and a
// worker whose leases may be taken is not counted, so the coordinator's target always
// covers the shards that are free to take.
func (l *liveness) alive(id string) bool {
	_, ok := l.workers[id]
	return ok && !l.expired(id)
}

// liveIDs returns the observed workers that are alive, sorted.
func (l *liveness) liveIDs() []string {
	var ids []string
	for id := range l.workers {
		if l.alive(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// liveCount returns how many observed workers are alive.
func (l *liveness) liveCount() int { return len(l.liveIDs()) }

// leasesHeld returns the sum of the leases the alive workers report holding.
func (l *liveness) leasesHeld() int {
	n := 0
	for id, o := range l.workers {
		if l.alive(id) {
			n += o.rec.LeasesHeld
		}
	}
	return n
}

// record returns the last record read for id.
func (l *liveness) record(id string) (lease.WorkerRecord, bool) {
	o, ok := l.workers[id]
	if !ok {
		return lease.WorkerRecord{}, false
	}
	return o.rec, true
}
