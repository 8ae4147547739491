// Package e2e runs the kds-consumer binary as real worker processes against the local
// Kinesis and DynamoDB engines and checks, from the outside, what the lease manager
// promises: balanced leases, one coordinator, fast and safe fail-over, no lost records,
// no duplicates on planned moves, fencing of stale owners, and parents before children.
//
// Workers, their edges (where a test holds a worker's requests), the producer and the
// record logs are internal/harness's; observers read the lease and metadata tables
// directly (dynamostore). This file binds them to a test; each test file states what it
// proves.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/proc"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// workerBin and ctlBin are the kds-consumer and kdsctl binaries built once by TestMain.
var workerBin, ctlBin string

func TestMain(m *testing.M) {
	var err error
	if workerBin, ctlBin, err = buildBinaries(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot build the binaries: %v\n", err)
		os.Exit(1)
	}
	// The engines for every test, and a real kube-apiserver for the Kubernetes ones.
	os.Exit(kubetest.Run(kubetest.RunnerFunc(func() int { return enginetest.Run(m) })))
}

// buildBinaries builds the binaries into a per-user directory under the temp dir.
// enginetest.Main ends the process with os.Exit, so they cannot be removed when the tests
// end; instead their directory is named after this process, and those of earlier runs
// that are no longer running are removed here.
func buildBinaries() (string, string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("kds-e2e-%d", os.Getuid()))
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return harness.BuildBinaries(ctx, filepath.Join(dir, strconv.Itoa(os.Getpid())))
}

// Default worker settings: LeaseDuration is the value the product's numbers are quoted
// for.
const (
	defaultLeaseDuration = 10 * time.Second
	idleBetweenReads     = "200ms"
)

// cluster is one application (stream, lease and metadata tables) and its workers, each
// behind its own edge.
type cluster struct {
	*harness.Cluster
	t      *testing.T
	stream string
	app    string
	kin    *kinesis.Client
	store  *dynamostore.Store
}

// newCluster creates a stream with the given number of shards (none if 0) and names an
// application for this test alone. Workers left running are killed when the test ends,
// and their log tails are printed if it failed.
func newCluster(t *testing.T, shards int, leaseDuration time.Duration) *cluster {
	t.Helper()
	return newClusterOn(t, enginetest.UniqueName(t, "s"), shards, leaseDuration)
}

