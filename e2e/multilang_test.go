package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// multiLangEnv runs the record processor of the npm package aws-kcl's KCL for Node.js
// (internal/localengines/kcl_recorder.js, written as aws-kcl's README shows) under
// kds-consumer's MultiLang mode.
func multiLangEnv(t *testing.T) []string {
	t.Helper()
	return []string{"MULTILANG_COMMAND=node " + kclScript(t), "MULTILANG_TIMEOUT=" + processorTimeout}
}

// processorTimeout is the action deadline of the tests' record processors: long enough
// for Node.js to start on a loaded machine, short enough to wait for once.
const processorTimeout = "8s"

// disturbProcessor sends sig to one of the record processor processes of w (not the one
// of shard skip) and waits until w restarted it; it returns its shard, when it was
// signalled and when it was restarted.
func disturbProcessor(t *testing.T, c *cluster, w *worker, sig syscall.Signal, skip string) (shard string, at, restarted time.Time) {
	t.Helper()
	for pid, s := range recordProcessors(t, c, w.ID) {
		if s != skip {
			must(t, syscall.Kill(pid, sig))
			shard = s
			break
		}
	}
	if shard == "" {
		t.Fatalf("%s runs no record processor other than %q's", w.ID, skip)
	}
	at = time.Now()
	restarted = waitFor(t, 60*time.Second, fmt.Sprintf("the record processor of %s restarted after %s", shard, sig), func() (bool, string) {
		n := countLogs([]*worker{w}, func(e logEntry) bool {
			return e.Msg == "record processor restarted from the last checkpoint" && e.Attrs["shard"] == shard
		})
		return n[w.ID] > 0, "not yet"
	})
	return shard, at, restarted
}

// kclScript installs aws-kcl and returns the recording record processor's path.
func kclScript(t *testing.T) string {
	t.Helper()
	script, err := localengines.InstallKCL(t.Context(), localengines.DefaultDir())
	if err != nil {
		t.Fatal(err)
	}
	return script
}

// kclProperties writes a KCL MultiLangDaemon properties file for c's stream and
// application, as a kcl-bootstrap deployment has it, and returns its path.
func kclProperties(t *testing.T, c *cluster) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sample.properties")
	text := "# The KCL for Node.js sample's properties, for this test's stream.\n" +
		"executableName = node " + kclScript(t) + "\n" +
		"streamName = " + c.stream + "\napplicationName = " + c.app + "\n" +
		"AWSCredentialsProvider = DefaultCredentialsProvider\nprocessingLanguage = nodejs/20\n" +
		"initialPositionInStream = TRIM_HORIZON\nregionName = " + c.Config().Region + "\ntimeoutInSeconds = 8\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMultiLangNodeKCL proves kds-consumer's MultiLang mode with the KCL for Node.js:
