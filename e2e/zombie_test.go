package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// checkpointRank orders checkpoints: the initial positions before every sequence
// number, SHARD_END after all of them.
func checkpointRank(cp string) (*big.Int, error) {
	switch cp {
	case lease.TrimHorizon, lease.Latest, lease.AtTimestamp:
		return big.NewInt(-1), nil
	case lease.ShardEnd:
		return new(big.Int).Lsh(big.NewInt(1), 200), nil
	}
	n, ok := seqNum(cp)
	if !ok {
		return nil, fmt.Errorf("checkpoint %q is not a sequence number", cp)
	}
	return n, nil
}

// checkpointWatch samples the lease table every 100ms and records every time a shard's
// checkpoint moved backwards.
type checkpointWatch struct {
	c       *cluster
	stopCh  chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples int
	errs    []string
}

func watchCheckpoints(c *cluster) *checkpointWatch {
	w := &checkpointWatch{c: c, stopCh: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *checkpointWatch) run() {
	defer close(w.done)
	last := map[string]string{}
	for {
		select {
		case <-w.stopCh:
			return
		case <-time.After(100 * time.Millisecond):
		}
		tab, err := w.c.leases()
		if err != nil {
			continue // tables not created yet
		}
		w.mu.Lock()
		w.samples++
		for _, l := range tab.Leases {
			now, err := checkpointRank(l.Checkpoint)
			if err != nil {
				w.errs = append(w.errs, fmt.Sprintf("%s: %v", l.ShardID, err))
				continue
			}
			if prev, ok := last[l.ShardID]; ok {
				before, _ := checkpointRank(prev)
				if now.Cmp(before) < 0 {
					w.errs = append(w.errs, fmt.Sprintf("%s: checkpoint moved backwards from %s to %s (owner %s, counter %d)",
						l.ShardID, prev, l.Checkpoint, l.Owner, l.Epoch))
				}
			}
			last[l.ShardID] = l.Checkpoint
		}
		w.mu.Unlock()
	}
}

func (w *checkpointWatch) stop() (samples int, errs []string) {
	close(w.stopCh)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.errs
}

// TestPausedWorkerIsFenced proves that a worker paused for longer than the lease
// (SIGSTOP, like a long GC pause or a frozen VM) cannot do harm when it wakes up: the
// others take its shards while it sleeps, and after SIGCONT it logs that it lost its
// leases, never moves a checkpoint backwards (the lease table, sampled every 100ms
// during the whole test, shows every shard's checkpoint only growing), does not process
// records under its old lease epochs, and then rejoins the group.
//
// To make the pause land where it hurts, the zombie's GetRecords calls are held (by its
// edge) from just before SIGSTOP until 1.5s after SIGCONT: its shard consumers are then
// inside a read when the process stops, and the read returns only after the worker had
// time to renew its heartbeat. A pause can always hit a consumer there; without the hold
// the test shows the same only now and then.
func TestPausedWorkerIsFenced(t *testing.T) {
	t.Parallel()
	const leaseDuration = 3 * time.Second
	c := newCluster(t, 12, leaseDuration)
	watch := watchCheckpoints(c)
	p := newProducer(t, c)
	p.Start(5)
	ws := []*worker{c.startWorker("w1"), c.startWorker("w2"), c.startWorker("zombie")}
	zombie := ws[2]
	c.waitBalanced(60*time.Second, 12, 4, ids(ws)...)
	oldEpochs := heldBy(t, c, zombie.ID)

	release := hold(zombie, harness.Rule{Service: localengines.Kinesis, Operation: "GetRecords"})
	defer release()
	time.Sleep(time.Second) // every consumer of the zombie is now inside a GetRecords call
	stopped := time.Now()
	must(t, c.Pause(zombie.ID))
	// While it sleeps, the others take its shards under newer epochs.
	taken := waitFor(t, 30*time.Second, "the other workers to own all 12 shards", func() (bool, string) {
		o, err := c.ownership()
		if err != nil {
			return false, err.Error()
		}
		return o.unowned == 0 && o.byOwner["w1"]+o.byOwner["w2"] == 12, o.String()
	})
	t.Logf("MEASURED SIGSTOP -> others own all shards (lease duration %s): %s", leaseDuration, since(stopped, taken))
	time.Sleep(time.Until(stopped.Add(8 * time.Second)))
	o, err := c.ownership()
	if err != nil {
		t.Fatal(err)
	}
	for s, old := range oldEpochs {
		if o.owner[s] == zombie.ID || o.counter[s] <= old {
			t.Errorf("shard %s: owner %q counter %d while the zombie sleeps; it held it at %d", s, o.owner[s], o.counter[s], old)
		}
	}

	resumed := time.Now()
	must(t, c.Resume(zombie.ID))
	time.Sleep(1500 * time.Millisecond)
	release()
	waitFor(t, 20*time.Second, "the resumed worker to log that it lost its leases", func() (bool, string) {
		n := countLogs([]*worker{zombie}, func(e logEntry) bool {
			return e.Msg == "lease lost" || strings.HasPrefix(e.Msg, "could not renew the heartbeat in time")
		})
		return sum(n) > 0, "no fencing or lease-lost line yet"
	})
	// It comes back as a healthy worker and gets its share again.
	rejoined := c.waitBalanced(60*time.Second, 12, 4, ids(ws)...)
	t.Logf("MEASURED SIGCONT -> zombie rejoined, 4/4/4: %s", since(resumed, rejoined))
	sent, _, recs := c.drain(p, 2*time.Second, 60*time.Second)

	samples, errs := watch.stop()
	if samples < 50 {
		t.Errorf("only %d samples of the lease table; the checkpoint check proves little", samples)
	}
	for _, e := range errs {
		t.Error(e)
	}
	// Every batch the zombie processes after it woke up is one its consumers read after
	// the others had taken their shards: none may be processed under the old epochs.
	stale := map[string]int{}
	for _, r := range recs {
		if old, ok := oldEpochs[r.Shard]; ok && r.Worker == zombie.ID && r.Epoch <= old && r.T > resumed.UnixNano() {
			stale[r.Shard]++
		}
	}
	for shard, n := range stale {
		t.Errorf("after SIGCONT the zombie processed %d records of %s under its old epoch %d, which another worker held by then",
			n, shard, oldEpochs[shard])
	}
	t.Logf("%d lease table samples, %d records produced, 0 lost", samples, len(sent))
}

// TestStaleCheckpointRefused proves the store-level fence directly: once "b" took a
// lease from "a", a checkpoint written with a's lease (its old owner and counter) is
// refused with lease.ErrConflict and leaves the stored checkpoint as b wrote it.
func TestStaleCheckpointRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, err := dynamostore.New(enginetest.DynamoDB(t), enginetest.UniqueName(t, "app"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.DeleteTables(context.Background()); err != nil {
			t.Logf("delete tables: %v", err)
		}
	})
	const shard = "shardId-000000000000"
	if err := store.CreateLease(ctx, lease.Lease{ShardID: shard, Checkpoint: lease.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	free, err := store.GetLease(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.TakeLease(ctx, free, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Checkpoint(ctx, a, lease.ExtendedSequenceNumber{SequenceNumber: "100"}, -1); err != nil {
		t.Fatalf("owner's checkpoint: %v", err)
	}
	b, err := store.TakeLease(ctx, a, "b")
	if err != nil {
		t.Fatal(err)
	}
	if b.Epoch <= a.Epoch {
		t.Fatalf("take by b: counter %d, want above a's %d", b.Epoch, a.Epoch)
	}
	if err := store.Checkpoint(ctx, b, lease.ExtendedSequenceNumber{SequenceNumber: "200"}, -1); err != nil {
		t.Fatalf("new owner's checkpoint: %v", err)
	}

	err = store.Checkpoint(ctx, a, lease.ExtendedSequenceNumber{SequenceNumber: "150"}, -1)
	if !errors.Is(err, lease.ErrConflict) {
		t.Fatalf("checkpoint with the stale lease: %v, want lease.ErrConflict", err)
	}
	if err := store.ReleaseLease(ctx, a, lease.ExtendedSequenceNumber{SequenceNumber: lease.ShardEnd}); !errors.Is(err, lease.ErrConflict) {
		t.Fatalf("release with the stale lease: %v, want lease.ErrConflict", err)
	}
	got, err := store.GetLease(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	if got.Checkpoint != "200" || got.Owner != "b" || got.Epoch != b.Epoch {
		t.Errorf("stored lease after the stale writes: %+v, want b's checkpoint 200 at counter %d", got, b.Epoch)
	}
}

// fenceWhenCut starts three workers on 12 shards, the third with a 3s lease (the others
// keep the default 10s, so they cannot take its leases before it fenced itself and
// recovered), then holds the cut worker's DynamoDB requests that match rule. It returns
// the cluster, the producer, the cut worker's shards, and when it was cut and when it
// stopped its shards (zero if it did not within fenceTimeout). The requests stay held
// until release is called.
func fenceWhenCut(t *testing.T, rule harness.Rule, fenceTimeout time.Duration) (c *cluster, p *producer, held map[string]int64, cutAt, fencedAt time.Time, release func()) {
	t.Helper()
	c = newCluster(t, 12, defaultLeaseDuration)
	p = newProducer(t, c)
	p.Start(5)
	ws := []*worker{c.startWorker("w1"), c.startWorker("w2"), c.startWorker("cut", "LEASE_DURATION=3s")}
	cut := ws[2]
	c.waitBalanced(60*time.Second, 12, 4, ids(ws)...)
	held = heldBy(t, c, cut.ID)

	release = hold(cut, rule)
	cutAt = time.Now()
	fenced := func(e logEntry) bool {
		return e.Msg == "lease lost" || strings.HasPrefix(e.Msg, "could not renew the heartbeat in time")
	}
	for time.Since(cutAt) < fenceTimeout {
		if sum(countLogs([]*worker{cut}, fenced)) > 0 {
			fencedAt = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c, p, held, cutAt, fencedAt, release
}

// TestDynamoDBOutageFencesWorker proves self-fencing under a network cut: a worker that
// cannot reach DynamoDB at all (heartbeats, checkpoints, reads) stops every shard, and
// tells its processors so, within its lease duration (3s here; 10s allowed), while the
// cut lasts, not only once DynamoDB is back.
func TestDynamoDBOutageFencesWorker(t *testing.T) {
	t.Parallel()
	_, _, _, cutAt, fencedAt, release := fenceWhenCut(t, harness.Rule{Service: localengines.DynamoDB}, 10*time.Second)
	defer release()
	if fencedAt.IsZero() {
		t.Fatalf("the worker cut off from DynamoDB did not stop its shards within 10s (lease duration 3s)")
	}
	t.Logf("MEASURED DynamoDB cut -> worker stopped its shards (lease duration 3s): %s", since(cutAt, fencedAt))
}

// TestHeartbeatOutageRecovers proves that a worker which fenced itself because its
// heartbeat writes failed resumes its shards soon after they succeed again. Its leases
// are still its own in the table and the others see it alive again, so nobody else will
// process those shards: it must.
func TestHeartbeatOutageRecovers(t *testing.T) {
	t.Parallel()
	c, p, held, cutAt, fencedAt, release := fenceWhenCut(t, harness.Rule{Service: localengines.DynamoDB, Operation: "PutItem"}, 10*time.Second)
	release()
	if fencedAt.IsZero() {
		t.Fatalf("the worker whose heartbeats failed did not stop its shards within 10s (lease duration 3s)")
	}
	restored := time.Now()
	t.Logf("MEASURED heartbeat writes cut -> worker stopped its shards (lease duration 3s): %s", since(cutAt, fencedAt))

	var last int64
	waitFor(t, 10*time.Second, "every shard of the fenced worker processing again after its heartbeats succeed", func() (bool, string) {
		recs, err := c.records()
		if err != nil {
			return false, err.Error()
		}
		first := firstPerShard(recs, func(r harness.Delivery) bool { return r.T > restored.UnixNano() })
		var idle []string
		last = 0
		for s := range held {
			if ts, ok := first[s]; ok {
				last = max(last, ts)
			} else {
				idle = append(idle, s)
			}
		}
		sort.Strings(idle)
		o, _ := c.ownership()
		return len(idle) == 0, fmt.Sprintf("idle shards %v; lease table: %s", idle, o)
	})
	t.Logf("MEASURED heartbeat back -> every shard of the fenced worker processing again: %s", since(restored, time.Unix(0, last)))
	c.drain(p, 0, 60*time.Second)
}
