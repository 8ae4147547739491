package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// A KCL-style baseline: a simple model of the KCL's lease manager (KCL 1.x/2.x defaults,
// failover time 10s), run in the same kind of bubble against the same in-memory lease
// table, with the same request accounting. It generates the DynamoDB traffic and the
// ownership of a KCL application, for cost and timing comparison; it processes no
// records and has no metadata table:
//
//   - each worker renews each lease it holds with a conditional UpdateItem (owner and
//     counter, incrementing the counter) every LeaseDuration/3 (3.3s); a failed renewal
//     drops the lease;
//   - each worker's lease taker runs every 10s; it scans the whole lease table
//     (strongly consistent) when its last scan is 20s old or more, and judges a lease
//     expired when it has no owner or its counter did not change for LeaseDuration since
//     the scan that first saw it;
//   - per pass it takes at most one lease: a free or expired one, or, when there is none
//     and it is below its target (the leases over the workers that hold unexpired
//     leases, itself included, rounded up), one stolen from the most loaded worker if
//     that one holds more than the target.

// BaselineConfig sizes a baseline run.
type BaselineConfig struct {
	Seed            uint64
	Shards, Workers int
	CostWindow      time.Duration // default 2m
	Progress        func(string)
}

// BaselineResult is what a baseline run measured (virtual times).
type BaselineResult struct {
	Shards, Workers int
	ColdStart       time.Duration // until every lease was owned
	ColdConflicts   int64
	Steady          Rate
	Killed          int
	KilledShards    int
	FailoverMax     time.Duration
	FailoverMedian  time.Duration
	Virtual         time.Duration
}

// KCL's defaults.
const (
	kclLeaseDuration = 10 * time.Second
	kclRenewEvery    = kclLeaseDuration / 3
	kclTakerEvery    = 10 * time.Second
	kclScanEvery     = 20 * time.Second
)

type kclTake struct {
	shard, owner string
	at           time.Time
}

type kclCluster struct {
	leases *memstore.Leases
	store  meterLeases
	meter  *Meter
	mu     sync.Mutex
	takes  []kclTake
}

type kclWorker struct {
	id   string
	c    *kclCluster
	rng  *rand.Rand
	stop chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	held map[string]lease.Lease
	// Taker state (its goroutine only).
	seen     map[string]kclSeen
	table    map[string]lease.Lease
	lastScan time.Time
}

type kclSeen struct {
	owner string
	epoch int64
	since time.Time
}

// RunBaseline runs the KCL-style model: cold start, steady state, kill -9 of 10% of the
// workers. It must be called inside a synctest bubble.
func RunBaseline(cfg BaselineConfig) BaselineResult {
	if cfg.CostWindow <= 0 {
		cfg.CostWindow = 2 * time.Minute
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string) {}
	}
	t0 := time.Now()
	phase := func(name string) {
		cfg.Progress(fmt.Sprintf("baseline %s (virtual t=%s)", name, time.Since(t0).Round(time.Second)))
	}
	meter := NewMeter()
	leases := memstore.NewLeases()
	c := &kclCluster{leases: leases, meter: meter, store: meterLeases{m: meter, table: leases, inner: leases}}
	// The leases exist before the workers start (the KCL's shard sync, not measured).
	for i := range cfg.Shards {
		leases.Put(lease.Lease{ShardID: fmt.Sprintf("shardId-%012d", i), Checkpoint: lease.TrimHorizon})
	}
	res := BaselineResult{Shards: cfg.Shards, Workers: cfg.Workers}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xb45e))
	var workers []*kclWorker
	phase("cold start")
	begin := time.Now()
	for i := range cfg.Workers {
		w := &kclWorker{id: fmt.Sprintf("w%d", i), c: c, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i))), stop: make(chan struct{}),
			held: map[string]lease.Lease{}, seen: map[string]kclSeen{}, table: map[string]lease.Lease{}}
		workers = append(workers, w)
		w.start()
	}
	owned := func() bool {
		for _, l := range leases.Snapshot().Leases {
			if l.Owner == "" {
				return false
			}
		}
		return true
	}
	waitFor := func(cond func() bool, timeout time.Duration) {
		deadline := time.Now().Add(timeout)
		for !cond() && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitFor(owned, 30*time.Minute)
	res.ColdStart = c.lastFirstTake(begin, nil)
	res.ColdConflicts = meter.Snapshot().Total().Conflicts

	phase("steady state")
	time.Sleep(30 * time.Second)
	u0 := meter.Snapshot()
	time.Sleep(cfg.CostWindow)
	res.Steady = RateOver(meter.Snapshot().Sub(u0), cfg.CostWindow)

	phase("kill -9")
	res.Killed = max(1, cfg.Workers/10)
	victims := map[string][]string{}
	killAt := time.Now()
	for _, i := range rng.Perm(len(workers))[:res.Killed] {
		w := workers[i]
		close(w.stop)
		w.mu.Lock()
		for sh := range w.held {
			victims[w.id] = append(victims[w.id], sh)
		}
		w.mu.Unlock()
		res.KilledShards += len(victims[w.id])
	}
	var per []time.Duration
	waitFor(func() bool {
		per = per[:0]
		for _, shards := range victims {
			d := c.lastFirstTake(killAt, shards)
			if d < 0 {
				return false
			}
			per = append(per, d)
		}
		return true
	}, 10*time.Minute)
	if len(per) > 0 {
		slices.Sort(per)
		res.FailoverMax, res.FailoverMedian = per[len(per)-1], per[len(per)/2]
	}
	for _, w := range workers {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
	}
	for _, w := range workers {
		w.wg.Wait()
	}
	res.Virtual = time.Since(t0)
	return res
}

