package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// These tests run real Workers (real goroutines, real clock, short durations) against
// the in-memory stores. The same behaviours are proven on the real engines in the
// integration tests.

var errCut = errors.New("network cut (test)")

// cutoff makes every store call of one worker fail while cut is set, like a network cut.
type cutoff struct{ cut atomic.Bool }

func (c *cutoff) check(ctx context.Context) error {
	if c.cut.Load() {
		return errCut
	}
	return ctx.Err()
}

type cutLeases struct {
	LeaseStore
	c *cutoff
}

func (s cutLeases) ListLeases(ctx context.Context) (lease.Table, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.Table{}, err
	}
	return s.LeaseStore.ListLeases(ctx)
}
func (s cutLeases) GetLease(ctx context.Context, id string) (lease.Lease, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.Lease{}, err
	}
	return s.LeaseStore.GetLease(ctx, id)
}
func (s cutLeases) CreateLease(ctx context.Context, l lease.Lease) error {
	if err := s.c.check(ctx); err != nil {
		return err
	}
	return s.LeaseStore.CreateLease(ctx, l)
}
func (s cutLeases) TakeLease(ctx context.Context, l lease.Lease, owner string) (lease.Lease, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.Lease{}, err
	}
	return s.LeaseStore.TakeLease(ctx, l, owner)
}
func (s cutLeases) ReleaseLease(ctx context.Context, l lease.Lease, cp lease.ExtendedSequenceNumber) error {
	if err := s.c.check(ctx); err != nil {
		return err
	}
	return s.LeaseStore.ReleaseLease(ctx, l, cp)
}
func (s cutLeases) Checkpoint(ctx context.Context, l lease.Lease, cp lease.ExtendedSequenceNumber, behind int64) error {
	if err := s.c.check(ctx); err != nil {
		return err
	}
	return s.LeaseStore.Checkpoint(ctx, l, cp, behind)
}

type cutMeta struct {
	MetaStore
	c *cutoff
}

func (s cutMeta) ReadMeta(ctx context.Context) (lease.Meta, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.Meta{}, err
	}
	return s.MetaStore.ReadMeta(ctx)
}
func (s cutMeta) ReadMetaItems(ctx context.Context, ids []string, consistent bool) (lease.Meta, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.Meta{}, err
	}
	return s.MetaStore.ReadMetaItems(ctx, ids, consistent)
}
func (s cutMeta) PutWorker(ctx context.Context, w lease.WorkerRecord) error {
	if err := s.c.check(ctx); err != nil {
		return err
	}
	return s.MetaStore.PutWorker(ctx, w)
}
func (s cutMeta) ClaimCoordinator(ctx context.Context, id string, o *lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.CoordinatorRecord{}, err
	}
	return s.MetaStore.ClaimCoordinator(ctx, id, o)
}
func (s cutMeta) UpdateCoordinator(ctx context.Context, r lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if err := s.c.check(ctx); err != nil {
		return lease.CoordinatorRecord{}, err
	}
	return s.MetaStore.UpdateCoordinator(ctx, r)
}

// processed is one record handed to a processor.
type processed struct {
	worker, shard, seq string
	epoch              int64
	at                 int64 // global event order
}

type cluster struct {
	t       *testing.T
	leases  *memstore.Leases
	meta    *memstore.Meta
	stream  *memstore.Stream
	base    Config
	order   atomic.Int64
	mu      sync.Mutex
	records []processed
	ended   map[string]int64 // shard -> event order of SHARD_END
	started map[string]int64 // shard -> event order of its first record
	lost    map[string]int   // worker -> LeaseLost calls
	workers map[string]*runningWorker
	// wrapLeases, wrapMeta and wrapStream, when set, wrap the stores each started worker
	// sees (for faults of one kind of call).
	wrapLeases func(LeaseStore) LeaseStore
	wrapMeta   func(MetaStore) MetaStore
	wrapStream func(Stream) Stream
	// proc, when set, makes each worker's processors.
	proc func(worker, shard string) RecordProcessor
}

type runningWorker struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan error
	cut    *cutoff
	takes  atomic.Int64
	rels   atomic.Int64
}

