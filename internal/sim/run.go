package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// Options tune a run.
type Options struct {
	// Logger receives the workers' logs; nil discards them.
	Logger *slog.Logger
	// Meter, when set, counts every store request the workers make (see cost.go).
	Meter *Meter
	// SampleEvery is the sampler's period (default one second).
	SampleEvery time.Duration
}

// Sim is one running simulation. Run creates it; it must run inside a
// testing/synctest bubble, where time is virtual.
type Sim struct {
	sc     Scenario
	seed   uint64
	opts   Options
	rec    *recorder
	leases *memstore.Leases
	meta   *memstore.Meta
	stream *memstore.Stream
	shared *recLeases
	t0     time.Time
	start  time.Time
	rng    *rand.Rand // main goroutine only
	// producing is cleared to pause the producer.
	producing atomic.Bool

	mu        sync.Mutex
	faultEnd  time.Time
	lastFault time.Time
	current   map[string]*instance // worker id -> its current process
	all       []*instance          // every instance ever started
	incs      map[string]int
	nextID    int
	shardInfo map[string]ShardInfo
	closedAt  map[string]time.Time
	trimmed   map[string]bool
}

// instance is one start of a worker id: a runner that (re)creates processes until
// its context ends.
type instance struct {
	id     string
	cancel context.CancelFunc
	done   chan struct{}
	// Guarded by Sim.mu.
	p        *proc
	w        *consumer.Worker
	running  bool // Run is executing
	stopping bool // graceful stop requested
	killed   bool
}

// Run simulates a scenario and returns its log. It must be called inside a synctest
// bubble; it returns when every goroutine it started has ended.
func Run(sc Scenario, opts Options) *Log {
	s := newSim(sc, opts)
	stopProducer := make(chan struct{})
	producerDone := make(chan struct{})
	go s.produce(stopProducer, producerDone)

	time.Sleep(time.Until(s.start))
	for range sc.Workers {
		s.startWorker(s.newID())
	}
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go s.sample(stopSampler, samplerDone)

	for _, e := range sc.Events {
		time.Sleep(time.Until(s.start.Add(e.At)))
		s.apply(e)
	}
	time.Sleep(time.Until(s.faultEnd))
	if len(s.candidates()) == 0 {
		s.fault("no worker left: starting one", true)
		s.startWorker(s.newID())
	}
	// A call that started just before the end of the fault phase may still be slow.
	s.extendFault(s.faultEnd.Add(15 * time.Second))
	// The quiet phase: no faults. Stop producing a little before the end so that every
	// record has time to be delivered.
	const drain = 20 * time.Second
	for {
		s.mu.Lock()
		until := s.lastFault.Add(sc.Quiet - drain)
		s.mu.Unlock()
		if !time.Now().Before(until) {
			break
		}
		time.Sleep(time.Until(until))
	}
	close(stopProducer)
	<-producerDone
	time.Sleep(drain)
	return s.finish(stopSampler, samplerDone)
}

// newSim creates the simulation of sc: the stores, the stream and the recorder.
func newSim(sc Scenario, opts Options) *Sim {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	t0 := time.Now()
	s := &Sim{
		sc: sc, seed: sc.Seed, opts: opts,
		rec:       &recorder{t0: t0, log: &Log{Seed: sc.Seed}},
		leases:    memstore.NewLeases(),
		meta:      memstore.NewMeta(),
		stream:    memstore.NewStream(sc.Shards),
		t0:        t0,
		rng:       rand.New(rand.NewPCG(sc.Seed, 0xfa0175)),
		current:   map[string]*instance{},
		incs:      map[string]int{},
		shardInfo: map[string]ShardInfo{},
		closedAt:  map[string]time.Time{},
		trimmed:   map[string]bool{},
	}
	s.stream.Now = time.Now
	s.meta.Now = time.Now
	if sc.ViewLag > 0 {
		var mu sync.Mutex
		lag := rand.New(rand.NewPCG(sc.Seed, 0x1a90))
		s.meta.Stale = func() time.Duration {
			mu.Lock()
			defer mu.Unlock()
			return time.Duration(lag.Int64N(int64(sc.ViewLag) + 1))
		}
	}
	s.shared = &recLeases{inner: s.leases, r: s.rec}
	s.noteShards()
	s.start = t0.Add(sc.PreStart)
	s.faultEnd = s.start.Add(sc.FaultPhase)
	s.lastFault = s.faultEnd
	s.producing.Store(true)
	return s
}