// three workers (one of them configured by a KCL properties file alone) run one aws-kcl
// record processor process per shard on a 6-shard stream while records flow. One record
// processor process is killed with kill -9, another stopped with SIGSTOP (it misses its
// action deadline and is killed): its worker restarts each from the last checkpoint; one
// worker is killed with kill -9 (its processes die with it, its shards
// resume elsewhere); another is stopped with SIGTERM (its processes get shutdownRequested
// and checkpoint; its shards resume elsewhere within seconds); and the stream is
// resharded 6 -> 12 (the processors get shardEnded; every parent lease reaches SHARD_END
// and every child is processed). In the end every produced record was processed (0 lost),
// a record was processed twice only if the killed worker processed it or it is on a
// disturbed processor's shard, and the checkpoint of every open shard is its last record.
func TestMultiLangNodeKCL(t *testing.T) {
	t.Parallel()
	env := multiLangEnv(t)
	c := newCluster(t, 6, defaultLeaseDuration)
	p := newProducer(t, c)
	p.Start(3) // 12 records per second
	ws := []*worker{c.startWorker("w1", env...), c.startWorker("w2", env...), c.startWorker("w3", env...)}
	c.waitBalanced(60*time.Second, 6, 2, ids(ws)...)
	waitFor(t, 30*time.Second, "a record processed on every one of the 6 shards", func() (bool, string) {
		n := len(firstPerShard(c.mustRecords(), nil))
		return n == 6, fmt.Sprintf("%d of 6 shards", n)
	})

	// kill -9 of one record processor process, and SIGSTOP of another (it misses its
	// action deadline and is killed): the worker restarts each from the last checkpoint,
	// and their shards go on.
	coord, _, _ := roles(t, c, ws)
	crashedShard, crashedAt, restarted := disturbProcessor(t, c, coord, syscall.SIGKILL, "")
	t.Logf("MEASURED MultiLang kill -9 of a record processor process -> restarted from the last checkpoint: %s", since(crashedAt, restarted))
	hungShard, hungAt, restarted := disturbProcessor(t, c, coord, syscall.SIGSTOP, crashedShard)
	t.Logf("MEASURED MultiLang SIGSTOP of a record processor process -> killed at its action deadline (%s) and restarted: %s", processorTimeout, since(hungAt, restarted))
	timedOut := countLogs([]*worker{coord}, func(e logEntry) bool {
		err, _ := e.Attrs["err"].(string)
		return e.Attrs["shard"] == hungShard && strings.Contains(err, "no answer within "+processorTimeout)
	})
	if timedOut[coord.ID] == 0 {
		t.Errorf("no log of the stopped record processor of %s missing its deadline", hungShard)
	}

	// kill -9: the worker's record processors die with it; its shards resume elsewhere.
	killed, survivors, killedShards := pickVictim(t, c, ws)
	if n := len(recordProcessors(t, c, killed.ID)); n != len(killedShards) {
		t.Errorf("%s runs %d record processor processes for its %d shards", killed.ID, n, len(killedShards))
	}
	c.kill9(killed)
	killedAt := time.Now()
	waitFor(t, 10*time.Second, "the killed worker's record processors to be gone", func() (bool, string) {
		pids := recordProcessors(t, c, killed.ID)
		return len(pids) == 0, fmt.Sprintf("still running: %v", pids)
	})
	resumed := c.waitProcessedElsewhere(60*time.Second, killed.ID, killedShards)
	t.Logf("MEASURED MultiLang kill -9 -> every shard of the killed worker processing elsewhere: %s", since(killedAt, resumed))

	// SIGTERM, with a third worker again: this one configured as a kcl-bootstrap
	// deployment is, by the KCL's properties file alone.
	w4 := c.startWorker("w4", "KCL_PROPERTIES="+kclProperties(t, c))
	ws = append(c.workersByID(survivors), w4)
	c.waitBalanced(60*time.Second, 6, 2, ids(ws)...)
	stopped, _, stoppedShards := pickVictim(t, c, ws)
	shutdowns := func() int {
		return countLogs([]*worker{stopped}, func(e logEntry) bool {
			return e.Msg == "record processor stopped" && e.Attrs["reason"] == "shutdown requested"
		})[stopped.ID]
	}
	before := shutdowns() // leases it gave up to rebalance
	termAt := time.Now()
	took := c.sigterm(stopped, 15*time.Second)
	handedOver := c.waitProcessedElsewhere(30*time.Second, stopped.ID, stoppedShards)
	t.Logf("MEASURED MultiLang SIGTERM -> process exited (status 0): %s", took.Round(10*time.Millisecond))
	t.Logf("MEASURED MultiLang SIGTERM -> every shard of the stopped worker processing elsewhere: %s", since(termAt, handedOver))
	if d := handedOver.Sub(termAt); d > 10*time.Second {
		t.Errorf("SIGTERM handover took %s, want a few seconds (3s with the Go processor)", d)
	}
	if n := len(recordProcessors(t, c, stopped.ID)); n != 0 {
		t.Errorf("%d record processors of %s still run after it exited", n, stopped.ID)
	}
	if n := shutdowns() - before; n != len(stoppedShards) {
		t.Errorf("on SIGTERM %s stopped %d record processors with shutdownRequested, want %d (its shards)", stopped.ID, n, len(stoppedShards))
	}

	// Reshard 6 -> 12: the parents' processors get shardEnded, then the children start.
	running := []*worker{}
	for _, w := range ws {
		if w != stopped {
			running = append(running, w)
		}
	}
	reshardAt := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c.reshardTo(ctx, 12)
	p.bindKeys()
	childrenProcessing := waitFor(t, 60*time.Second, "every parent at SHARD_END and a record processed on every child", func() (bool, string) {
		tab, err := c.leases()
		if err != nil {
			return false, err.Error()
		}
		first := firstPerShard(c.mustRecords(), nil)
		var todo []string
		children := 0
		for _, l := range tab.Leases {
			switch {
			case len(l.ParentShardIDs) == 0 && l.Checkpoint != lease.ShardEnd:
				todo = append(todo, l.ShardID+" not at SHARD_END")
			case len(l.ParentShardIDs) > 0:
				children++
				if first[l.ShardID] == 0 {
					todo = append(todo, l.ShardID+" not processed")
				}
			}
		}
		return len(todo) == 0 && children == 12, fmt.Sprintf("%d child leases; %v", children, todo)
	})
	t.Logf("MEASURED MultiLang reshard 6 -> 12 -> every parent at SHARD_END and every child processing: %s", since(reshardAt, childrenProcessing))
	ended := countLogs(running, func(e logEntry) bool {
		return e.Msg == "record processor stopped" && e.Attrs["reason"] == "shard ended"
	})
	if sum(ended) == 0 {
		t.Errorf("no record processor was stopped with shardEnded on the running workers: %v", ended)
	}

	sent, d, recs := c.drain(p, 2*time.Second, 90*time.Second)
	// A record processed twice was processed by the killed worker: its processors had not
	// checkpointed it. Nothing else is processed twice.
	byRef := map[string][]string{}
	for _, r := range recs {
		k := r.Shard + "/" + r.Seq
		byRef[k] = append(byRef[k], r.Worker)
	}
	dups := 0
	for ref, n := range d.Duplicated {
		dups += n - 1
		k := ref.Shard + "/" + ref.Seq
		if !slices.Contains(byRef[k], killed.ID) && ref.Shard != crashedShard && ref.Shard != hungShard {
			t.Errorf("record %s processed %d times by %v, none of them the killed worker %s, nor on the shard of the killed processor", k, n, byRef[k], killed.ID)
		}
	}
	t.Logf("MEASURED MultiLang proof (kill -9 and SIGSTOP of a processor, kill -9 of a worker, SIGTERM, reshard 6 -> 12): %d records produced, %d processed, %d lost, %d duplicated (%d extra deliveries, all after a kill -9)",
		len(sent), len(recs), len(d.Lost), len(d.Duplicated), dups)

	// The checkpoints landed: every open shard's lease is at its last record.
	lastSent := map[string]string{}
	for _, s := range sent {
		if n, ok := seqNum(s.Seq); ok {
			if m, ok := seqNum(lastSent[s.Shard]); !ok || n.Cmp(m) > 0 {
				lastSent[s.Shard] = s.Seq
			}
		}
	}
	waitFor(t, 20*time.Second, "every open shard's checkpoint at its last record", func() (bool, string) {
		tab, err := c.leases()
		if err != nil {
			return false, err.Error()
		}
		var behind []string
		for _, l := range tab.Leases {
			if l.Checkpoint != lease.ShardEnd && lastSent[l.ShardID] != "" && l.Checkpoint != lastSent[l.ShardID] {
				behind = append(behind, fmt.Sprintf("%s at %s, last record %s", l.ShardID, l.Checkpoint, lastSent[l.ShardID]))
			}
		}
		return len(behind) == 0, strings.Join(behind, "; ")
	})
	ignored := countLogs([]*worker{w4}, func(e logEntry) bool { return strings.Contains(e.Msg, "processingLanguage ignored") })
	started := countLogs([]*worker{w4}, msgIs("record processor started"))
	if ignored[w4.ID] != 1 || started[w4.ID] == 0 {
		t.Errorf("w4 (by its properties file): %d warnings about processingLanguage, %d record processors started; want 1 and some", ignored[w4.ID], started[w4.ID])
	}
	stderr := countLogs(running, msgIs("record processor stderr"))
	if sum(stderr) == 0 {
		t.Errorf("no line of the record processors' standard error reached the workers' logs")
	}
}

// workersByID returns the cluster's workers with the given ids.
func (c *cluster) workersByID(ids []string) []*worker {
	out := make([]*worker, len(ids))
	for i, id := range ids {
		out[i] = c.worker(id)
	}
	return out
}

// recordProcessors returns the record processor processes (pid -> shard) that worker id
// of this cluster started and that still run (by their environment: KDS_WORKER_ID and the
// cluster's record directory).
func recordProcessors(t *testing.T, c *cluster, id string) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	wantWorker := "KDS_WORKER_ID=" + id
	wantDir := "RECORD_LOG_DIR=" + c.Config().RecordDir()
	procs := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		if !slices.Contains(vars, wantWorker) || !slices.Contains(vars, wantDir) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
			for _, v := range vars {
				if shard, ok := strings.CutPrefix(v, "KDS_SHARD_ID="); ok {
					procs[pid] = shard
				}
			}
		}
	}
	return procs
}
