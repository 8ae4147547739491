package harness

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Result is one invariant's verdict.
type Result struct {
	Name string
	// Checked says how much evidence the check looked at, for the report.
	Checked    string
	Violations []string
}

// OK reports whether the invariant held.
func (r Result) OK() bool { return len(r.Violations) == 0 }

// maxListed bounds the violations a result keeps verbatim; the count stays exact.
const maxListed = 20

func (r *Result) fail(format string, args ...any) {
	if len(r.Violations) == maxListed {
		r.Violations = append(r.Violations, "... (more)")
	}
	if len(r.Violations) > maxListed {
		return
	}
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// CompareCheckpoints orders checkpoints: the special start positions first, then
// sequence numbers as big integers, then SHARD_END. Unparsable values sort with the start
// positions.
func CompareCheckpoints(a, b string) int {
	ra, na := rankCheckpoint(a)
	rb, nb := rankCheckpoint(b)
	if ra != rb {
		return ra - rb
	}
	if ra == 1 {
		return na.Cmp(nb)
	}
	return 0
}

func rankCheckpoint(c string) (int, *big.Int) {
	if c == lease.ShardEnd {
		return 2, nil
	}
	if n, ok := new(big.Int).SetString(c, 10); ok {
		return 1, n
	}
	return 0, nil
}

// CheckLost proves that every produced record was processed and that, once the workers
// drained, each shard's checkpoint is at or past its last produced record (or SHARD_END).
// final is the lease table read after the drain.
func CheckLost(produced []Produced, deliveries []Delivery, final []lease.Lease) Result {
	r := Result{Name: "records lost: 0 (processed and checkpointed past)"}
	lost := delivery.Check(produced, deliveries).Lost
	for _, p := range lost {
		r.fail("lost: %s/%s (key %s n %d) never processed", p.Shard, p.Seq, p.Key, p.N)
	}
	last := map[string]string{}
	for _, p := range produced {
		if CompareCheckpoints(p.Seq, last[p.Shard]) > 0 {
			last[p.Shard] = p.Seq
		}
	}
	byShard := make(map[string]lease.Lease, len(final))
	for _, l := range final {
		byShard[l.ShardID] = l
	}
	shards := make([]string, 0, len(last))
	for s := range last {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	behind := 0
	for _, s := range shards {
		l, ok := byShard[s]
		switch {
		case !ok:
			behind++
			r.fail("shard %s has records but no lease", s)
		case CompareCheckpoints(l.Checkpoint, last[s]) < 0:
			behind++
			r.fail("shard %s: checkpoint %s is behind its last record %s", s, l.Checkpoint, last[s])
		}
	}
	r.Checked = fmt.Sprintf("%d records, %d shards with records; %d lost, %d checkpoints behind", len(produced), len(shards), len(lost), behind)
	return r
}

// CheckOrder proves that per partition key the records were first processed in the
// order produced (non-decreasing n by processing time), across parent and child shards.
// Replays do not count: going back to a checkpoint is how at-least-once works.
func CheckOrder(produced []Produced, deliveries []Delivery) Result {
	r := Result{Name: "per-key order kept (across parent -> child)"}
	c := delivery.Check(produced, deliveries)
	for _, o := range c.OutOfOrder {
		r.fail("key %s: n=%d (%s/%s by %s) first processed after n=%d (%s/%s by %s)",
			o.Key, o.N, o.Line.Shard, o.Line.Seq, o.Line.Worker, o.AfterN, o.After.Shard, o.After.Seq, o.After.Worker)
	}
	processed := 0
	for _, run := range c.Runs {
		processed += run.Processed
	}
	r.Checked = fmt.Sprintf("%d keys, %d records; %d out of order", c.OrderedKeys, processed, len(c.OutOfOrder))
	return r
}

// CheckCheckpoints proves from the sampled lease table that no checkpoint and no lease
// counter ever moved backwards, per shard, within and across epochs.
func CheckCheckpoints(samples []Sample) Result {
	r := Result{Name: "no checkpoint moved backwards"}
	changes := 0
	shards := eachStep(samples, func(at string, p, l lease.Lease) {
		if l.Checkpoint != p.Checkpoint {
			changes++
		}
		if CompareCheckpoints(l.Checkpoint, p.Checkpoint) < 0 {
			r.fail("shard %s at %s: checkpoint %s (owner %s epoch %d) after %s (owner %s epoch %d)",
				l.ShardID, at, l.Checkpoint, l.Owner, l.Epoch, p.Checkpoint, p.Owner, p.Epoch)
		}
		if l.Epoch < p.Epoch {
			r.fail("shard %s at %s: lease counter %d after %d", l.ShardID, at, l.Epoch, p.Epoch)
		}
	})
	r.Checked = fmt.Sprintf("%d samples, %d shards, %d checkpoint changes", len(samples), shards, changes)
	return r
}

// eachStep calls step for every two successive samples of a shard's lease, p before l,
// with the time l was sampled at; it returns how many shards the samples hold.
func eachStep(samples []Sample, step func(at string, p, l lease.Lease)) (shards int) {
	prev := map[string]lease.Lease{}
	for _, s := range samples {
		for _, l := range s.Leases {
			p, ok := prev[l.ShardID]
			prev[l.ShardID] = l
			if ok {
				step(s.At.Format("15:04:05.000"), p, l)
			}
		}
	}
	return len(prev)
}

// CheckFencing proves that no checkpoint written by a stale owner was accepted. Between
// two samples of a shard whose checkpoint changed, with counters c0 then c1, the new
// checkpoint must come with c1 >= c0 (and a changed owner needs a changed counter), and
// it must be a record processed under an epoch e with c0 <= e <= c1: an older epoch
// means an owner that had already lost the lease got its write accepted.
func CheckFencing(samples []Sample, deliveries []Delivery) Result {
	r := Result{Name: "no stale-owner checkpoint accepted"}
	epochsOf := map[string][]int64{} // shard/seq -> epochs it was processed under
	for _, d := range deliveries {
		k := d.Shard + "/" + d.Seq
		epochsOf[k] = append(epochsOf[k], d.Epoch)
	}
	checked := 0
	eachStep(samples, func(at string, p, l lease.Lease) {
		if l.Checkpoint == p.Checkpoint {
			return
		}
		checked++
		if l.Epoch < p.Epoch || (l.Epoch == p.Epoch && l.Owner != p.Owner) {
			r.fail("shard %s at %s: checkpoint %s came with owner %q epoch %d after owner %q epoch %d",
				l.ShardID, at, l.Checkpoint, l.Owner, l.Epoch, p.Owner, p.Epoch)
			return
		}
		if rank, _ := rankCheckpoint(l.Checkpoint); rank != 1 {
			return // SHARD_END: written by the owner at the end, tied to no record
		}
		es, ok := epochsOf[l.ShardID+"/"+l.Checkpoint]
		if !ok {
			r.fail("shard %s at %s: checkpoint %s (owner %q epoch %d) is a record nobody processed",
				l.ShardID, at, l.Checkpoint, l.Owner, l.Epoch)
			return
		}
		valid := false
		for _, e := range es {
			valid = valid || (e >= p.Epoch && e <= l.Epoch)
		}
		if !valid {
			r.fail("shard %s at %s: checkpoint %s was processed under epochs %v only, but the lease was already at epoch %d",
				l.ShardID, at, l.Checkpoint, es, p.Epoch)
		}
	})
	r.Checked = fmt.Sprintf("%d checkpoint changes checked against owner, epoch and record logs", checked)
	return r
}

// CheckExclusive proves that no two workers processed a shard under valid epochs at
// overlapping times: per shard, every (worker, epoch) processed within one interval, and
// an older epoch's last record was processed before a newer epoch's first.
func CheckExclusive(deliveries []Delivery) Result {
	r := Result{Name: "one worker per shard at a time (epochs do not overlap)"}
	c := delivery.Check(nil, deliveries)
	for _, sh := range c.SharedEpochs {
		r.fail("shard %s epoch %d processed by both %s and %s", sh.Line.Shard, sh.Line.Epoch, sh.Other, sh.Line.Worker)
	}
	for _, o := range c.Overlaps {
		r.fail("shard %s: %s (epoch %d) processed until %s, after %s (epoch %d) began at %s",
			o.Older.Shard, o.Older.Worker, o.Older.Epoch, fmtNanos(o.Older.Last), o.Newer.Worker, o.Newer.Epoch, fmtNanos(o.Newer.First))
	}
	r.Checked = fmt.Sprintf("%d shards, %d (worker, epoch) processing intervals", c.SpanShards, c.Spans)
	return r
}

func fmtNanos(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000") }

// EventKind says what the harness did.
type EventKind string

// Event kinds. Crash-class kinds may cause duplicates; planned kinds must not.
const (
	EventKill        EventKind = "SIGKILL"
	EventCutOff      EventKind = "cut-off"
	EventPause       EventKind = "SIGSTOP"
	EventFaults      EventKind = "faults"
	EventTerm        EventKind = "SIGTERM"
	EventStart       EventKind = "start"
	EventScaleShards EventKind = "scale-shards"
)

// Unplanned reports whether the kind is a crash, a cut or a fault: events after which
// the records since the last checkpoint may be processed again.
func (k EventKind) Unplanned() bool {
	switch k {
	case EventKill, EventCutOff, EventPause, EventFaults:
		return true
	}
	return false
}

// Event is something the harness did to one worker (or to all, Worker empty) from From
// to To (equal for instant events).
type Event struct {
	Kind     EventKind
	Worker   string
	From, To time.Time
	Detail   string
}

func (e Event) String() string {
	w := e.Worker
	if w == "" {
		w = "all"
	}
	s := fmt.Sprintf("%s %s", e.Kind, w)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// DuplicateCause counts the duplicates attributed to one event.
type DuplicateCause struct {
	Event Event
	Count int
}

// CheckDuplicates attributes every extra delivery of a record to the event that moved
// its shard: an unplanned event (crash, cut-off, pause, faults) of the worker that
// processed it before, between that delivery and the new owner's first record. It fails
// on duplicates that only planned events (SIGTERM, scaling) or nothing explain, and on
// replays of a record the lease table had already shown as checkpointed before the
// replaying epoch began (more than "the records since the last checkpoint").
func CheckDuplicates(deliveries []Delivery, samples []Sample, events []Event) (Result, []DuplicateCause) {
	r := Result{Name: "duplicates only after crashes/cut-offs, only since the last checkpoint"}
	byRecord := map[string][]Delivery{}
	epochStart := map[string]int64{} // shard/epoch -> first processing time
	for _, d := range deliveries {
		byRecord[d.Shard+"/"+d.Seq] = append(byRecord[d.Shard+"/"+d.Seq], d)
		k := fmt.Sprintf("%s/%d", d.Shard, d.Epoch)
		if t, ok := epochStart[k]; !ok || d.T < t {
			epochStart[k] = d.T
		}
	}
	causes := map[int]int{}
	total, planned, unexplained, behind := 0, 0, 0, 0
	keys := make([]string, 0, len(byRecord))
	for k, ds := range byRecord {
		if len(ds) > 1 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		ds := byRecord[k]
		sort.Slice(ds, func(i, j int) bool { return ds[i].Before(ds[j]) })
		for i := 1; i < len(ds); i++ {
			prev, d := ds[i-1], ds[i]
			total++
			from, to := prev.T, d.T
			if d.Epoch != prev.Epoch {
				to = epochStart[fmt.Sprintf("%s/%d", d.Shard, d.Epoch)]
			}
			if cp, at, ok := checkpointBefore(samples, d.Shard, to); ok && CompareCheckpoints(cp, d.Seq) >= 0 {
				behind++
				r.fail("%s: replayed by %s (epoch %d) although checkpoint %s was stored by %s",
					k, d.Worker, d.Epoch, cp, at.Format("15:04:05.000"))
			}
			best, bestPlanned := -1, -1
			for j, e := range events {
				if e.Worker != "" && e.Worker != prev.Worker {
					continue
				}
				if e.From.UnixNano() > to || e.To.UnixNano() < from {
					continue
				}
				if e.Kind.Unplanned() {
					if best < 0 || e.From.After(events[best].From) {
						best = j
					}
				} else if bestPlanned < 0 {
					bestPlanned = j
				}
			}
			switch {
			case best >= 0:
				causes[best]++
			case bestPlanned >= 0:
				planned++
				r.fail("%s: processed again by %s (epoch %d after %d by %s) after a planned move: %s",
					k, d.Worker, d.Epoch, prev.Epoch, prev.Worker, events[bestPlanned])
			default:
				unexplained++
				r.fail("%s: processed again by %s (epoch %d after %d by %s at %s) with no crash, cut-off or fault to explain it",
					k, d.Worker, d.Epoch, prev.Epoch, prev.Worker, fmtNanos(prev.T))
			}
		}
	}
	var out []DuplicateCause
	for j, n := range causes {
		out = append(out, DuplicateCause{Event: events[j], Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Event.From.Before(out[j].Event.From) })
	var parts []string
	parts = append(parts, fmt.Sprintf("%d duplicates", total))
	parts = append(parts, fmt.Sprintf("%d after crashes/cut-offs/faults", total-planned-unexplained))
	parts = append(parts, fmt.Sprintf("%d after planned moves", planned))
	parts = append(parts, fmt.Sprintf("%d unexplained", unexplained))
	parts = append(parts, fmt.Sprintf("%d behind a checkpoint", behind))
	r.Checked = strings.Join(parts, ", ")
	return r, out
}

// checkpointBefore returns the highest checkpoint of shard seen in a sample taken before
// the time (Unix nanoseconds).
func checkpointBefore(samples []Sample, shard string, before int64) (string, time.Time, bool) {
	var best string
	var at time.Time
	found := false
	for _, s := range samples {
		if s.At.UnixNano() >= before {
			break
		}
		for _, l := range s.Leases {
			if l.ShardID == shard && (!found || CompareCheckpoints(l.Checkpoint, best) > 0) {
				best, at, found = l.Checkpoint, s.At, true
			}
		}
	}
	return best, at, found
}