func newCluster(t *testing.T, shards int) *cluster {
	t.Helper()
	c := &cluster{
		t:       t,
		leases:  memstore.NewLeases(),
		meta:    memstore.NewMeta(),
		stream:  memstore.NewStream(shards),
		ended:   map[string]int64{},
		started: map[string]int64{},
		lost:    map[string]int{},
		workers: map[string]*runningWorker{},
		base: Config{
			AppName:              "app",
			StreamName:           "s",
			LeaseDuration:        time.Second,
			HeartbeatInterval:    200 * time.Millisecond,
			PollInterval:         100 * time.Millisecond,
			ShardSyncInterval:    200 * time.Millisecond,
			StartupSettle:        300 * time.Millisecond,
			IdleTimeBetweenReads: 200 * time.Millisecond,
			ShutdownTimeout:      5 * time.Second,
			Logger:               slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
	}
	if testing.Verbose() {
		c.base.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t.Cleanup(c.stopAll)
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func (c *cluster) start(id string, edit ...func(*Config)) *runningWorker {
	c.t.Helper()
	cfg := c.base
	cfg.WorkerID = id
	for _, e := range edit {
		e(&cfg)
	}
	rw := &runningWorker{cut: &cutoff{}, done: make(chan error, 1)}
	cfg.Hooks.LeaseTaken = func(string, int64) { rw.takes.Add(1) }
	cfg.Hooks.LeaseReleased = func(string) { rw.rels.Add(1) }
	var (
		leases LeaseStore = cutLeases{c.leases, rw.cut}
		meta   MetaStore  = cutMeta{c.meta, rw.cut}
		str    Stream     = c.stream
	)
	if c.wrapLeases != nil {
		leases = c.wrapLeases(leases)
	}
	if c.wrapMeta != nil {
		meta = c.wrapMeta(meta)
	}
	if c.wrapStream != nil {
		str = c.wrapStream(str)
	}
	w, err := New(cfg, leases, meta, str, func(shard string) RecordProcessor {
		if c.proc != nil {
			return c.proc(id, shard)
		}
		return &testProcessor{c: c, worker: id, shard: shard}
	})
	if err != nil {
		c.t.Fatal(err)
	}
	rw.w = w
	ctx, cancel := context.WithCancel(context.Background())
	rw.cancel = cancel
	go func() { rw.done <- w.Run(ctx) }()
	c.mu.Lock()
	c.workers[id] = rw
	c.mu.Unlock()
	return rw
}

// stop shuts a worker down gracefully and waits for it.
// startEven starts workers w0..w<n-1> and waits until each holds each leases.
func (c *cluster) startEven(n, each int) []*runningWorker {
	var ws []*runningWorker
	want := map[string]int{}
	for i := range n {
		id := fmt.Sprintf("w%d", i)
		ws = append(ws, c.start(id))
		want[id] = each
	}
	c.waitFor(fmt.Sprintf("%d workers with %d leases each", n, each), 10*time.Second, c.balanced(want))
	return ws
}

func (c *cluster) stop(id string) {
	c.mu.Lock()
	rw := c.workers[id]
	delete(c.workers, id)
	c.mu.Unlock()
	rw.cancel()
	if err := <-rw.done; err != nil {
		c.t.Errorf("worker %s: %v", id, err)
	}
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.workers))
	for id := range c.workers {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.stop(id)
	}
}

// owners counts the leases each worker owns in the lease table, over unfinished leases.
func (c *cluster) owners() (map[string]int, int) {
	counts := map[string]int{}
	free := 0
	for _, l := range c.leases.Snapshot().Leases {
		if l.Finished() {
			continue
		}
		if l.Owner == "" {
			free++
		} else {
			counts[l.Owner]++
		}
	}
	return counts, free
}

// waitFor polls cond until it holds or the timeout passes.
func (c *cluster) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			counts, free := c.owners()
			c.t.Fatalf("timed out after %s waiting for %s (owners %v, free %d)", timeout, what, counts, free)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) balanced(want map[string]int) func() bool {
	return func() bool {
		counts, free := c.owners()
		if free != 0 || len(counts) != len(want) {
			return false
		}
		for id, n := range want {
			if counts[id] != n {
				return false
			}
		}
		return true
	}
}

func (c *cluster) coordinator() lease.CoordinatorRecord {
	m := c.meta.Snapshot()
	if m.Coordinator == nil {
		return lease.CoordinatorRecord{}
	}
	return *m.Coordinator
}