// finish stops the sampler and every worker, waits for every goroutine of every process
// and returns the log.
func (s *Sim) finish(stopSampler, samplerDone chan struct{}) *Log {
	sc := s.sc
	t0 := s.t0
	end := time.Now()
	close(stopSampler)
	<-samplerDone

	// Stop every worker gracefully and wait for every goroutine of every process.
	s.mu.Lock()
	for _, in := range s.current {
		in.stopping = true
		in.cancel()
	}
	all := slices.Clone(s.all)
	s.mu.Unlock()
	for _, in := range all {
		<-in.done
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.rec.log
	l.LeaseDuration = sc.LeaseDuration
	l.PollInterval = consumer.DefaultPollInterval
	l.Cap = lease.DefaultCap
	if sc.MaxLeasesCap > 0 {
		l.Cap = sc.MaxLeasesCap
	}
	l.Position = sc.Position
	l.InitialTimestamp = sc.InitialTimestamp
	l.Hangs = sc.Hangs
	l.FirstStart = s.start.Sub(t0)
	l.RecordedStart = recordedStart(s.meta.Snapshot().Coordinator, t0)
	l.LastFault = s.lastFault.Sub(t0)
	l.End = end.Sub(t0)
	l.Shards = s.shardInfo
	return l
}

// recordedStart reads the application's start time from the coordinator record: the
// library records LATEST and AT_TIMESTAMP starts as AT_TIMESTAMP with that time.
func recordedStart(rec *lease.CoordinatorRecord, t0 time.Time) *time.Duration {
	if rec == nil || rec.InitialPosition != lease.AtTimestamp || rec.InitialTimestamp.IsZero() {
		return nil
	}
	d := rec.InitialTimestamp.Sub(t0)
	return &d
}

// faulty reports whether calls are subject to faults now.
func (s *Sim) faulty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.faultEnd)
}

// fault records a scenario event; ends says it also ends a fault now.
func (s *Sim) fault(what string, ends bool) {
	s.rec.add(func(st Stamp, l *Log) { l.Faults = append(l.Faults, Fault{Stamp: st, What: what}) })
	if ends {
		s.extendFault(time.Now())
	}
}

func (s *Sim) extendFault(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.After(s.lastFault) {
		s.lastFault = t
	}
}

func (s *Sim) newID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("w%d", s.nextID)
	s.nextID++
	return id
}

// produce puts a record every ProduceEvery until stop.
func (s *Sim) produce(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	r := rand.New(rand.NewPCG(s.seed, 0x9a7a))
	// Off the whole second, so that no record shares an instant with the start.
	next := s.t0.Add(37 * time.Millisecond)
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
		if !s.producing.Load() {
			next = next.Add(s.sc.ProduceEvery)
			continue
		}
		key := fmt.Sprintf("k%d", r.Uint32())
		shard, seq := s.stream.Put(key, []byte(key))
		now := time.Now()
		s.rec.add(func(st Stamp, l *Log) {
			l.Produced = append(l.Produced, Produced{Stamp: st, Shard: shard, Seq: seq, Arrival: now.Sub(s.t0), BeforeStart: now.Before(s.start)})
		})
		next = next.Add(s.sc.ProduceEvery)
	}
}

// sample snapshots the lease table and the workers once a second until stop.
func (s *Sim) sample(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := s.opts.SampleEvery
	if every <= 0 {
		every = time.Second
	}
	for {
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
		owners := map[string]string{}
		table := s.leases.Snapshot()
		for _, l := range table.Leases {
			if l.Owner != "" {
				owners[l.ShardID] = l.Owner
			}
		}
		var open, ready []string
		closed := map[string]bool{}
		for _, sh := range s.stream.Shards() {
			if !sh.Closed {
				open = append(open, sh.ID)
			} else {
				closed[sh.ID] = true
			}
		}
		idx := table.Index()
		for _, l := range table.Leases {
			if closed[l.ShardID] && !l.Finished() && idx.ParentsFinished(l) {
				ready = append(ready, l.ShardID)
			}
		}
		var ws []WorkerSample
		s.mu.Lock()
		for _, id := range sortedKeys(s.current) {
			in := s.current[id]
			if !in.running || in.w == nil {
				continue
			}
			paused, cut, killed := in.p.state()
			ws = append(ws, WorkerSample{ID: id, Inc: in.p.inc, Healthy: !paused && !cut && !killed && !in.stopping,
				Leases: in.w.Status().Leases})
		}
		s.mu.Unlock()
		s.rec.add(func(st Stamp, l *Log) {
			l.Samples = append(l.Samples, Sample{Stamp: st, Owners: owners, Open: open, Ready: ready, Workers: ws})
		})
	}
}

