package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Regression tests for the defects a review of the lease protocol found (issue 8). Each
// fails on the code before the fix; the simulator (internal/sim) hunts for the next one.

func TestTenureRenewalLandingAfterTheDeadlineIsALapse(t *testing.T) {
	const ld, margin = 10 * time.Second, 2 * time.Second
	t0 := time.Unix(5000, 0)
	for _, tc := range []struct {
		name          string
		start, landed time.Duration // of the second renewal, after the first one at t0
		lapse         bool
	}{
		{"lands before the deadline", 7 * time.Second, 7500 * time.Millisecond, false},
		{"starts before, lands at the deadline", 7 * time.Second, 8 * time.Second, true},
		{"starts before, lands after the deadline", 7 * time.Second, 8400 * time.Millisecond, true},
		{"starts after the deadline", 9 * time.Second, 9100 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := clock.NewFake(t0)
			tn := newTenure(fake, ld, margin)
			tn.renew(fake.Now())
			gen := tn.generation()
			fake.Advance(tc.landed)
			if got := tn.renew(t0.Add(tc.start)); got != tc.lapse {
				t.Fatalf("renew reported lapse = %v, want %v", got, tc.lapse)
			}
			if got := tn.valid(gen); got == tc.lapse {
				t.Fatalf("a consumer from before the renewal is valid = %v, want %v", got, !tc.lapse)
			}
			if !tn.holding() || !tn.valid(tn.generation()) {
				t.Fatal("the renewal must make the worker valid again for new consumers")
			}
		})
	}
}

func TestTenureFenceTimerFiresAtTheDeadline(t *testing.T) {
	fake := clock.NewFake(time.Unix(5000, 0))
	tn := newTenure(fake, 10*time.Second, 2*time.Second)
	tn.renew(fake.Now())
	fenced := make(chan time.Time, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tn.fenceAtDeadlines(ctx, func() { fenced <- fake.Now() })
	waitWaiters(t, fake, 1)
	fake.Advance(7900 * time.Millisecond)
	select {
	case at := <-fenced:
		t.Fatalf("fenced at %v, before the deadline", at)
	case <-time.After(50 * time.Millisecond):
	}
	fake.Advance(100 * time.Millisecond)
	select {
	case <-fenced:
	case <-time.After(2 * time.Second):
		t.Fatal("not fenced at the deadline")
	}
}

func waitWaiters(t *testing.T, fake *clock.Fake, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for fake.Waiters() < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d timers", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// hangingPut makes PutWorker block until its context ends while hang is set, and records
// when the last successful write started.
type hangingPut struct {
	MetaStore
	hang      *atomic.Bool
	lastStart *atomic.Int64
}

func (h hangingPut) PutWorker(ctx context.Context, r lease.WorkerRecord) error {
	start := time.Now()
	if h.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	err := h.MetaStore.PutWorker(ctx, r)
	if err == nil {
		h.lastStart.Store(start.UnixNano())
	}
	return err
}

// A worker whose heartbeat write hangs must stop its consumers at its deadline (the last
// successful write's start + LeaseDuration - LeaseDuration/5), not when the hung write
// finally returns.
func TestFencingDoesNotWaitForAHungHeartbeat(t *testing.T) {
	c := newCluster(t, 3)
	c.base.HeartbeatInterval = c.base.LeaseDuration / 3
	var hang atomic.Bool
	var lastStart atomic.Int64
	c.wrapMeta = func(m MetaStore) MetaStore { return hangingPut{m, &hang, &lastStart} }
	c.start("w0")
	c.waitFor("w0 owns 3", 5*time.Second, c.balanced(map[string]int{"w0": 3}))
	hang.Store(true)
	c.waitFor("w0 fenced", 5*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lost["w0"] == 3
	})
	fencedAfter := time.Since(time.Unix(0, lastStart.Load()))
	if limit := c.base.LeaseDuration * 9 / 10; fencedAfter > limit {
		t.Fatalf("fenced %s after the last renewal started; the deadline is %s after it (limit %s)",
			fencedAfter, c.base.LeaseDuration*4/5, limit)
	}
}

// quietProcessor processes without ever checkpointing.
type quietProcessor struct{ testProcessor }

func (p *quietProcessor) ProcessRecords(_ context.Context, in ProcessRecordsInput) error {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	for _, r := range in.Records {
		p.c.records = append(p.c.records, processed{worker: p.worker, shard: p.shard, seq: r.SequenceNumber, epoch: in.Epoch, at: p.c.order.Add(1)})
	}
	return nil
}

// A consumer whose processor never checkpoints learns that its lease was taken, and gets
// LeaseLost: before delivering, within about LeaseScanInterval; while idle, when the
// coordinator found the lease missing from the worker's count on two reads of the lease
// table in a row (about two CleanupIntervals) and asked it to recheck.
func TestConsumerLearnsOfATakenLeaseWithoutCheckpointing(t *testing.T) {
	const scan, cleanup = 500 * time.Millisecond, 400 * time.Millisecond
	for _, tc := range []struct {
		name  string
		busy  bool
		limit time.Duration
	}{
		{"delivering", true, 2 * scan},
		{"idle", false, 3*cleanup + scan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			c.base.LeaseScanInterval = scan
			c.base.CleanupInterval = cleanup
			c.proc = func(worker, shard string) RecordProcessor {
				return &quietProcessor{testProcessor{c: c, worker: worker, shard: shard}}
			}
			c.start("w0")
			c.waitFor("w0 owns the shard", 5*time.Second, c.balanced(map[string]int{"w0": 1}))
			cur := c.leases.Snapshot().Leases[0]
			if _, err := c.leases.TakeLease(context.Background(), cur, "intruder"); err != nil {
				t.Fatal(err)
			}
			takenAt := time.Now()
			if tc.busy {
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
							c.stream.Put(fmt.Sprint("k", i), []byte("x"))
						}
					}
				}()
			}
			limit := tc.limit
			c.waitFor("w0 told of the lost lease", limit+time.Second, func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.lost["w0"] >= 1
			})
			if d := time.Since(takenAt); d > limit {
				t.Fatalf("learned of the lost lease after %s; want within %s", d, limit)
			}
		})
	}
}

