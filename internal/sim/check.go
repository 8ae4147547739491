package sim

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Checkers are pure functions of a Log. Each reports one violation per incident (a
// stale tenure, a shard, a streak), with a count of the events it covers, so that one
// bug does not drown the report.

// Checker is one invariant.
type Checker struct {
	Kind  string
	Check func(*Log) []Violation
}

// Checkers lists every invariant, in report order.
var Checkers = []Checker{
	{KindExclusive, CheckExclusive},
	{KindAtLeastOnce, CheckAtLeastOnce},
	{KindCheckpointBack, CheckCheckpoints},
	{KindOrder, CheckOrder},
	{KindChildFirst, CheckChildAfterParents},
	{KindBeforeStart, CheckInitialPosition},
	{KindConvergence, CheckConvergence},
	{KindOrphan, CheckOrphans},
}

// CheckAll runs every checker.
func CheckAll(l *Log) []Violation {
	var out []Violation
	for _, c := range Checkers {
		out = append(out, c.Check(l)...)
	}
	return out
}

func sortedDeliveries(l *Log) []Delivery {
	ds := slices.Clone(l.Deliveries)
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Seq < ds[j].Seq })
	return ds
}

func writesByShard(l *Log, ops ...string) map[string][]Write {
	m := make(map[string][]Write)
	for _, w := range l.Writes {
		if slices.Contains(ops, w.Op) {
			m[w.Shard] = append(m[w.Shard], w)
		}
	}
	for _, ws := range m {
		sort.SliceStable(ws, func(i, j int) bool { return ws[i].Seq < ws[j].Seq })
	}
	return m
}

// CheckExclusive: a delivery at epoch e is a violation when a TakeLease of the same
// shard at a counter above e was applied before it (a stale owner delivered after a new
// tenure began), or when a delivery of a later epoch came before it. Deliveries made
// while their process was paused are reported as KindExclusivePause: the worker
// decided to deliver before the pause, a window no lease library can close (the
// application fences it with Epoch).
func CheckExclusive(l *Log) []Violation {
	takes := writesByShard(l, OpTake)
	type key struct {
		shard, worker string
		inc           int
		epoch         int64
		kind          string
	}
	seen := map[key]*Violation{}
	count := map[key]int{}
	var order []key
	maxEpoch := map[string]Delivery{}
	for _, d := range sortedDeliveries(l) {
		ts := takes[d.Shard]
		n := sort.Search(len(ts), func(i int) bool { return ts[i].Seq >= d.Seq })
		var newer *Write
		for i := range ts[:n] {
			if ts[i].Counter > d.Epoch && (newer == nil || ts[i].Counter > newer.Counter) {
				newer = &ts[i]
			}
		}
		var msg string
		switch prev, ok := maxEpoch[d.Shard]; {
		case newer != nil:
			msg = fmt.Sprintf("%s#%d delivered %s at epoch %d after %s took the lease at counter %d (t=%s)",
				d.Worker, d.Inc, seqRange(d.Seqs), d.Epoch, newer.Owner, newer.Counter, fmtDur(newer.At))
		case ok && prev.Epoch > d.Epoch:
			msg = fmt.Sprintf("%s#%d delivered %s at epoch %d after %s#%d delivered at epoch %d (t=%s)",
				d.Worker, d.Inc, seqRange(d.Seqs), d.Epoch, prev.Worker, prev.Inc, prev.Epoch, fmtDur(prev.At))
		}
		if prev, ok := maxEpoch[d.Shard]; !ok || d.Epoch > prev.Epoch {
			maxEpoch[d.Shard] = d
		}
		if msg == "" {
			continue
		}
		kind := KindExclusive
		if d.Paused && (newer == nil || !newer.Stamp.Before(d.Call)) {
			// The newer tenure began only after the worker had decided to deliver (the
			// call came before the take, the pause held it): informational.
			kind = KindExclusivePause
		}
		k := key{d.Shard, d.Worker, d.Inc, d.Epoch, kind}
		count[k]++
		if seen[k] == nil {
			seen[k] = &Violation{Kind: kind, At: d.At, Shard: d.Shard, Msg: msg}
			order = append(order, k)
		}
	}
	var out []Violation
	for _, k := range order {
		v := *seen[k]
		if count[k] > 1 {
			v.Msg += fmt.Sprintf(" (%d stale deliveries in this tenure)", count[k])
		}
		out = append(out, v)
	}
	return out
}

func seqRange(seqs []string) string {
	switch len(seqs) {
	case 0:
		return "no records"
	case 1:
		return "record " + trimSeq(seqs[0])
	}
	return fmt.Sprintf("records %s..%s", trimSeq(seqs[0]), trimSeq(seqs[len(seqs)-1]))
}