// produce writes n records with distinct partition keys.
func (c *cluster) produce(prefix string, n int) map[string]bool {
	seqs := map[string]bool{}
	for i := range n {
		_, seq := c.stream.Put(fmt.Sprintf("%s-%d", prefix, i), []byte("x"))
		seqs[seq] = true
	}
	return seqs
}

// processedCounts returns how often each sequence number was processed.
func (c *cluster) processedCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for _, r := range c.records {
		m[r.seq]++
	}
	return m
}

func (c *cluster) allProcessed(seqs map[string]bool) func() bool {
	return func() bool {
		got := c.processedCounts()
		for s := range seqs {
			if got[s] == 0 {
				return false
			}
		}
		return true
	}
}

// testProcessor records every record and checkpoints every batch.
type testProcessor struct {
	c      *cluster
	worker string
	shard  string
	epoch  int64
}

func (p *testProcessor) Initialize(_ context.Context, in InitializeInput) error {
	p.epoch = in.Epoch
	return nil
}

func (p *testProcessor) ProcessRecords(ctx context.Context, in ProcessRecordsInput) error {
	p.c.mu.Lock()
	for _, r := range in.Records {
		at := p.c.order.Add(1)
		if _, ok := p.c.started[p.shard]; !ok {
			p.c.started[p.shard] = at
		}
		p.c.records = append(p.c.records, processed{worker: p.worker, shard: p.shard, seq: r.SequenceNumber, epoch: in.Epoch, at: at})
	}
	p.c.mu.Unlock()
	return in.Checkpointer.Checkpoint(ctx, in.Records[len(in.Records)-1].SequenceNumber)
}

func (p *testProcessor) ShardEnded(context.Context, Checkpointer) error {
	p.c.mu.Lock()
	p.c.ended[p.shard] = p.c.order.Add(1)
	p.c.mu.Unlock()
	return nil
}

func (p *testProcessor) ShutdownRequested(context.Context, Checkpointer) error { return nil }

func (p *testProcessor) LeaseLost(context.Context) {
	p.c.mu.Lock()
	p.c.lost[p.worker]++
	p.c.mu.Unlock()
}

func TestThreeWorkersSplitThirtyShardsEvenlyWithoutChurn(t *testing.T) {
	c := newCluster(t, 30)
	ws := c.startEven(3, 10)
	rec := c.coordinator()
	if rec.MaxLeasesPerWorker != 10 || rec.ShardCount != 30 || rec.WorkerCount != 3 || rec.CoordinatorID == "" {
		t.Fatalf("coordinator record = %+v, want max 10 for 30 shards / 3 workers", rec)
	}
	time.Sleep(500 * time.Millisecond) // would any worker still move leases?
	var takes, rels int64
	for _, w := range ws {
		takes += w.takes.Load()
		rels += w.rels.Load()
	}
	if takes != 30 || rels != 0 {
		t.Fatalf("takes=%d releases=%d: want exactly 30 takes and no releases (no churn)", takes, rels)
	}
}

// countReads counts a worker's reads of the metadata table.
type countReads struct {
	MetaStore
	scans, items atomic.Int64
}

func (s *countReads) ReadMeta(ctx context.Context) (lease.Meta, error) {
	s.scans.Add(1)
	return s.MetaStore.ReadMeta(ctx)
}

func (s *countReads) ReadMetaItems(ctx context.Context, ids []string, consistent bool) (lease.Meta, error) {
	s.items.Add(1)
	return s.MetaStore.ReadMetaItems(ctx, ids, consistent)
}