// appliedButFailed applies the first n takes and then reports an error, as DynamoDB does
// when the response is lost or the SDK's retry fails the condition the first try met.
type appliedButFailed struct {
	LeaseStore
	n *atomic.Int64
}

func (a appliedButFailed) TakeLease(ctx context.Context, l lease.Lease, owner string) (lease.Lease, error) {
	taken, err := a.LeaseStore.TakeLease(ctx, l, owner)
	if err == nil && a.n.Add(-1) >= 0 {
		if a.n.Load()%2 == 0 {
			return lease.Lease{}, fmt.Errorf("retried take: %w", lease.ErrConflict)
		}
		return lease.Lease{}, errors.New("connection reset after the request was sent")
	}
	return taken, err
}

func TestATakeThatAppliedButReportedFailureIsNotOrphaned(t *testing.T) {
	for _, tc := range []struct {
		name        string
		shards, cap int
	}{
		// Below the target the worker takes the lease again; at the target (the cap leaves
		// a shard unowned) it must release it, not keep it owned and unprocessed.
		{"below the target", 6, 80},
		{"at the target", 6, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.shards)
			c.base.MaxLeasesCap = tc.cap
			var n atomic.Int64
			n.Store(4)
			c.wrapLeases = func(l LeaseStore) LeaseStore { return appliedButFailed{l, &n} }
			rw := c.start("w0")
			want := min(tc.shards, tc.cap)
			c.waitFor("w0 runs its target", 5*time.Second, func() bool { return len(rw.w.Status().Leases) == want })
			time.Sleep(5 * c.base.PollInterval)
			running := map[string]bool{}
			for _, id := range rw.w.Status().Leases {
				running[id] = true
			}
			for _, l := range c.leases.Snapshot().Leases {
				if l.Owner == "w0" && !running[l.ShardID] {
					t.Errorf("lease %s owned by w0 in the table but not processed", l.ShardID)
				}
			}
		})
	}
}

// putInShard writes records until n of them landed in shardID.
func putInShard(c *cluster, shardID string, n int, prefix string) map[string]bool {
	seqs := map[string]bool{}
	for i := 0; len(seqs) < n; i++ {
		if sh, seq := c.stream.Put(fmt.Sprintf("%s-%d", prefix, i), []byte("x")); sh == shardID {
			seqs[seq] = true
		}
	}
	return seqs
}

func (c *cluster) processedAny(seqs map[string]bool) []string {
	var out []string
	for s, n := range c.processedCounts() {
		if seqs[s] && n > 0 {
			out = append(out, s)
		}
	}
	return out
}