// trimCheckpoint returns cp for people, its sequence number trimmed.
func trimCheckpoint(cp lease.ExtendedSequenceNumber) string {
	cp.SequenceNumber = trimSeq(cp.SequenceNumber)
	return cp.String()
}

func trimSeq(s string) string {
	t := strings.TrimLeft(s, "0")
	if t == "" {
		return "0"
	}
	return t
}

// startTime is where the application starts reading for LATEST and AT_TIMESTAMP:
// the time recorded in the coordinator item when there is one, else the first worker's
// start (LATEST) or the configured timestamp (AT_TIMESTAMP).
func startTime(l *Log) time.Duration {
	switch {
	case l.Position == lease.AtTimestamp:
		return l.InitialTimestamp
	case l.RecordedStart != nil:
		return *l.RecordedStart
	}
	return l.FirstStart
}

// requiredFrom is the arrival time from which every record must be delivered, or -1
// for every record.
func requiredFrom(l *Log) time.Duration {
	switch l.Position {
	case lease.AtTimestamp:
		return l.InitialTimestamp
	case lease.Latest:
		if l.RecordedStart != nil {
			return *l.RecordedStart
		}
		// Without a recorded start, the workers may resolve LATEST up to a poll later.
		return l.FirstStart + l.PollInterval
	}
	return -1
}

func trimmedShards(l *Log) map[string]Trim {
	m := make(map[string]Trim, len(l.Trims))
	for _, t := range l.Trims {
		if _, ok := m[t.Shard]; !ok {
			m[t.Shard] = t
		}
	}
	return m
}

func deliveredSet(l *Log) map[[2]string]bool {
	m := make(map[[2]string]bool)
	for _, d := range l.Deliveries {
		for _, s := range d.Seqs {
			m[[2]string{d.Shard, s}] = true
		}
	}
	return m
}

// CheckAtLeastOnce: every record the initial position requires is delivered at least
// once: all of them for TRIM_HORIZON, those that arrived at or after the start time for
// LATEST and AT_TIMESTAMP. Records of shards that aged out (TrimShard) are not required,
// nor those of shards the cap leaves unheld at the end (see holding).
func CheckAtLeastOnce(l *Log) []Violation {
	from := requiredFrom(l)
	trimmed := trimmedShards(l)
	var unread map[string]bool
	if n := len(l.Samples); n > 0 {
		_, unread = holding(l, l.Samples[n-1])
	}
	got := deliveredSet(l)
	missing := map[string][]Produced{}
	var shards []string
	for _, p := range l.Produced {
		if _, ok := trimmed[p.Shard]; ok || unread[p.Shard] || p.Arrival < from || got[[2]string{p.Shard, p.Seq}] {
			continue
		}
		if missing[p.Shard] == nil {
			shards = append(shards, p.Shard)
		}
		missing[p.Shard] = append(missing[p.Shard], p)
	}
	sort.Strings(shards)
	var out []Violation
	for _, s := range shards {
		ps := missing[s]
		out = append(out, Violation{Kind: KindAtLeastOnce, At: ps[0].Arrival, Shard: s,
			Msg: fmt.Sprintf("%d required records never delivered, first %s (arrived t=%s), last %s (t=%s)",
				len(ps), trimSeq(ps[0].Seq), fmtDur(ps[0].Arrival), trimSeq(ps[len(ps)-1].Seq), fmtDur(ps[len(ps)-1].Arrival))})
	}
	return out
}