// At steady state only the coordinator reads the whole metadata table; the other workers
// read the coordinator item alone, so that reads grow with workers, not workers squared.
func TestOnlyTheCoordinatorScansTheMetadataTable(t *testing.T) {
	c := newCluster(t, 12)
	var counters []*countReads
	c.wrapMeta = func(m MetaStore) MetaStore {
		cr := &countReads{MetaStore: m}
		counters = append(counters, cr)
		return cr
	}
	ws := c.startEven(3, 4)
	time.Sleep(2 * c.base.PollInterval)
	scans, items := make([]int64, 3), make([]int64, 3)
	for i, cr := range counters {
		scans[i], items[i] = cr.scans.Load(), cr.items.Load()
	}
	time.Sleep(10 * c.base.PollInterval)
	scanners := 0
	for i, cr := range counters {
		ds, di := cr.scans.Load()-scans[i], cr.items.Load()-items[i]
		coordinator := ws[i].w.Status().Coordinator
		switch {
		case coordinator && ds == 0:
			t.Errorf("the coordinator w%d did not read the metadata table", i)
		case !coordinator && ds > 0:
			t.Errorf("w%d, not coordinator, scanned the metadata table %d times", i, ds)
		case !coordinator && di == 0:
			t.Errorf("w%d, not coordinator, did not read the membership view", i)
		}
		if ds > 0 {
			scanners++
		}
	}
	if scanners != 1 {
		t.Errorf("%d workers scanned the metadata table, want only the coordinator", scanners)
	}
}

func TestExactlyOneCoordinatorUnderConcurrentStart(t *testing.T) {
	c := newCluster(t, 8)
	for i := range 6 {
		c.start(fmt.Sprintf("w%d", i))
	}
	c.waitFor("coordinator", 5*time.Second, func() bool { return c.coordinator().WorkerCount == 6 })
	time.Sleep(300 * time.Millisecond)
	n := 0
	for _, rw := range c.workers {
		if rw.w.Status().Coordinator {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d workers believe they are coordinator, want 1", n)
	}
	if rec := c.coordinator(); rec.Epoch != 1 {
		t.Fatalf("coordinator epoch %d: the role changed hands during a clean start", rec.Epoch)
	}
}

func TestJoinRebalancesWithoutDuplicates(t *testing.T) {
	c := newCluster(t, 30)
	c.startEven(3, 10)
	before := c.produce("a", 300)
	c.waitFor("records before join", 10*time.Second, c.allProcessed(before))
	c.start("w3")
	c.start("w4")
	after := c.produce("b", 300)
	c.waitFor("6 each", 10*time.Second, c.balanced(map[string]int{"w0": 6, "w1": 6, "w2": 6, "w3": 6, "w4": 6}))
	c.waitFor("records after join", 10*time.Second, c.allProcessed(after))
	for seq, n := range c.processedCounts() {
		if n != 1 {
			t.Errorf("record %s processed %d times during a planned rebalance", seq, n)
		}
	}
	if rec := c.coordinator(); rec.MaxLeasesPerWorker != 6 {
		t.Fatalf("max = %d, want 6", rec.MaxLeasesPerWorker)
	}
}

// With coalesced checkpoints too (an interval longer than the test: nothing but the
// release writes them), a planned move loses nothing and duplicates nothing.
func TestGracefulShutdownReleasesAndHandsOver(t *testing.T) {
	for _, every := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("checkpoint interval %s", every), func(t *testing.T) {
			c := newCluster(t, 30)
			c.base.CheckpointInterval = every
			c.startEven(3, 10)
			seqs := c.produce("a", 200)
			c.waitFor("records", 10*time.Second, c.allProcessed(seqs))
			c.stop("w1")
			// Released at once: within the stop, nothing is owned by w1 any more.
			if counts, _ := c.owners(); counts["w1"] != 0 {
				t.Fatalf("w1 still owns %d leases after a graceful stop", counts["w1"])
			}
			for _, r := range c.meta.Snapshot().Workers {
				if r.WorkerID == "w1" && r.State != lease.WorkerGone {
					t.Fatalf("w1 state %q, want gone", r.State)
				}
			}
			c.waitFor("15/15", 5*time.Second, c.balanced(map[string]int{"w0": 15, "w2": 15}))
			more := c.produce("b", 200)
			c.waitFor("records after", 10*time.Second, c.allProcessed(more))
			for seq, n := range c.processedCounts() {
				if n != 1 {
					t.Errorf("record %s processed %d times after a graceful shutdown", seq, n)
				}
			}
		})
	}
}

