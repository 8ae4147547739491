package sim

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Scale runs: N workers over M shards without random faults, through a fixed script
// that measures timings and DynamoDB cost in virtual time (see RunScale). The invariant
// checkers run on the log of the whole run.

// ScaleConfig sizes a scale run.
type ScaleConfig struct {
	Seed    uint64
	Shards  int
	Workers int
	// CostWindow is the steady-state window over which requests are counted (default 2m).
	CostWindow time.Duration
	// ProduceEvery is the producer's period (default 50ms: 20 records a second over
	// the whole stream). The producer is paused during the cost window, so that the
	// window measures the lease manager alone (no checkpoints).
	ProduceEvery time.Duration
	// Rolling bounds how many workers the rolling restart restarts (0: all of them).
	Rolling int
	// SkipReshard skips phase (f).
	SkipReshard bool
	// CostOnly runs the cold start and the steady state only (phases a and b).
	CostOnly bool
	// FlowWindow, when set, adds a cost window of that length with records flowing (after
	// the steady state), so that checkpoint writes are counted; CheckpointInterval is the
	// workers' checkpoint coalescing (0: every checkpoint is written).
	FlowWindow         time.Duration
	CheckpointInterval time.Duration
	// Logger receives the workers' logs (nil: none).
	Logger *slog.Logger
	// Progress, when set, is told when each phase starts (virtual time since start).
	Progress func(string)
}

// ScaleResult is what a scale run measured. Times are virtual.
type ScaleResult struct {
	Shards, Workers int

	// (a) Cold start: until every shard is owned and processing, and the failed
	// conditional writes (and creates that found the lease) meanwhile.
	ColdStart     time.Duration
	ColdBalanced  time.Duration // until no worker holds more than its share
	ColdConflicts int64
	ColdUsage     Usage

	// (b) Steady state.
	Steady Rate
	// Flowing is the cost with records flowing (FlowWindow), at CheckpointInterval.
	Flowing            Rate
	CheckpointInterval time.Duration
	RecordsPerSecond   float64

	// (c) kill -9 of 10% of the workers: per killed worker, the time until the last of
	// its shards was taken by another worker.
	Killed         int
	KilledShards   int
	FailoverMax    time.Duration
	FailoverMedian time.Duration

	// (d) Rolling restart: graceful stop, start, wait until settled, one worker at a time.
	Restarted        int
	RollingTotal     time.Duration
	RollingMaxSettle time.Duration
	RollingUnsettled int // restarts after which ownership did not settle within the bound
	RollingDups      int // records delivered more than once during the phase

	// (e) N -> 1.1N workers: until balanced.
	Added       int
	AddedHold   int // leases the new workers hold once balanced
	ScaleUp     time.Duration
	ScaleUpDups int

	// (f) Reshard M -> 2M by splits in steps: from the last split step until every open
	// shard is processing (the steps are 10s apart).
	ReshardSteps int
	Reshard      time.Duration
	ReshardDups  int

	Virtual    time.Duration // virtual time of the whole run
	Violations []Violation
}