// startWorker starts a worker id as a new instance.
func (s *Sim) startWorker(id string) {
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{id: id, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.current[id] = in
	s.all = append(s.all, in)
	s.mu.Unlock()
	s.fault("start "+id, false)
	go s.runInstance(ctx, in)
}

// runInstance runs processes for an instance: a process whose Run fails at start is
// replaced after a back-off, as an orchestrator would.
func (s *Sim) runInstance(ctx context.Context, in *instance) {
	defer close(in.done)
	for {
		s.mu.Lock()
		s.incs[in.id]++
		p := newProc(s, in.id, s.incs[in.id])
		s.mu.Unlock()
		cfg := consumer.Config{
			AppName:            "simapp",
			StreamName:         "sim",
			WorkerID:           in.id,
			LeaseDuration:      s.sc.LeaseDuration,
			InitialPosition:    s.sc.Position,
			CleanupInterval:    s.sc.CleanupInterval,
			FinishedLeaseDelay: s.sc.FinishedLeaseDelay,
			DeadWorkerDelay:    s.sc.DeadWorkerDelay,
			CheckpointInterval: s.sc.CheckpointInterval,
			Logger:             s.opts.Logger.With("inc", p.inc),
			Clock:              clk{p},
		}
		if s.sc.Position == lease.AtTimestamp {
			cfg.InitialTimestamp = s.t0.Add(s.sc.InitialTimestamp)
		}
		if s.sc.MaxLeasesCap > 0 {
			cfg.MaxLeasesCap = s.sc.MaxLeasesCap
		}
		var leases consumer.LeaseStore = s.shared
		var meta consumer.MetaStore = s.meta
		if m := s.opts.Meter; m != nil {
			leases = meterLeases{m: m, table: s.leases, inner: leases}
			meta = meterMeta{m: m, inner: meta}
		}
		w, err := consumer.New(cfg, faultLeases{p, leases}, faultMeta{p, meta}, faultStream{p, s.stream},
			func(shard string) consumer.RecordProcessor { return &processor{p: p, shard: shard} })
		if err != nil {
			panic(fmt.Sprintf("sim: consumer.New: %v", err))
		}
		s.mu.Lock()
		in.p, in.w, in.running = p, w, true
		if in.killed {
			p.doKill()
		}
		s.mu.Unlock()
		err = w.Run(ctx)
		s.mu.Lock()
		in.running = false
		s.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		s.fault(fmt.Sprintf("%s#%d: Run failed at start (%v); the orchestrator restarts it in 2s", in.id, p.inc, err), false)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// candidates returns the running instances that are not stopping, by id.
func (s *Sim) candidates() []*instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*instance
	for _, id := range sortedKeys(s.current) {
		if in := s.current[id]; !in.stopping && !in.killed {
			out = append(out, in)
		}
	}
	return out
}

func pick[T any](xs []T, n uint64) T { return xs[n%uint64(len(xs))] }

// proc returns the instance's current process (nil before its first).
func (s *Sim) proc(in *instance) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return in.p
}

// apply performs one scheduled fault.
func (s *Sim) apply(e Event) {
	cands := s.candidates()
	switch e.Kind {
	case EvPause, EvCut:
		var ok []*instance
		for _, in := range cands {
			if p := s.proc(in); p != nil {
				if paused, cut, _ := p.state(); !paused && !cut {
					ok = append(ok, in)
				}
			}
		}
		if len(ok) == 0 {
			return
		}
		in := pick(ok, e.Pick)
		p := s.proc(in)
		if e.Kind == EvPause {
			s.fault(fmt.Sprintf("pause %s#%d for %s", in.id, p.inc, e.Dur), false)
			p.pauseFor(e.Dur)
		} else {
			s.fault(fmt.Sprintf("cut %s#%d off for %s", in.id, p.inc, e.Dur), false)
			p.cutFor(e.Dur)
		}
		s.extendFault(time.Now().Add(e.Dur))
	case EvKill, EvRestart:
		if len(cands) < 2 {
			return
		}
		in := pick(cands, e.Pick)
		s.kill(in)
		if e.Kind == EvRestart {
			s.extendFault(time.Now().Add(e.Dur))
			id := in.id
			time.AfterFunc(e.Dur, func() {
				s.mu.Lock()
				_, taken := s.current[id]
				s.mu.Unlock()
				if !taken {
					s.startWorker(id)
				}
			})
		}
	case EvStop, EvScaleDown:
		if len(cands) < 2 {
			return
		}
		in := pick(cands, e.Pick)
		s.mu.Lock()
		in.stopping = true
		s.mu.Unlock()
		in.cancel()
		if e.Kind == EvScaleDown {
			s.fault("scale down: stop "+in.id, true)
			go func() {
				<-in.done
				s.fault(in.id+" stopped", true)
				s.mu.Lock()
				if s.current[in.id] == in {
					delete(s.current, in.id)
				}
				s.mu.Unlock()
			}()
			return
		}
		s.fault(fmt.Sprintf("graceful restart of %s: stop, start again %s after it stopped", in.id, e.Dur), true)
		go func() {
			<-in.done
			s.fault(in.id+" stopped", true)
			time.Sleep(e.Dur)
			s.fault("restart "+in.id, true)
			s.startWorker(in.id)
		}()
	case EvScaleUp:
		if len(cands) >= 8 {
			return
		}
		id := s.newID()
		s.fault("scale up: "+id, true)
		s.startWorker(id)
	case EvReshard:
		s.reshard(e.Pick)
	case EvTrim:
		s.trim(e.Pick)
	}
}

func (s *Sim) kill(in *instance) {
	s.mu.Lock()
	in.killed = true
	p := in.p
	delete(s.current, in.id)
	s.mu.Unlock()
	if p != nil {
		p.doKill()
		s.fault(fmt.Sprintf("kill -9 %s#%d", in.id, p.inc), true)
	}
	in.cancel()
}

// noteShards records the stream's shards (and when each closed).
func (s *Sim) noteShards() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range s.stream.Shards() {
		if _, ok := s.shardInfo[sh.ID]; !ok {
			s.shardInfo[sh.ID] = ShardInfo{ID: sh.ID, Parents: sh.Parents()}
		}
		if _, ok := s.closedAt[sh.ID]; sh.Closed && !ok {
			s.closedAt[sh.ID] = now
		}
	}
}