func TestCutOffWorkerFencesItselfAndItsCheckpointsAreRefused(t *testing.T) {
	c := newCluster(t, 6)
	w0 := c.start("w0")
	c.start("w1")
	c.waitFor("3/3", 10*time.Second, c.balanced(map[string]int{"w0": 3, "w1": 3}))
	var victim lease.Lease
	for _, l := range c.leases.Snapshot().Leases {
		if l.Owner == "w0" {
			victim = l
			break
		}
	}
	cutAt := time.Now()
	w0.cut.cut.Store(true)
	// w0 must stop its consumers before w1 may take them.
	c.waitFor("w0 fenced", 3*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lost["w0"] == 3
	})
	fencedAfter := time.Since(cutAt)
	c.waitFor("w1 owns all", 5*time.Second, c.balanced(map[string]int{"w1": 6}))
	takenAfter := time.Since(cutAt)
	if fencedAfter >= takenAfter || fencedAfter > c.base.LeaseDuration {
		t.Fatalf("w0 stopped after %s, w1 took over after %s: fencing must come first and within the lease", fencedAfter, takenAfter)
	}
	// A checkpoint from the stale tenure is refused and does not change the lease.
	w0.cut.cut.Store(false)
	stale := newCheckpointer(c.leases, victim, Hooks{}, clock.Real{}, time.Second, 0)
	err := stale.Checkpoint(context.Background(), "99999999999999999999999")
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale checkpoint: err = %v, want ErrLeaseLost", err)
	}
	now, _ := c.leases.Lease(victim.ShardID)
	if now.Checkpoint == "99999999999999999999999" || now.Owner != "w1" {
		t.Fatalf("stale checkpoint was written: %+v", now)
	}
	// Back online, w0 rejoins and gets its share back.
	c.waitFor("3/3 again", 10*time.Second, c.balanced(map[string]int{"w0": 3, "w1": 3}))
}