// newClusterOn is newCluster on the named stream, created unless shards is 0: a second
// application on the stream of another cluster sees the same records.
func newClusterOn(t *testing.T, stream string, shards int, leaseDuration time.Duration) *cluster {
	t.Helper()
	c := &cluster{
		t:      t,
		stream: stream,
		app:    enginetest.UniqueName(t, "app"),
		kin:    enginetest.Kinesis(t),
	}
	hc, err := harness.NewCluster(harness.ClusterConfig{
		WorkerBin: workerBin, CtlBin: ctlBin, Upstream: enginetest.Endpoint(), Region: enginetest.Region,
		Stream: c.stream, App: c.app, Dir: t.TempDir(), LeaseDuration: leaseDuration,
		WorkerEnv: []string{"IDLE_TIME_BETWEEN_READS=" + idleBetweenReads},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Cluster = hc
	if c.store, err = dynamostore.New(enginetest.DynamoDB(t), c.app); err != nil {
		t.Fatal(err)
	}
	if shards > 0 {
		enginetest.CreateStream(t, c.stream, shards)
	}
	t.Cleanup(c.cleanup)
	return c
}

func (c *cluster) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Close(ctx, 0); err != nil {
		c.t.Logf("stop workers: %v", err)
	}
	if c.t.Failed() {
		for _, w := range c.Workers() {
			c.t.Logf("--- log tail of worker %s (%s) ---\n%s", w.ID, w.Process().State(), tail(w.Process().LogPath(), 40))
		}
		c.keepLogs()
	}
	if err := c.store.DeleteTables(ctx); err != nil {
		c.t.Logf("delete tables: %v", err)
	}
}

// keepLogs copies the worker and record logs of a failed test out of its temporary
// directory, for a closer look.
func (c *cluster) keepLogs() {
	dst := filepath.Join(os.TempDir(), "kds-e2e-failures", fmt.Sprintf("%s-%s", unsafePath.Replace(c.t.Name()), time.Now().Format("150405")))
	if err := os.CopyFS(dst, os.DirFS(c.Config().Dir)); err != nil {
		c.t.Logf("keep logs: %v", err)
		return
	}
	c.t.Logf("worker logs and record logs kept in %s", dst)
}

var unsafePath = strings.NewReplacer("/", "_", " ", "_")

// worker is one worker process of a test (a test starts each worker id once).
type worker struct {
	*harness.Worker
	*proc.Process
}

func (c *cluster) worker(id string) *worker {
	c.t.Helper()
	w, err := c.Worker(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return &worker{w, w.Process()}
}

// startWorker starts a worker; env ("KEY=value") wins over the cluster's settings. Its
// output goes to <Dir>/logs/<id>.log.
func (c *cluster) startWorker(id string, env ...string) *worker {
	c.t.Helper()
	if err := c.Start(id, env...); err != nil {
		c.t.Fatal(err)
	}
	return c.worker(id)
}

// startWorkers starts the workers in order as fast as possible and returns them with the
// time the last one was started.
func (c *cluster) startWorkers(ids ...string) ([]*worker, time.Time) {
	c.t.Helper()
	ws := make([]*worker, len(ids))
	for i, id := range ids {
		ws[i] = c.startWorker(id)
	}
	return ws, time.Now()
}

// runWorker runs a worker that is expected to exit by itself and returns it after it
// exited (or fails the test after timeout). Its stderr is in w.Output().
func (c *cluster) runWorker(id string, timeout time.Duration, env ...string) (*worker, time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	if _, err := c.Run(ctx, id, env...); err != nil {
		c.t.Fatalf("worker %s did not exit within %s: %v", id, timeout, err)
	}
	return c.worker(id), time.Since(start)
}

// runFailing runs worker w1 until it exits (within timeout) and fails the test unless it
// exited with a non-zero status; it logs the exit and returns the worker's standard error
// and how long it ran.
func (c *cluster) runFailing(timeout time.Duration, env ...string) (stderr string, took time.Duration) {
	c.t.Helper()
	w, took := c.runWorker("w1", timeout, env...)
	stderr = w.Output()
	if w.ExitCode() <= 0 {
		c.t.Errorf("exit %s, want a non-zero status", w.State())
	}
	c.t.Logf("exit %d after %s: %s", w.ExitCode(), took.Round(time.Millisecond), lastLine(stderr))
	return stderr, took
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// kill9 kills the worker with SIGKILL and waits until it is gone.
func (c *cluster) kill9(w *worker) {
	c.t.Helper()
	if err := c.Kill(context.Background(), w.ID); err != nil {
		c.t.Fatalf("kill -9 %s: %v", w.ID, err)
	}
}

// sigterm sends SIGTERM and waits up to timeout for the exit; it returns how long the
// worker took and fails the test unless it exited with status 0.
func (c *cluster) sigterm(w *worker, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	if err := c.Terminate(context.Background(), w.ID, timeout); err != nil {
		c.t.Fatal(err)
	}
	return time.Since(start)
}

// hold makes the worker's requests that match rule (a harness.FaultHang) wait until the
// returned release is called, like a stalled network path.
func hold(w *worker, rule harness.Rule) (release func()) {
	rule.Kind = harness.FaultHang
	return w.Edge.Injector().Add(rule)
}

// ---- Observers: direct reads of the lease and metadata tables. ----

func observeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (c *cluster) leases() (lease.Table, error) {
	ctx, cancel := observeCtx()
	defer cancel()
	return c.store.ListLeases(ctx)
}

func (c *cluster) meta() (lease.Meta, error) {
	ctx, cancel := observeCtx()
	defer cancel()
	return c.store.ReadMeta(ctx)
}

// ownership is the lease table summarised: leases per owner among unfinished leases.
type ownership struct {
	byOwner  map[string]int
	unowned  int
	finished int
	owner    map[string]string // shard -> owner ("" when free)
	counter  map[string]int64  // shard -> lease counter
}

func (c *cluster) ownership() (ownership, error) {
	tab, err := c.leases()
	if err != nil {
		return ownership{}, err
	}
	o := ownership{byOwner: map[string]int{}, owner: map[string]string{}, counter: map[string]int64{}}
	for _, l := range tab.Leases {
		o.owner[l.ShardID] = l.Owner
		o.counter[l.ShardID] = l.Epoch
		switch {
		case l.Finished():
			o.finished++
		case l.Owner == "":
			o.unowned++
		default:
			o.byOwner[l.Owner]++
		}
	}
	return o, nil
}

func (o ownership) String() string {
	return fmt.Sprintf("owners %v, unowned %d, finished %d", o.byOwner, o.unowned, o.finished)
}

// ownedBy returns the shards a worker owns.
func (o ownership) ownedBy(id string) []string {
	var out []string
	for s, w := range o.owner {
		if w == id {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// balanced reports whether exactly the given workers own leases, n each, and no
// unfinished lease is free.
func (o ownership) balanced(n int, ids ...string) bool {
	if o.unowned != 0 || len(o.byOwner) != len(ids) {
		return false
	}
	for _, id := range ids {
		if o.byOwner[id] != n {
			return false
		}
	}
	return true
}

func (c *cluster) coordinator() (*lease.CoordinatorRecord, error) {
	m, err := c.meta()
	if err != nil {
		return nil, err
	}
	return m.Coordinator, nil
}

func coordString(r *lease.CoordinatorRecord) string {
	if r == nil {
		return "no coordinator record"
	}
	return fmt.Sprintf("coordinator %q epoch %d: max %d target %d shards %d workers %d live %d",
		r.CoordinatorID, r.Epoch, r.MaxLeasesPerWorker, r.TargetLeasesPerWorker, r.ShardCount, r.WorkerCount, r.LiveWorkers)
}

// waitBalanced waits until the workers own n leases each and the coordinator record says
// max n for the given shard and worker counts; it returns when that was first seen.
func (c *cluster) waitBalanced(timeout time.Duration, shards, n int, ids ...string) time.Time {
	c.t.Helper()
	return waitFor(c.t, timeout, fmt.Sprintf("%d leases each for %v (max %d, %d shards)", n, ids, n, shards), func() (bool, string) {
		o, err := c.ownership()
		if err != nil {
			return false, err.Error()
		}
		r, err := c.coordinator()
		if err != nil {
			return false, err.Error()
		}
		ok := o.balanced(n, ids...) && r != nil && r.MaxLeasesPerWorker == n && r.ShardCount == shards && r.WorkerCount == len(ids)
		return ok, o.String() + "; " + coordString(r)
	})
}

// readiness is a worker's /ready answer.
type readiness struct {
	Ready       bool   `json:"ready"`
	WorkerID    string `json:"worker_id"`
	Coordinator bool   `json:"coordinator"`
	MaxLeases   int    `json:"max_leases"`
	Leases      int    `json:"leases"`
	ShardCount  int    `json:"shard_count"`
	WorkerCount int    `json:"worker_count"`
	LiveWorkers int    `json:"live_workers"`
}

func (w *worker) ready() (readiness, error) {
	_, body, err := w.Get(context.Background(), "/ready")
	if err != nil {
		return readiness{}, err
	}
	var r readiness
	if err := json.Unmarshal(body, &r); err != nil {
		return readiness{}, fmt.Errorf("decode /ready of %s: %w", w.ID, err)
	}
	return r, nil
}

// ---- Record logs: what the workers processed. ----

func (c *cluster) records() ([]harness.Delivery, error) {
	return harness.ReadRecordLogs(c.Config().RecordDir())
}

func (c *cluster) mustRecords() []harness.Delivery {
	c.t.Helper()
	recs, err := c.records()
	if err != nil {
		c.t.Fatalf("read record logs: %v", err)
	}
	return recs
}

// firstPerShard returns, per shard, the earliest processing time of a record that
// satisfies keep.
func firstPerShard(recs []harness.Delivery, keep func(harness.Delivery) bool) map[string]int64 {
	first := make(map[string]int64)
	for _, r := range recs {
		if keep != nil && !keep(r) {
			continue
		}
		if t, ok := first[r.Shard]; !ok || r.T < t {
			first[r.Shard] = r.T
		}
	}
	return first
}

// waitProcessedElsewhere waits until every shard in prev has a record processed by a
// worker other than victim under a newer lease epoch than prev[shard]; it returns the
// latest of those first processing times, i.e. when the last shard resumed elsewhere.
func (c *cluster) waitProcessedElsewhere(timeout time.Duration, victim string, prev map[string]int64) time.Time {
	c.t.Helper()
	var last int64
	waitFor(c.t, timeout, fmt.Sprintf("every shard of %s processed by another worker under a newer epoch", victim), func() (bool, string) {
		recs, err := c.records()
		if err != nil {
			return false, err.Error()
		}
		first := firstPerShard(recs, func(r harness.Delivery) bool {
			old, ok := prev[r.Shard]
			return ok && r.Worker != victim && r.Epoch > old
		})
		var missing []string
		last = 0
		for s := range prev {
			t, ok := first[s]
			if !ok {
				missing = append(missing, s)
			}
			last = max(last, t)
		}
		sort.Strings(missing)
		return len(missing) == 0, fmt.Sprintf("%d shards not yet resumed: %v", len(missing), missing)
	})
	return time.Unix(0, last)
}

// waitDelivered waits until every produced record appears in the record logs and returns
// the final comparison. It fails the test on lost or altered records.
func (c *cluster) waitDelivered(timeout time.Duration, sent []harness.Sent) (*delivery.Report, []harness.Delivery) {
	c.t.Helper()
	var d *delivery.Report
	var recs []harness.Delivery
	waitFor(c.t, timeout, fmt.Sprintf("all %d produced records in the record logs", len(sent)), func() (bool, string) {
		var err error
		recs, err = c.records()
		if err != nil {
			return false, err.Error()
		}
		d = delivery.Check(sent, recs)
		return len(d.Lost) == 0, fmt.Sprintf("%d lost, e.g. %v", len(d.Lost), d.Lost[:min(len(d.Lost), 5)])
	})
	if len(d.Mismatched) > 0 {
		c.t.Fatalf("%d records processed with other content than produced: %v", len(d.Mismatched), d.Mismatched[:min(5, len(d.Mismatched))])
	}
	return d, recs
}

// drain lets background production run for settle more and stops it, then waits up to
// timeout until every record sent was processed (see waitDelivered); it returns the
// records sent, the comparison and the processed records.
func (c *cluster) drain(p *producer, settle, timeout time.Duration) ([]harness.Sent, *delivery.Report, []harness.Delivery) {
	c.t.Helper()
	time.Sleep(settle)
	if p.Running() {
		p.stop()
	}
	sent := p.Sent()
	d, recs := c.waitDelivered(timeout, sent)
	return sent, d, recs
}

// ---- Worker logs. ----

// logEntry is one JSON line of a worker's log.
type logEntry struct {
	Msg   string
	Level string
	Attrs map[string]any
}

// logEntries parses a worker's log; lines that are not JSON (a panic trace) are kept
// with their text in Msg and level "RAW".
func logEntries(path string) []logEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			out = append(out, logEntry{Msg: sc.Text(), Level: "RAW"})
			continue
		}
		msg, _ := m["msg"].(string)
		level, _ := m["level"].(string)
		out = append(out, logEntry{Msg: msg, Level: level, Attrs: m})
	}
	return out
}

// countLogs counts log lines of the given workers whose message satisfies match.
func countLogs(ws []*worker, match func(logEntry) bool) map[string]int {
	n := make(map[string]int)
	for _, w := range ws {
		for _, e := range logEntries(w.LogPath()) {
			if match(e) {
				n[w.ID]++
			}
		}
	}
	return n
}

func msgIs(msg string) func(logEntry) bool {
	return func(e logEntry) bool { return e.Msg == msg }
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ---- Producer. ----

// producer is a harness.Producer bound to a test: errors fail it.
type producer struct {
	*harness.Producer
	t *testing.T
}

// newProducer returns a producer on c's stream with a key bound to every open shard.
func newProducer(t *testing.T, c *cluster) *producer {
	p := &producer{harness.NewProducer(c.kin, c.stream), t}
	t.Cleanup(func() {
		if p.Running() {
			p.stop()
		}
	})
	p.bindKeys()
	return p
}

// bindKeys adds a key for every open shard that has none yet; see harness.Producer.
func (p *producer) bindKeys() []string {
	p.t.Helper()
	added, err := p.BindKeys(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	return added
}

// putRound puts one record for every key, rounds times.
func (p *producer) putRound(rounds int) {
	p.t.Helper()
	if err := p.PutRound(context.Background(), rounds); err != nil {
		p.t.Fatal(err)
	}
}

// stop ends background production and fails the test if it failed.
func (p *producer) stop() {
	p.t.Helper()
	if err := p.Stop(); err != nil {
		p.t.Error(err)
	}
}

// ---- Helpers. ----

// waitFor polls cond every 100ms until it holds and returns when it first held; after
// timeout it fails the test with what and cond's last description of the state.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// seqNum parses a Kinesis sequence number.
func seqNum(s string) (*big.Int, bool) { return new(big.Int).SetString(s, 10) }

// since formats d for the MEASURED lines.
func since(from, to time.Time) string { return to.Sub(from).Round(10 * time.Millisecond).String() }

func ids(ws []*worker) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.ID
	}
	return out
}