func (c *ScaleConfig) defaults() {
	if c.CostWindow <= 0 {
		c.CostWindow = 2 * time.Minute
	}
	if c.ProduceEvery <= 0 {
		c.ProduceEvery = 50 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
}

// ScaleLeaseDuration is the workers' lease duration in scale runs (every other setting is
// the library's default: heartbeat and poll intervals, cleanup interval, checkpoint
// interval 0). `make cost-check` runs the real workers with the same.
const ScaleLeaseDuration = 10 * time.Second

// scaleScenario is the scenario of a scale run: no random faults.
func scaleScenario(c ScaleConfig) Scenario {
	workers := c.Workers - c.Workers/10 // the fewest live workers during the run
	capNeeded := (2*c.Shards + workers - 1) / workers
	sc := Scenario{
		Seed:          c.Seed,
		Workers:       c.Workers,
		Shards:        c.Shards,
		LeaseDuration: ScaleLeaseDuration,
		Position:      lease.TrimHorizon,
		PreStart:      5 * time.Second,
		ProduceEvery:  c.ProduceEvery,
		MaxOpen:       2 * c.Shards,

		CheckpointInterval: c.CheckpointInterval,
	}
	if capNeeded > lease.DefaultCap {
		sc.MaxLeasesCap = capNeeded
	}
	return sc
}

// scaleRun is the state of one scale run.
type scaleRun struct {
	*Sim
	cfg   ScaleConfig
	meter *Meter
	rng   *rand.Rand
	step  time.Duration
}

// RunScale runs the scale script. It must be called inside a synctest bubble.
func RunScale(c ScaleConfig) ScaleResult {
	c.defaults()
	meter := NewMeter()
	sampleEvery := time.Second
	if c.Shards > 1000 {
		sampleEvery = 5 * time.Second
	}
	s := newSim(scaleScenario(c), Options{Logger: c.Logger, Meter: meter, SampleEvery: sampleEvery})
	// No random faults: the fault phase ends when the workers start.
	s.faultEnd = s.start
	s.lastFault = s.start
	r := &scaleRun{Sim: s, cfg: c, meter: meter, rng: rand.New(rand.NewPCG(c.Seed, 0x5ca1e)), step: 250 * time.Millisecond}
	res := ScaleResult{Shards: c.Shards, Workers: c.Workers}
	phase := func(name string) {
		c.Progress(fmt.Sprintf("%s (virtual t=%s)", name, time.Since(s.t0).Round(time.Second)))
	}

	stopProducer := make(chan struct{})
	producerDone := make(chan struct{})
	go s.produce(stopProducer, producerDone)
	time.Sleep(time.Until(s.start))

	// (a) Cold start.
	phase("cold start")
	begin := time.Now()
	for range c.Workers {
		s.startWorker(s.newID())
	}
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go s.sample(stopSampler, samplerDone)
	r.waitFor(r.allProcessing, 10*time.Minute)
	res.ColdStart = r.lastFirstTake(begin)
	r.waitFor(r.balanced, 5*time.Minute)
	res.ColdBalanced = time.Since(begin)
	res.ColdUsage = meter.Snapshot()
	res.ColdConflicts = res.ColdUsage.Total().Conflicts
	s.extendFault(time.Now())

	// (b) Steady state, without records: the lease manager's own cost.
	phase("steady state")
	s.producing.Store(false)
	time.Sleep(30 * time.Second)
	u0 := meter.Snapshot()
	time.Sleep(c.CostWindow)
	res.Steady = RateOver(meter.Snapshot().Sub(u0), c.CostWindow)
	s.producing.Store(true)
	if c.FlowWindow > 0 {
		phase("records flowing")
		res.CheckpointInterval, res.RecordsPerSecond = c.CheckpointInterval, float64(time.Second)/float64(c.ProduceEvery)
		time.Sleep(30 * time.Second)
		u1 := meter.Snapshot()
		time.Sleep(c.FlowWindow)
		res.Flowing = RateOver(meter.Snapshot().Sub(u1), c.FlowWindow)
	}
	var roll, up, reshard [2]time.Time
	if !c.CostOnly {
		roll, up, reshard = r.disrupt(&res, phase)
	}

	// Drain: no new records, every record delivered, then the checks.
	phase("drain")
	time.Sleep(3 * s.sc.LeaseDuration)
	close(stopProducer)
	<-producerDone
	time.Sleep(30 * time.Second)
	l := s.finish(stopSampler, samplerDone)
	res.Virtual = l.End
	for _, w := range []struct {
		span [2]time.Time
		dups *int
	}{{roll, &res.RollingDups}, {up, &res.ScaleUpDups}, {reshard, &res.ReshardDups}} {
		if !w.span[0].IsZero() {
			*w.dups = duplicatesIn(l, w.span[0].Sub(s.t0), w.span[1].Sub(s.t0))
		}
	}
	res.Violations = CheckAll(l)
	return res
}

// disrupt runs phases (c) to (f) and returns the spans of (d), (e) and (f).
func (r *scaleRun) disrupt(res *ScaleResult, phase func(string)) (roll, up, reshard [2]time.Time) {
	s, c := r.Sim, r.cfg

	// (c) kill -9 of 10% of the workers, then the orchestrator starts them again.
	phase("kill -9")
	cands := s.candidates()
	res.Killed = max(1, len(cands)/10)
	victims := map[string][]string{}
	var killed []*instance
	for _, i := range r.rng.Perm(len(cands))[:res.Killed] {
		killed = append(killed, cands[i])
	}
	owned := r.owners()
	for _, in := range killed {
		for shard, o := range owned {
			if o == in.id {
				victims[in.id] = append(victims[in.id], shard)
			}
		}
		res.KilledShards += len(victims[in.id])
	}
	killAt := time.Now()
	for _, in := range killed {
		s.kill(in)
	}
	r.waitFor(func() bool { return r.takenElsewhere(victims, killAt) != nil }, 5*time.Minute)
	var per []time.Duration
	for _, d := range r.takenElsewhere(victims, killAt) {
		per = append(per, d)
	}
	if len(per) > 0 {
		slices.Sort(per)
		res.FailoverMax, res.FailoverMedian = per[len(per)-1], per[len(per)/2]
	}
	r.waitFor(r.allProcessing, 5*time.Minute)
	for _, in := range killed {
		s.startWorker(in.id)
	}
	r.waitFor(r.balanced, 5*time.Minute)
	s.extendFault(time.Now())

	// (d) Rolling restart, one worker at a time.
	phase("rolling restart")
	ids := sortedKeys(s.current)
	if c.Rolling > 0 && c.Rolling < len(ids) {
		ids = ids[:c.Rolling]
	}
	rollBegin := time.Now()
	for _, id := range ids {
		s.mu.Lock()
		in := s.current[id]
		in.stopping = true
		s.mu.Unlock()
		in.cancel()
		<-in.done
		s.startWorker(id)
		t := time.Now()
		if !r.waitFor(r.balanced, 2*time.Minute) {
			res.RollingUnsettled++
		}
		res.RollingMaxSettle = max(res.RollingMaxSettle, time.Since(t))
		res.Restarted++
	}
	rollEnd := time.Now()
	res.RollingTotal = rollEnd.Sub(rollBegin)
	s.extendFault(time.Now())

	// (e) N -> 1.1N.
	phase("scale up")
	upBegin := time.Now()
	res.Added = max(1, c.Workers/10)
	var added []string
	for range res.Added {
		id := s.newID()
		added = append(added, id)
		s.startWorker(id)
	}
	r.waitFor(r.balanced, 5*time.Minute)
	upEnd := time.Now()
	_, by, _ := r.processing()
	for _, o := range by {
		if slices.Contains(added, o) {
			res.AddedHold++
		}
	}
	res.ScaleUp = upEnd.Sub(upBegin)
	s.extendFault(time.Now())

	// (f) Reshard M -> 2M: every open shard split, in 4 steps 10s apart.
	var reshardBegin, reshardEnd time.Time
	if !c.SkipReshard {
		phase("reshard")
		time.Sleep(10 * time.Second)
		reshardBegin = time.Now()
		open := s.openByRange()
		const steps = 4
		for i := range steps {
			part := open[i*len(open)/steps : (i+1)*len(open)/steps]
			for _, id := range part {
				if err := s.stream.SplitShard(id); err != nil {
					panic(fmt.Sprintf("sim: split %s: %v", id, err))
				}
			}
			s.noteShards()
			s.fault(fmt.Sprintf("reshard step %d: split %d shards", i+1, len(part)), true)
			res.ReshardSteps++
			if i < steps-1 {
				time.Sleep(10 * time.Second)
			}
		}
		lastStep := time.Since(reshardBegin)
		r.waitFor(r.allProcessing, 10*time.Minute)
		res.Reshard = max(0, r.lastFirstTake(reshardBegin)-lastStep)
		r.waitFor(r.balanced, 5*time.Minute)
		reshardEnd = time.Now()
		s.extendFault(time.Now())
	}

	roll = [2]time.Time{rollBegin, rollEnd}
	up = [2]time.Time{upBegin, upEnd}
	if !reshardBegin.IsZero() {
		reshard = [2]time.Time{reshardBegin, reshardEnd}
	}
	return roll, up, reshard
}

// waitFor polls cond every step until it holds or timeout passes.
func (r *scaleRun) waitFor(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(r.step)
	}
	return true
}