func TestReshardProcessesChildrenOnlyAfterParents(t *testing.T) {
	c := newCluster(t, 4)
	c.start("w0")
	c.start("w1")
	c.waitFor("2/2", 10*time.Second, c.balanced(map[string]int{"w0": 2, "w1": 2}))
	before := c.produce("a", 400)
	if err := c.stream.UpdateShardCount(8); err != nil {
		t.Fatal(err)
	}
	after := c.produce("b", 400)
	c.waitFor("all records", 15*time.Second, c.allProcessed(after))
	c.waitFor("all records before", 5*time.Second, c.allProcessed(before))
	c.waitFor("4/4 over the children", 10*time.Second, c.balanced(map[string]int{"w0": 4, "w1": 4}))
	if rec := c.coordinator(); rec.ShardCount != 8 || rec.MaxLeasesPerWorker != 4 {
		t.Fatalf("coordinator %+v, want 8 shards, max 4", rec)
	}
	// For the KCL: the parents' leases record their children with SHARD_END, and the
	// leases created from the first listing carry the shards' hash key ranges.
	children := map[string][]string{}
	for _, sh := range c.stream.Shards() {
		for _, p := range sh.Parents() {
			children[p] = append(children[p], sh.ID)
		}
	}
	for _, sh := range c.stream.Shards() {
		l, ok := c.leases.Lease(sh.ID)
		if !ok || len(sh.Parents()) > 0 {
			continue // a child, or a parent already deleted
		}
		if want := slices.Sorted(slices.Values(children[sh.ID])); !slices.Equal(l.ChildShardIDs, want) {
			t.Errorf("lease %s: children %q, want %q", sh.ID, l.ChildShardIDs, want)
		}
		if l.StartingHashKey != sh.StartingHashKey || l.EndingHashKey != sh.EndingHashKey || l.StartingHashKey == "" {
			t.Errorf("lease %s: hash key range %q-%q, want the shard's %q-%q", sh.ID, l.StartingHashKey, l.EndingHashKey, sh.StartingHashKey, sh.EndingHashKey)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sh := range c.stream.Shards() {
		first, ok := c.started[sh.ID]
		if !ok || sh.Closed {
			continue
		}
		for _, p := range sh.Parents() {
			end, ok := c.ended[p]
			if !ok || end > first {
				t.Errorf("child %s started at event %d before parent %s ended (ended=%v at %d)", sh.ID, first, p, ok, end)
			}
		}
	}
}

func TestCorruptItemsAreSkipped(t *testing.T) {
	c := newCluster(t, 4)
	c.leases.PutCorrupt("bogus-lease", "leaseCounter: want N, got S")
	c.meta.PutCorrupt("bogus-worker", "heartbeat missing")
	c.start("w0")
	c.start("w1")
	c.waitFor("2/2", 10*time.Second, c.balanced(map[string]int{"w0": 2, "w1": 2}))
	seqs := c.produce("a", 50)
	c.waitFor("records", 10*time.Second, c.allProcessed(seqs))
}

func TestStaticMaxLeases(t *testing.T) {
	c := newCluster(t, 10)
	static := func(cfg *Config) { cfg.DisableDynamicMaxLeases = true; cfg.StaticMaxLeases = 3 }
	c.start("w0", static)
	c.start("w1", static)
	c.waitFor("3/3 with 4 unowned", 10*time.Second, func() bool {
		counts, free := c.owners()
		return counts["w0"] == 3 && counts["w1"] == 3 && free == 4
	})
	if rec := c.coordinator(); rec.UnownedShards != 4 || rec.RecommendedWorkers != 4 {
		t.Fatalf("coordinator %+v: want 4 unowned shards and 4 workers recommended", rec)
	}
}

// The kill case: a worker that stops dead (no release, no gone mark) loses its shards to
// the others after the lease duration.
func TestDeadWorkerLeasesTakenAfterLeaseDuration(t *testing.T) {
	c := newCluster(t, 9)
	w2 := c.start("w2")
	c.start("w0")
	c.start("w1")
	c.waitFor("3/3/3", 10*time.Second, c.balanced(map[string]int{"w0": 3, "w1": 3, "w2": 3}))
	// Dead: every call fails and it never comes back.
	w2.cut.cut.Store(true)
	start := time.Now()
	c.waitFor("w0,w1 own all", 10*time.Second, func() bool {
		counts, free := c.owners()
		return free == 0 && counts["w2"] == 0 && counts["w0"]+counts["w1"] == 9
	})
	if took := time.Since(start); took < c.base.LeaseDuration*8/10 {
		t.Fatalf("leases moved after %s, before the lease duration %s: a live-looking worker was robbed", took, c.base.LeaseDuration)
	}
	seqs := c.produce("a", 100)
	c.waitFor("records", 10*time.Second, c.allProcessed(seqs))
}

// With a desired worker count from a WorkerCounter (static here, Kubernetes replicas in
// production), max leases follows it; while fewer workers are live, the live ones cover
// the missing one's shards, and give them back when it arrives.
func TestDesiredWorkerCountWithMissingWorker(t *testing.T) {
	c := newCluster(t, 30)
	three := func(cfg *Config) { cfg.WorkerCounter = StaticWorkers(3) }
	c.start("w0", three)
	c.start("w1", three)
	c.waitFor("15/15 while one of 3 is missing", 10*time.Second, c.balanced(map[string]int{"w0": 15, "w1": 15}))
	if rec := c.coordinator(); rec.MaxLeasesPerWorker != 10 || rec.TargetLeasesPerWorker != 15 || rec.WorkerCount != 3 || rec.LiveWorkers != 2 {
		t.Fatalf("coordinator %+v: want max 10 for 3 desired workers, target 15 for 2 live", rec)
	}
	c.start("w2", three)
	c.waitFor("10/10/10", 10*time.Second, c.balanced(map[string]int{"w0": 10, "w1": 10, "w2": 10}))
}

// At the cap, closed shards whose children wait for them are read before open shards.
// Here the worker follows the two parents it holds into their children when they end,
// which fills its cap with open shards while the two other parents were never anyone's:
// told by the coordinator that closed shards wait, it trades open shards for them.
func TestAtTheCapClosedShardsAreReadBeforeOpenOnes(t *testing.T) {
	c := newCluster(t, 4)
	c.start("w0", func(cfg *Config) { cfg.MaxLeasesCap, cfg.CleanupInterval = 2, 200*time.Millisecond })
	c.waitFor("2 leases, 2 free", 10*time.Second, func() bool {
		counts, free := c.owners()
		return counts["w0"] == 2 && free == 2
	})
	parents := c.stream.Shards()
	if err := c.stream.UpdateShardCount(8); err != nil {
		t.Fatal(err)
	}
	c.waitFor("every parent read to its end", 15*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, p := range parents {
			if _, ok := c.ended[p.ID]; !ok {
				return false
			}
		}
		return true
	})
	c.waitFor("2 leases at the cap, the rest free", 10*time.Second, func() bool {
		counts, free := c.owners()
		return counts["w0"] == 2 && free == 6
	})
}