// A LATEST application must never read what it skipped at its first start, whichever
// coordinator syncs shards later: the position is recorded, not inferred from an empty
// table.
func TestALaterShardSyncKeepsTheRecordedInitialPosition(t *testing.T) {
	c := newCluster(t, 2)
	old := putInShard(c, "shardId-000000000000", 20, "old")
	if err := c.stream.SplitShard("shardId-000000000000"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // arrival times have millisecond precision
	latest := func(cfg *Config) { cfg.InitialPosition = lease.Latest }
	c.start("w0", latest)
	c.waitFor("leases owned", 5*time.Second, func() bool { counts, free := c.owners(); return free == 0 && counts["w0"] > 0 })
	fresh := c.produce("new", 30)
	c.waitFor("new records processed", 5*time.Second, c.allProcessed(fresh))
	// A new coordinator (every restart, failover or rolling deploy) syncs every shard again.
	c.stop("w0")
	c.start("w1", latest)
	more := c.produce("more", 30)
	c.waitFor("records after the restart processed", 5*time.Second, c.allProcessed(more))
	time.Sleep(500 * time.Millisecond)
	if got := c.processedAny(old); len(got) > 0 {
		t.Fatalf("%d of %d records written before the LATEST start were processed", len(got), len(old))
	}
	if rec := c.coordinator(); rec.InitialPosition != lease.AtTimestamp || rec.InitialTimestamp.IsZero() {
		t.Fatalf("coordinator record = %+v: the LATEST start must be recorded as AT_TIMESTAMP with the start time", rec)
	}
}

// Records written after InitialTimestamp into a shard that closed before the application
// started are read.
func TestAtTimestampReadsShardsClosedBeforeTheStart(t *testing.T) {
	c := newCluster(t, 2)
	before := putInShard(c, "shardId-000000000000", 5, "before")
	time.Sleep(5 * time.Millisecond)
	ts := time.Now()
	time.Sleep(5 * time.Millisecond)
	after := putInShard(c, "shardId-000000000000", 5, "after")
	if err := c.stream.SplitShard("shardId-000000000000"); err != nil {
		t.Fatal(err)
	}
	c.start("w0", func(cfg *Config) { cfg.InitialPosition, cfg.InitialTimestamp = lease.AtTimestamp, ts })
	c.waitFor("records after the timestamp in the closed shard processed", 5*time.Second, c.allProcessed(after))
	if got := c.processedAny(before); len(got) > 0 {
		t.Fatalf("%d records written before InitialTimestamp were processed", len(got))
	}
}

// retention hides shards as Kinesis does past the retention period: not listed, and
// GetShardIterator says the shard does not exist.
type retention struct {
	Stream
	mu     sync.Mutex
	hidden map[string]bool
}

func (r *retention) gone(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hidden[id]
}

func (r *retention) ListShards(ctx context.Context) ([]stream.Shard, error) {
	all, err := r.Stream.ListShards(ctx)
	var out []stream.Shard
	for _, s := range all {
		if !r.gone(s.ID) {
			out = append(out, s)
		}
	}
	return out, err
}

func (r *retention) GetShardIterator(ctx context.Context, id string, pos stream.Position) (string, error) {
	if r.gone(id) {
		return "", fmt.Errorf("shard %s: %w", id, stream.ErrStreamNotFound)
	}
	return r.Stream.GetShardIterator(ctx, id, pos)
}

// A shard past the stream's retention ends like a shard read to its end, so its children
// do not wait forever.
func TestAShardPastRetentionEndsAndItsChildrenStart(t *testing.T) {
	c := newCluster(t, 1)
	parent := "shardId-000000000000"
	putInShard(c, parent, 5, "old")
	if err := c.stream.SplitShard(parent); err != nil {
		t.Fatal(err)
	}
	// The parent's lease exists (created while it was listed); then it ages out.
	if err := c.leases.CreateLease(context.Background(), lease.Lease{ShardID: parent, Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	ret := &retention{hidden: map[string]bool{parent: true}}
	c.wrapStream = func(s Stream) Stream { ret.Stream = s; return ret }
	c.start("w0")
	children := c.produce("child", 20)
	c.waitFor("children's records processed", 5*time.Second, c.allProcessed(children))
	if l, _ := c.leases.Lease(parent); !l.Finished() {
		t.Fatalf("parent lease = %+v, want SHARD_END", l)
	}
}

// hangingList makes ListLeases hang until its context ends while hang > 0.
type hangingList struct {
	LeaseStore
	hang *atomic.Int64
}

func (h hangingList) ListLeases(ctx context.Context) (lease.Table, error) {
	if h.hang.Add(-1) >= 0 {
		<-ctx.Done()
		return lease.Table{}, ctx.Err()
	}
	return h.LeaseStore.ListLeases(ctx)
}

// A hung call has a deadline: the coordinator's hung ListLeases does not leave the
// application without leases.
func TestAHungCallDoesNotStopTheControlLoop(t *testing.T) {
	c := newCluster(t, 4)
	var hang atomic.Int64
	hang.Store(2)
	c.wrapLeases = func(l LeaseStore) LeaseStore { return hangingList{l, &hang} }
	c.start("w0")
	c.waitFor("w0 owns 4", 10*time.Second, c.balanced(map[string]int{"w0": 4}))
}

// stuckRead never returns from ReadMeta after stuck is set, whatever its context says:
// a broken client.
type stuckRead struct {
	MetaStore
	stuck *atomic.Bool
}

func (s stuckRead) ReadMeta(ctx context.Context) (lease.Meta, error) {
	if s.stuck.Load() {
		select {} //nolint:staticcheck // a call that never returns
	}
	return s.MetaStore.ReadMeta(ctx)
}

func TestCheckTurnsRedWhenTheControlLoopIsStuck(t *testing.T) {
	c := newCluster(t, 1)
	var stuck atomic.Bool
	c.wrapMeta = func(m MetaStore) MetaStore { return stuckRead{m, &stuck} }
	rw := c.start("w0")
	c.waitFor("w0 owns the shard", 5*time.Second, c.balanced(map[string]int{"w0": 1}))
	if err := rw.w.Check(); err != nil {
		t.Fatalf("Check = %v on a healthy worker", err)
	}
	// The stuck goroutine never returns: leave the worker running (its Run never ends).
	c.mu.Lock()
	delete(c.workers, "w0")
	c.mu.Unlock()
	stuck.Store(true)
	c.waitFor("Check red", 10*time.Second, func() bool { return rw.w.Check() != nil })
}

// hungMeta blocks PutWorker (while puts is set) or the metadata table's reads (while
// reads is set) until release is closed, whatever their context says: a hung call, a bug.
// heldPuts counts the PutWorker calls it holds.
type hungMeta struct {
	MetaStore
	puts, reads *atomic.Bool
	heldPuts    *atomic.Int64
	release     <-chan struct{}
}

func (h hungMeta) PutWorker(ctx context.Context, r lease.WorkerRecord) error {
	if h.puts.Load() {
		h.heldPuts.Add(1)
		<-h.release
		return errors.New("released (test)")
	}
	return h.MetaStore.PutWorker(ctx, r)
}

func (h hungMeta) hangRead() bool {
	if !h.reads.Load() {
		return false
	}
	<-h.release
	return true
}

func (h hungMeta) ReadMeta(ctx context.Context) (lease.Meta, error) {
	if h.hangRead() {
		return lease.Meta{}, errors.New("released (test)")
	}
	return h.MetaStore.ReadMeta(ctx)
}

func (h hungMeta) ReadMetaItems(ctx context.Context, ids []string, consistent bool) (lease.Meta, error) {
	if h.hangRead() {
		return lease.Meta{}, errors.New("released (test)")
	}
	return h.MetaStore.ReadMetaItems(ctx, ids, consistent)
}

// Alive (the liveness check) catches hangs, not failures; Check (the readiness check)
// also fails while heartbeats fail. A DynamoDB outage fails every call, but each ends:
// Check red, Alive nil, so no pod restarts for it. A heartbeat write or a control-loop
// pass that never returns is a hang: Alive red, naming the loop. On a fake clock, with
// the heartbeat loop running and the test making the control loop's passes, for seven
// lease durations after the fault (more than Check's and Alive's limits).
func TestAliveCatchesHangsButNotFailures(t *testing.T) {
	const ld = 10 * time.Second // HeartbeatInterval ld/3, each write's deadline ld/5
	const step = time.Second    // PollInterval; more than the retry wait after a failure
	for _, tc := range []struct {
		name                     string
		cut, hangPuts, hangReads bool
		check, alive             string // "": nil; else a part of the error
	}{
		{name: "healthy"},
		{name: "DynamoDB outage: every call fails", cut: true, check: "heartbeat has not succeeded"},
		{name: "a heartbeat write never returns", hangPuts: true,
			check: "heartbeat has not succeeded", alive: "heartbeat loop has not ended a write"},
		{name: "a control-loop pass never returns", hangReads: true,
			check: "control loop has not completed a pass", alive: "control loop has not completed a pass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := clock.NewFake(time.Unix(30000, 0))
			cut := &cutoff{}
			var puts, reads atomic.Bool
			var heldPuts atomic.Int64
			release := make(chan struct{})
			meta := hungMeta{cutMeta{memstore.NewMeta(), cut}, &puts, &reads, &heldPuts, release}
			w, err := New(Config{AppName: "app", WorkerID: "w0", LeaseDuration: ld, CleanupInterval: time.Hour,
				Clock: fake, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
				cutLeases{memstore.NewLeases(), cut}, meta, memstore.NewStream(1),
				func(string) RecordProcessor { return &testProcessor{} })
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(func() { cancel(); close(release) })
			// Starting (the start-up checks may wait for long): both nil.
			fake.Advance(10 * ld)
			if err := w.Check(); err != nil {
				t.Fatalf("Check while starting = %v", err)
			}
			if err := w.Alive(); err != nil {
				t.Fatalf("Alive while starting = %v", err)
			}
			// Registered and running as Run makes it, without taking the lease (no
			// consumer to wait on the clock).
			if err := w.renewal.beat(ctx, lease.WorkerActive); err != nil {
				t.Fatal(err)
			}
			w.bal.settleUntil = fake.Now().Add(100 * ld)
			go w.renewal.loop(ctx)
			waitWaiters(t, fake, 1)
			w.tick(ctx)

			cut.cut.Store(tc.cut)
			puts.Store(tc.hangPuts)
			reads.Store(tc.hangReads)
			passHung := false
			for elapsed := time.Duration(0); elapsed < 7*ld; elapsed += step {
				fake.Advance(step)
				// The heartbeat loop is back on the clock, or held in a hung write.
				for deadline := time.Now().Add(5 * time.Second); fake.Waiters() < 1 && heldPuts.Load() == 0; {
					if time.Now().After(deadline) {
						t.Fatal("the heartbeat loop neither waits nor hangs")
					}
					time.Sleep(time.Millisecond)
				}
				// The control loop's pass; a hung one holds its goroutine as it would Run's.
				if tc.hangReads {
					if !passHung {
						passHung = true
						go w.tick(ctx)
					}
					continue
				}
				w.tick(ctx)
			}
			for _, c := range []struct {
				what string
				err  error
				want string
			}{{"Check", w.Check(), tc.check}, {"Alive", w.Alive(), tc.alive}} {
				switch {
				case c.want == "" && c.err != nil:
					t.Errorf("%s = %v, want nil", c.what, c.err)
				case c.want != "" && (c.err == nil || !strings.Contains(c.err.Error(), c.want)):
					t.Errorf("%s = %v, want an error saying %q", c.what, c.err, c.want)
				}
			}
		})
	}
}

// partialProcessor checkpoints in the middle of its first batch and then fails it.
type partialProcessor struct {
	testProcessor
	calls  atomic.Int64
	mu     sync.Mutex
	firsts []string // first record of each call
	cp     string
}

func (p *partialProcessor) ProcessRecords(ctx context.Context, in ProcessRecordsInput) error {
	p.mu.Lock()
	p.firsts = append(p.firsts, in.Records[0].SequenceNumber)
	p.mu.Unlock()
	if p.calls.Add(1) == 1 && len(in.Records) > 2 {
		p.cp = in.Records[1].SequenceNumber
		if err := p.testProcessor.ProcessRecords(ctx, ProcessRecordsInput{Records: in.Records[:2], Epoch: in.Epoch, Checkpointer: in.Checkpointer}); err != nil {
			return err
		}
		return errors.New("failed after a partial checkpoint")
	}
	return p.testProcessor.ProcessRecords(ctx, in)
}

// A batch retried after a partial checkpoint starts after that checkpoint.
func TestABatchRetriedAfterAPartialCheckpointStartsAfterIt(t *testing.T) {
	c := newCluster(t, 1)
	seqs := c.produce("r", 10)
	p := &partialProcessor{testProcessor: testProcessor{c: c, worker: "w0", shard: "shardId-000000000000"}}
	c.proc = func(string, string) RecordProcessor { return p }
	c.start("w0")
	c.waitFor("every record processed", 10*time.Second, c.allProcessed(seqs))
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.firsts) < 2 {
		t.Fatalf("calls %v: want a failed call and a retry", p.firsts)
	}
	if p.firsts[1] <= p.cp {
		t.Fatalf("the retry started at %s, at or before the checkpoint %s", p.firsts[1], p.cp)
	}
}

// deafProcessor blocks in ProcessRecords and ignores its context.
type deafProcessor struct {
	testProcessor
	release chan struct{}
}

func (p *deafProcessor) ProcessRecords(context.Context, ProcessRecordsInput) error {
	<-p.release
	return nil
}

// Shutdown ends even when a processor ignores its context; the worker is then not
// marked gone, so nobody takes that lease while the processor may still run.
func TestShutdownEndsWhenAProcessorIgnoresItsContext(t *testing.T) {
	c := newCluster(t, 1)
	c.base.ShutdownTimeout = time.Second
	p := &deafProcessor{testProcessor: testProcessor{c: c, worker: "w0"}, release: make(chan struct{})}
	defer close(p.release)
	c.proc = func(string, string) RecordProcessor { return p }
	c.produce("r", 3)
	rw := c.start("w0")
	c.waitFor("w0 owns the shard", 5*time.Second, c.balanced(map[string]int{"w0": 1}))
	time.Sleep(300 * time.Millisecond) // the processor is blocked now
	start := time.Now()
	rw.cancel()
	select {
	case <-rw.done:
	case <-time.After(c.base.ShutdownTimeout + c.base.LeaseDuration):
		t.Fatal("shutdown did not end")
	}
	c.mu.Lock()
	delete(c.workers, "w0")
	c.mu.Unlock()
	if d := time.Since(start); d > c.base.ShutdownTimeout+c.base.LeaseDuration/2 {
		t.Fatalf("shutdown took %s", d)
	}
	for _, r := range c.meta.Snapshot().Workers {
		if r.WorkerID == "w0" && r.State == lease.WorkerGone {
			t.Fatal("worker marked gone while a processor may still run")
		}
	}
	if l := c.leases.Snapshot().Leases[0]; l.Owner != "w0" {
		t.Fatalf("lease %+v: want it left to expire, still owned by w0", l)
	}
}

// A second process with the same worker id waits while the first one is alive instead of
// taking its leases as "an earlier run" of itself.
func TestASecondProcessWithTheSameIDWaits(t *testing.T) {
	c := newCluster(t, 2)
	first := c.start("w0")
	c.waitFor("w0 owns 2", 5*time.Second, c.balanced(map[string]int{"w0": 2}))
	c.mu.Lock()
	delete(c.workers, "w0")
	c.mu.Unlock()
	before := c.leases.Snapshot().Leases
	second := c.start("w0")
	time.Sleep(3 * c.base.LeaseDuration)
	for i, l := range c.leases.Snapshot().Leases {
		if l.Epoch != before[i].Epoch {
			t.Fatalf("lease %s changed epoch %d -> %d while the first process ran", l.ShardID, before[i].Epoch, l.Epoch)
		}
	}
	if st := second.w.Status(); st.Ready || len(st.Leases) > 0 {
		t.Fatalf("second process status %+v: want not ready, no leases", st)
	}
	// The first one dies (cut off for good): the second takes over.
	first.cut.cut.Store(true)
	first.cancel()
	c.waitFor("the second process runs both shards", 10*time.Second, func() bool { return len(second.w.Status().Leases) == 2 })
	<-first.done
}

// failNthList fails the nth ListLeases call only.
type failNthList struct {
	LeaseStore
	calls *atomic.Int64
	n     int64
}

func (f failNthList) ListLeases(ctx context.Context) (lease.Table, error) {
	if f.calls.Add(1) == f.n {
		return lease.Table{}, errors.New("transient error")
	}
	return f.LeaseStore.ListLeases(ctx)
}

// A worker below its target whose lease-table read failed reads it again on the next
// pass, not a LeaseScanInterval later.
func TestAFailedLeaseScanIsRetriedOnTheNextPass(t *testing.T) {
	c := newCluster(t, 4)
	c.base.LeaseScanInterval = 20 * time.Second
	var calls atomic.Int64
	// The coordinator's shard sync reads the table first; the worker's first scan second.
	c.wrapLeases = func(l LeaseStore) LeaseStore { return failNthList{l, &calls, 2} }
	c.start("w0")
	c.waitFor("w0 owns 4", 3*time.Second, c.balanced(map[string]int{"w0": 4}))
	if calls.Load() < 2 {
		t.Fatalf("%d lease-table reads: the failure was never injected", calls.Load())
	}
}