// owners returns the lease table's owner of every owned lease.
func (r *scaleRun) owners() map[string]string {
	out := map[string]string{}
	for _, l := range r.leases.Snapshot().Leases {
		if l.Owner != "" && !l.Finished() {
			out[l.ShardID] = l.Owner
		}
	}
	return out
}

// held returns, for every running healthy worker, the shards it processes.
func (r *scaleRun) held() map[string][]string {
	out := map[string][]string{}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, in := range r.current {
		if in.running && in.w != nil && !in.stopping && !in.killed {
			out[id] = in.w.Status().Leases
		}
	}
	return out
}

// processing returns the open shards, and the running worker processing each open
// shard that the lease table says it owns.
func (r *scaleRun) processing() (open []string, by map[string]string, held map[string][]string) {
	owners := r.owners()
	held = r.held()
	by = map[string]string{}
	for id, shards := range held {
		for _, sh := range shards {
			if owners[sh] == id {
				by[sh] = id
			}
		}
	}
	for _, sh := range r.stream.Shards() {
		if !sh.Closed {
			open = append(open, sh.ID)
		}
	}
	return open, by, held
}

func (r *scaleRun) allProcessing() bool {
	open, by, _ := r.processing()
	for _, sh := range open {
		if by[sh] == "" {
			return false
		}
	}
	return true
}