// lastFirstTake returns how long after t the last of shards (every lease when nil) was
// first taken; -1 when one was not taken since t.
func (c *kclCluster) lastFirstTake(t time.Time, shards []string) time.Duration {
	c.mu.Lock()
	first := map[string]time.Time{}
	for _, tk := range c.takes {
		if !tk.at.Before(t) {
			if _, ok := first[tk.shard]; !ok {
				first[tk.shard] = tk.at
			}
		}
	}
	c.mu.Unlock()
	if shards == nil {
		for _, l := range c.leases.Snapshot().Leases {
			shards = append(shards, l.ShardID)
		}
	}
	var last time.Duration
	for _, sh := range shards {
		at, ok := first[sh]
		if !ok {
			return -1
		}
		last = max(last, at.Sub(t))
	}
	return last
}

func (w *kclWorker) start() {
	w.wg.Add(2)
	go w.renewer()
	go w.taker()
}

// sleep waits d; false when the worker was killed.
func (w *kclWorker) sleep(d time.Duration) bool {
	select {
	case <-w.stop:
		return false
	case <-time.After(d):
		return true
	}
}

func (w *kclWorker) renewer() {
	defer w.wg.Done()
	ctx := context.Background()
	for w.sleep(kclRenewEvery) {
		w.mu.Lock()
		held := make([]lease.Lease, 0, len(w.held))
		for _, l := range w.held {
			held = append(held, l)
		}
		w.mu.Unlock()
		for _, l := range held {
			nl, err := w.c.leases.TakeLease(ctx, l, w.id)
			w.c.store.write(opRenew, l.ShardID, err, l)
			w.mu.Lock()
			if err != nil {
				delete(w.held, l.ShardID)
			} else {
				w.held[l.ShardID] = nl
			}
			w.mu.Unlock()
		}
	}
}

func (w *kclWorker) taker() {
	defer w.wg.Done()
	// Workers start within a second of each other.
	if !w.sleep(time.Duration(w.rng.Int64N(int64(time.Second)))) {
		return
	}
	for {
		w.pass()
		if !w.sleep(kclTakerEvery) {
			return
		}
	}
}

func (w *kclWorker) pass() {
	ctx := context.Background()
	now := time.Now()
	if w.lastScan.IsZero() || now.Sub(w.lastScan) >= kclScanEvery {
		t, err := w.c.store.ListLeases(ctx)
		if err != nil {
			return
		}
		w.lastScan = now
		clear(w.table)
		for _, l := range t.Leases {
			w.table[l.ShardID] = l
			if s, ok := w.seen[l.ShardID]; !ok || s.owner != l.Owner || s.epoch != l.Epoch {
				w.seen[l.ShardID] = kclSeen{owner: l.Owner, epoch: l.Epoch, since: now}
			}
		}
	}
	w.mu.Lock()
	mine := len(w.held)
	w.mu.Unlock()
	// Judged as of the last scan: the table this pass works on.
	expired := func(l lease.Lease) bool {
		return l.Owner == "" || w.lastScan.Sub(w.seen[l.ShardID].since) >= kclLeaseDuration
	}
	load := map[string][]lease.Lease{w.id: nil}
	var free []lease.Lease
	for _, id := range sortedKeys(w.table) {
		l := w.table[id]
		switch {
		case l.Owner == w.id:
		case expired(l):
			free = append(free, l)
		default:
			load[l.Owner] = append(load[l.Owner], l)
		}
	}
	target := (len(w.table) + len(load) - 1) / len(load)
	if mine >= target {
		return
	}
	var pick lease.Lease
	switch {
	case len(free) > 0:
		pick = free[w.rng.IntN(len(free))]
	default:
		most := ""
		for _, o := range sortedKeys(load) {
			if most == "" || len(load[o]) > len(load[most]) {
				most = o
			}
		}
		if most == "" || most == w.id || len(load[most]) <= target {
			return
		}
		pick = load[most][w.rng.IntN(len(load[most]))]
	}
	nl, err := w.c.store.TakeLease(ctx, pick, w.id)
	if err != nil {
		return
	}
	w.table[nl.ShardID] = nl
	w.seen[nl.ShardID] = kclSeen{owner: nl.Owner, epoch: nl.Epoch, since: now}
	w.mu.Lock()
	w.held[nl.ShardID] = nl
	w.mu.Unlock()
	w.c.mu.Lock()
	w.c.takes = append(w.c.takes, kclTake{shard: nl.ShardID, owner: w.id, at: time.Now()})
	w.c.mu.Unlock()
}