// CheckCheckpoints: the checkpoint stored in a lease never moves backwards
// (TRIM_HORIZON, LATEST, AT_TIMESTAMP < any sequence number, in numeric order <
// SHARD_END).
func CheckCheckpoints(l *Log) []Violation {
	var out []Violation
	ws := writesByShard(l, OpCreate, OpCheckpoint, OpRelease)
	for _, s := range sortedKeys(ws) {
		var prev lease.ExtendedSequenceNumber
		var prevW Write
		for _, w := range ws[s] {
			if w.Checkpoint.IsZero() {
				continue
			}
			if !prev.IsZero() && cmpCheckpoint(w.Checkpoint, prev) < 0 {
				out = append(out, Violation{Kind: KindCheckpointBack, At: w.At, Shard: s,
					Msg: fmt.Sprintf("%s by %s at counter %d wrote %s after %s (t=%s, %s by %s)",
						w.Op, w.Owner, w.Counter, trimCheckpoint(w.Checkpoint), trimCheckpoint(prev), fmtDur(prevW.At), prevW.Op, prevW.Owner)})
			}
			prev, prevW = w.Checkpoint, w
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// CheckOrder: within one tenure of one process (shard, epoch, worker incarnation),
// successful deliveries have strictly increasing sequence numbers. A failed call is
// retried, so what it processed may come again; it is left out.
func CheckOrder(l *Log) []Violation {
	type key struct {
		shard, worker string
		inc           int
		epoch         int64
	}
	last := map[key]string{}
	reported := map[key]bool{}
	var out []Violation
	for _, d := range sortedDeliveries(l) {
		if d.Failed {
			continue
		}
		k := key{d.Shard, d.Worker, d.Inc, d.Epoch}
		for _, s := range d.Seqs {
			if p, ok := last[k]; ok && cmpSeq(s, p) <= 0 && !reported[k] {
				reported[k] = true
				out = append(out, Violation{Kind: KindOrder, At: d.At, Shard: d.Shard,
					Msg: fmt.Sprintf("%s#%d epoch %d delivered %s after %s", d.Worker, d.Inc, d.Epoch, trimSeq(s), trimSeq(p))})
			}
			last[k] = s
		}
	}
	return out
}

// CheckChildAfterParents: no record of a child shard is delivered before each of its
// parents reached SHARD_END (a parent removed by TrimShard ended when it was trimmed).
func CheckChildAfterParents(l *Log) []Violation {
	ended := map[string]Stamp{}
	for _, w := range l.Writes {
		if w.Checkpoint.SequenceNumber == lease.ShardEnd && (w.Op == OpRelease || w.Op == OpCheckpoint) {
			if e, ok := ended[w.Shard]; !ok || w.Seq < e.Seq {
				ended[w.Shard] = w.Stamp
			}
		}
	}
	for _, t := range l.Trims {
		if e, ok := ended[t.Shard]; !ok || t.Seq < e.Seq {
			ended[t.Shard] = t.Stamp
		}
	}
	reported := map[[2]string]bool{}
	var out []Violation
	for _, d := range sortedDeliveries(l) {
		for _, p := range l.Shards[d.Shard].Parents {
			e, ok := ended[p]
			if ok && e.Seq < d.Seq || reported[[2]string{d.Shard, p}] {
				continue
			}
			reported[[2]string{d.Shard, p}] = true
			when := "never"
			if ok {
				when = "only at t=" + fmtDur(e.At)
			}
			out = append(out, Violation{Kind: KindChildFirst, At: d.At, Shard: d.Shard,
				Msg: fmt.Sprintf("%s#%d epoch %d delivered %s before parent %s ended (%s)", d.Worker, d.Inc, d.Epoch, seqRange(d.Seqs), p, when)})
		}
	}
	return out
}

// CheckInitialPosition: for LATEST and AT_TIMESTAMP, no record that arrived before the
// start time is delivered (for LATEST: no record put before the workers started).
func CheckInitialPosition(l *Log) []Violation {
	if l.Position != lease.Latest && l.Position != lease.AtTimestamp {
		return nil
	}
	start := startTime(l)
	produced := make(map[[2]string]Produced, len(l.Produced))
	for _, p := range l.Produced {
		produced[[2]string{p.Shard, p.Seq}] = p
	}
	type key struct {
		shard, worker string
		inc           int
		epoch         int64
	}
	idx := map[key]int{}
	var out []Violation
	for _, d := range sortedDeliveries(l) {
		var early []string
		for _, s := range d.Seqs {
			p, ok := produced[[2]string{d.Shard, s}]
			if ok && (p.Arrival < start || l.Position == lease.Latest && p.BeforeStart) {
				early = append(early, s)
			}
		}
		if len(early) == 0 {
			continue
		}
		k := key{d.Shard, d.Worker, d.Inc, d.Epoch}
		if i, ok := idx[k]; ok {
			out[i].Msg += fmt.Sprintf("; then %s", seqRange(early))
			continue
		}
		idx[k] = len(out)
		out = append(out, Violation{Kind: KindBeforeStart, At: d.At, Shard: d.Shard,
			Msg: fmt.Sprintf("%s#%d epoch %d delivered %s, which arrived before the start (%s at t=%s)",
				d.Worker, d.Inc, d.Epoch, seqRange(early), l.Position, fmtDur(start))})
	}
	return out
}

// ConvergenceBound is how long after the last fault every open shard must be held: three
// lease durations for failures to be detected and leases moved, plus the lease scan
// interval, the safety net that bounds how long a worker below its target goes without
// reading the lease table (a lease released by a slow planned stop after the taker's
// scan waits for it).
func ConvergenceBound(l *Log) time.Duration {
	return 3*l.LeaseDuration + consumer.DefaultLeaseScanInterval
}

// CheckConvergence: from ConvergenceBound after the last fault, every open shard (up to
// cap x live workers) is in some healthy worker's Status().Leases, and so is every
// closed shard ready to be read (Sample.Ready) unless the healthy workers hold closed
// shards only: at the cap, the shards whose children wait for them come before open
// ones. A shard missing in a single sample is a hand-off in progress; two consecutive
// samples make a violation.
func CheckConvergence(l *Log) []Violation {
	from := l.LastFault + ConvergenceBound(l)
	type streak struct {
		first  Sample
		n      int
		closed bool
	}
	open := map[string]*streak{}
	what := map[bool]string{false: "open shard", true: "closed shard ready to read (its children wait)"}
	var out []Violation
	flush := func(s string, st *streak) {
		if st.n >= 2 {
			out = append(out, Violation{Kind: KindConvergence, At: st.first.At, Shard: s,
				Msg: fmt.Sprintf("%s held by no live worker for %d samples from t=%s (last fault ended t=%s, bound %s)%s",
					what[st.closed], st.n, fmtDur(st.first.At), fmtDur(l.LastFault), ConvergenceBound(l), ownerNote(st.first, s))})
		}
	}
	for _, sm := range l.Samples {
		if sm.At < from {
			continue
		}
		held, excused := holding(l, sm)
		ready := map[string]bool{}
		for _, s := range sm.Ready {
			ready[s] = true
		}
		isOpen := map[string]bool{}
		for _, s := range append(slices.Clip(sm.Open), sm.Ready...) {
			isOpen[s] = true
			if held[s] || excused[s] {
				if st := open[s]; st != nil {
					flush(s, st)
					delete(open, s)
				}
				continue
			}
			if open[s] == nil {
				open[s] = &streak{first: sm, closed: ready[s]}
			}
			open[s].n++
		}
		for s, st := range open {
			if !isOpen[s] {
				flush(s, st)
				delete(open, s)
			}
		}
	}
	for _, s := range sortedKeys(open) {
		flush(s, open[s])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// holding returns the shards healthy workers hold in a sample, and those of the shards
// to read (open and ready ones) that may go unheld: open shards while the workers hold
// the cap, closed ones while the workers hold closed shards only.
func holding(l *Log, sm Sample) (held, excused map[string]bool) {
	held = map[string]bool{}
	live := 0
	for _, w := range sm.Workers {
		if !w.Healthy {
			continue
		}
		live++
		for _, s := range w.Leases {
			held[s] = true
		}
	}
	heldOpen, heldReady := 0, 0
	for _, s := range sm.Open {
		if held[s] {
			heldOpen++
		}
	}
	for _, s := range sm.Ready {
		if held[s] {
			heldReady++
		}
	}
	capped := l.Cap > 0 && heldOpen+heldReady >= l.Cap*live
	excused = map[string]bool{}
	for _, s := range sm.Open {
		excused[s] = capped && !held[s]
	}
	for _, s := range sm.Ready {
		excused[s] = heldOpen == 0 && !held[s]
	}
	return held, excused
}

func ownerNote(sm Sample, shard string) string {
	if o := sm.Owners[shard]; o != "" {
		return "; the table says owner " + o
	}
	return "; the lease is free in the table"
}

// OrphanBound is how long a healthy worker may own a lease in the table without
// holding it.
func OrphanBound(l *Log) time.Duration {
	// Three lease durations, plus one control-loop pass at its deadline (3 x
	// LeaseDuration): a lease owned but not run is resolved by the next completed pass,
	// and a pass whose calls hang lasts until its deadline.
	return 6 * l.LeaseDuration
}

// CheckOrphans: no lease is owned in the table by a healthy worker (running, not
// killed, paused, cut off or stopping) yet absent from its Status().Leases for longer
// than OrphanBound.
func CheckOrphans(l *Log) []Violation {
	type key struct{ shard, worker string }
	type streak struct {
		first    Sample
		last     Sample
		reported bool
	}
	cur := map[key]*streak{}
	var out []Violation
	for _, sm := range l.Samples {
		now := map[key]bool{}
		for _, w := range sm.Workers {
			if !w.Healthy {
				continue
			}
			held := map[string]bool{}
			for _, s := range w.Leases {
				held[s] = true
			}
			for s, o := range sm.Owners {
				if o == w.ID && !held[s] {
					now[key{s, w.ID}] = true
				}
			}
		}
		for k := range cur {
			if !now[k] {
				delete(cur, k)
			}
		}
		for _, k := range sortedMapKeys(now) {
			st := cur[k]
			if st == nil {
				st = &streak{first: sm}
				cur[k] = st
			}
			st.last = sm
			if !st.reported && sm.At-st.first.At > OrphanBound(l) {
				st.reported = true
				out = append(out, Violation{Kind: KindOrphan, At: st.first.At, Shard: k.shard,
					Msg: fmt.Sprintf("owned by healthy worker %s in the table since t=%s but not in its Status().Leases (still at t=%s, bound %s)",
						k.worker, fmtDur(st.first.At), fmtDur(sm.At), OrphanBound(l))})
			}
		}
	}
	return out
}

func sortedMapKeys[K interface{ comparable }](m map[K]bool) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return fmt.Sprint(ks[i]) < fmt.Sprint(ks[j]) })
	return ks
}