// balanced: every open shard is processing and no worker holds more than its share.
func (r *scaleRun) balanced() bool {
	open, by, held := r.processing()
	for _, sh := range open {
		if by[sh] == "" {
			return false
		}
	}
	if len(held) == 0 || len(held) < len(r.candidates()) {
		return false // a worker has not started yet
	}
	share := (len(open) + len(held) - 1) / len(held)
	for _, shards := range held {
		n := 0
		for _, sh := range shards {
			if by[sh] != "" {
				n++
			}
		}
		if n > share {
			return false
		}
	}
	return true
}

// lastFirstTake returns, over the shards open now, the latest first take since t: how
// long after t the last of them was first owned.
func (r *scaleRun) lastFirstTake(t time.Time) time.Duration {
	since := t.Sub(r.t0)
	first := map[string]time.Duration{}
	r.rec.mu.Lock()
	for _, w := range r.rec.log.Writes {
		if w.Op == OpTake && w.At >= since {
			if _, ok := first[w.Shard]; !ok {
				first[w.Shard] = w.At
			}
		}
	}
	r.rec.mu.Unlock()
	var last time.Duration
	for _, sh := range r.stream.Shards() {
		if !sh.Closed {
			last = max(last, first[sh.ID]-since)
		}
	}
	return last
}

// takenElsewhere returns, per killed worker, how long after kill the last of its shards
// was taken by another worker; nil while some shard is not taken yet.
func (r *scaleRun) takenElsewhere(victims map[string][]string, kill time.Time) map[string]time.Duration {
	since := kill.Sub(r.t0)
	taken := map[string]time.Duration{}
	r.rec.mu.Lock()
	for _, w := range r.rec.log.Writes {
		if w.At >= since && (w.Op == OpTake || w.Op == OpDelete) {
			if _, ok := taken[w.Shard]; !ok {
				taken[w.Shard] = w.At - since
			}
		}
	}
	r.rec.mu.Unlock()
	closed := map[string]bool{}
	for _, sh := range r.stream.Shards() {
		closed[sh.ID] = sh.Closed
	}
	out := map[string]time.Duration{}
	for id, shards := range victims {
		var last time.Duration
		for _, sh := range shards {
			d, ok := taken[sh]
			if !ok {
				return nil
			}
			last = max(last, d)
		}
		out[id] = last
	}
	return out
}

// duplicatesIn counts the records delivered successfully more than once, whose repeat
// delivery happened in [from, to].
func duplicatesIn(l *Log, from, to time.Duration) int {
	seen := map[[2]string]bool{}
	n := 0
	for _, d := range sortedDeliveries(l) {
		if d.Failed {
			continue
		}
		for _, q := range d.Seqs {
			k := [2]string{d.Shard, q}
			if seen[k] && d.At >= from && d.At <= to {
				n++
			}
			seen[k] = true
		}
	}
	return n
}