// openByRange returns the open shards in hash key order.
func (s *Sim) openByRange() []string {
	var open []string
	start := map[string]*big.Int{}
	for _, sh := range s.stream.Shards() {
		if !sh.Closed {
			open = append(open, sh.ID)
			st, _, _ := s.stream.HashRange(sh.ID)
			start[sh.ID] = st
		}
	}
	sort.Slice(open, func(i, j int) bool { return start[open[i]].Cmp(start[open[j]]) < 0 })
	return open
}

func (s *Sim) reshard(n uint64) {
	if len(s.leases.Snapshot().Leases) == 0 {
		// Before the first leases exist a LATEST bootstrap would skip closed shards.
		return
	}
	open := s.openByRange()
	limit := min(s.sc.Shards*2, s.sc.MaxOpen)
	var err error
	var what string
	switch x := n % 10; {
	case x < 4 && len(open) < limit:
		id := pick(open, n/10)
		what, err = "split "+id, s.stream.SplitShard(id)
	case x < 7 && len(open) > 1:
		i := int((n / 10) % uint64(len(open)-1))
		what, err = fmt.Sprintf("merge %s+%s", open[i], open[i+1]), s.stream.MergeShards(open[i], open[i+1])
	case 2*len(open) <= limit:
		what, err = fmt.Sprintf("update shard count %d->%d", len(open), 2*len(open)), s.stream.UpdateShardCount(2*len(open))
	case len(open)%2 == 0:
		what, err = fmt.Sprintf("update shard count %d->%d", len(open), len(open)/2), s.stream.UpdateShardCount(len(open)/2)
	default:
		return
	}
	if err != nil {
		panic(fmt.Sprintf("sim: %s: %v", what, err))
	}
	s.noteShards()
	s.fault("reshard: "+what, true)
}

// trim removes a shard that closed at least a minute ago, as retention would.
func (s *Sim) trim(n uint64) {
	s.mu.Lock()
	var old []string
	for id, at := range s.closedAt {
		if !s.trimmed[id] && time.Since(at) >= time.Minute {
			old = append(old, id)
		}
	}
	s.mu.Unlock()
	if len(old) == 0 {
		return
	}
	sort.Strings(old)
	id := pick(old, n)
	if err := s.stream.TrimShard(id); err != nil {
		panic(fmt.Sprintf("sim: trim %s: %v", id, err))
	}
	s.mu.Lock()
	s.trimmed[id] = true
	s.mu.Unlock()
	s.rec.add(func(st Stamp, l *Log) { l.Trims = append(l.Trims, Trim{Stamp: st, Shard: id}) })
	s.fault("trim "+id, true)
}