// ViolationSummary counts violations by kind.
func ViolationSummary(vs []Violation) string {
	if len(vs) == 0 {
		return "none"
	}
	by := map[string]int{}
	for _, v := range vs {
		by[v.Kind]++
	}
	var parts []string
	for _, k := range sortedKeys(by) {
		parts = append(parts, fmt.Sprintf("%s %d", k, by[k]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// ScaleReport is the markdown report of scale runs: a timing table and a cost table
// (ours and the KCL-style baseline per size). base may be shorter than runs (nil
// entries are skipped).
func ScaleReport(runs []ScaleResult, base []*BaselineResult) string {
	var b strings.Builder
	sec := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	b.WriteString("### Timings (virtual time; lease duration 10 s)\n\n")
	b.WriteString("| shards x workers | cold start: all processing (balanced) | failed conditional writes at start | kill -9 of 10%: shards elsewhere, max (median per worker) | rolling restart: total, slowest settle, duplicates | N -> 1.1N: balanced, leases the new workers took, duplicates | reshard M -> 2M: children processing after the last step, duplicates | invariant violations | virtual time |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		roll := fmt.Sprintf("%d restarts: %s, %s, %d dups", r.Restarted, sec(r.RollingTotal), sec(r.RollingMaxSettle), r.RollingDups)
		if r.RollingUnsettled > 0 {
			roll += fmt.Sprintf(" (%d did not settle in 2 min)", r.RollingUnsettled)
		}
		reshard := "skipped"
		if r.ReshardSteps > 0 {
			reshard = fmt.Sprintf("%d -> %d in %d steps: %s, %d dups", r.Shards, 2*r.Shards, r.ReshardSteps, sec(r.Reshard), r.ReshardDups)
		}
		fmt.Fprintf(&b, "| %d x %d | %s (%s) | %d | %d workers, %d shards: %s (%s) | %s | +%d: %s, %d leases, %d dups | %s | %s | %s |\n",
			r.Shards, r.Workers, sec(r.ColdStart), sec(r.ColdBalanced), r.ColdConflicts,
			r.Killed, r.KilledShards, sec(r.FailoverMax), sec(r.FailoverMedian), roll,
			r.Added, sec(r.ScaleUp), r.AddedHold, r.ScaleUpDups, reshard, ViolationSummary(r.Violations), r.Virtual.Round(time.Second))
	}
	if len(base) > 0 {
		b.WriteString("\n### KCL-style baseline timings (virtual time)\n\n")
		b.WriteString("| shards x workers | cold start: all leases owned | failed conditional writes at start | kill -9 of 10%: leases elsewhere, max (median per worker) |\n|---|---|---|---|\n")
		for _, x := range base {
			if x == nil {
				continue
			}
			fmt.Fprintf(&b, "| %d x %d | %s | %d | %d workers, %d leases: %s (%s) |\n", x.Shards, x.Workers, sec(x.ColdStart), x.ColdConflicts,
				x.Killed, x.KilledShards, sec(x.FailoverMax), sec(x.FailoverMedian))
		}
	}
	flowingReport(&b, runs, base)
	b.WriteString("\n### DynamoDB at steady state (on-demand: $" + fmt.Sprint(PricePerMillionWRU) + " per million write units, $" + fmt.Sprint(PricePerMillionRRU) + " per million read units, x 43,200 min a month)\n\n")
	b.WriteString("| shards x workers | consumer | requests/min (by operation) | RCU/min | WCU/min | $/month | ratio baseline / ours |\n|---|---|---|---|---|---|---|\n")
	for i, r := range runs {
		s := r.Steady
		fmt.Fprintf(&b, "| %d x %d | kds-lease-manager | %.0f (%s) | %.1f | %.1f | $%.2f | |\n", r.Shards, r.Workers, s.Requests, s.OpsString(), s.ReadUnits, s.WriteUnits, s.Monthly)
		if i < len(base) && base[i] != nil {
			x := base[i].Steady
			ratio := "n/a"
			if s.Monthly > 0 {
				ratio = fmt.Sprintf("**%.1fx**", x.Monthly/s.Monthly)
			}
			fmt.Fprintf(&b, "| %d x %d | KCL-style baseline | %.0f (%s) | %.1f | %.1f | $%.2f | %s |\n", r.Shards, r.Workers, x.Requests, x.OpsString(), x.ReadUnits, x.WriteUnits, x.Monthly, ratio)
		}
	}
	return b.String()
}

// flowingReport writes the cost with records flowing, where runs measured it. The
// KCL-style baseline processes no records: at the same checkpoint policy a KCL application
// writes the same checkpoints (one UpdateItem each), so its figure is its steady state plus
// the checkpoint writes of our run.
func flowingReport(b *strings.Builder, runs []ScaleResult, base []*BaselineResult) {
	header := false
	for i, r := range runs {
		if r.Flowing.Window == 0 {
			continue
		}
		if !header {
			header = true
			b.WriteString("\n### DynamoDB with records flowing (checkpoints counted)\n\n")
			b.WriteString("| shards x workers | records/s | checkpoint interval | consumer | requests/min (by operation) | RCU/min | WCU/min | $/month | ratio baseline / ours |\n|---|---|---|---|---|---|---|---|---|\n")
		}
		f := r.Flowing
		fmt.Fprintf(b, "| %d x %d | %.0f | %s | kds-lease-manager | %.0f (%s) | %.1f | %.1f | $%.2f | |\n", r.Shards, r.Workers, r.RecordsPerSecond,
			r.CheckpointInterval, f.Requests, f.OpsString(), f.ReadUnits, f.WriteUnits, f.Monthly)
		if i < len(base) && base[i] != nil {
			x := base[i].Steady
			perMin := float64(time.Minute) / float64(f.Window)
			ck := f.ByOp[opCheckpoint]
			wru := x.WriteUnits + float64(ck.WriteUnits)*perMin
			monthly := Monthly(x.ReadUnits, wru)
			fmt.Fprintf(b, "| %d x %d | %.0f | same | KCL-style baseline + the same checkpoints | %.0f | %.1f | %.1f | $%.2f | **%.1fx** |\n", r.Shards, r.Workers,
				r.RecordsPerSecond, x.Requests+float64(ck.Requests)*perMin, x.ReadUnits, wru, monthly, monthly/f.Monthly)
		}
	}
}
