// Package e2e runs the kds-consumer binary as real worker processes against the local
// Kinesis and DynamoDB engines and checks, from the outside, what the lease manager
// promises: balanced leases, one coordinator, fast and safe fail-over, no lost records,
// no duplicates on planned moves, fencing of stale owners, and parents before children.
//
// Observers read the lease and metadata tables directly (dynamostore) and the record log
// every worker writes (RECORD_LOG_DIR). The harness in this file starts and signals
// workers, produces records and parses the logs; each test file states what it proves.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/kubetest"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// workerBinary is the kds-consumer binary built once by TestMain.
var workerBinary string

func TestMain(m *testing.M) {
	bin, err := buildWorker()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot build ./cmd/kds-consumer: %v\n", err)
		os.Exit(1)
	}
	workerBinary = bin
	// The engines for every test, and a real kube-apiserver for the Kubernetes ones.
	os.Exit(kubetest.Run(kubetest.RunnerFunc(func() int { return enginetest.Run(m) })))
}

// buildWorker builds ./cmd/kds-consumer into a per-user directory under the temp dir.
// enginetest.Main ends the process with os.Exit, so the binary cannot be removed when
// the tests end; instead it is named after this process and binaries left by earlier
// runs that are no longer running are removed here.
func buildWorker() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("kds-e2e-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	removeStaleBinaries(dir)
	bin := filepath.Join(dir, fmt.Sprintf("kds-consumer-%d", os.Getpid()))
	cmd := exec.Command("go", "build", "-o", bin, "github.com/kds-lease-manager/kds-lease-manager/cmd/kds-consumer")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

func removeStaleBinaries(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "kds-consumer-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Default worker settings: LeaseDuration is the value the product's numbers are quoted
// for.
const (
	defaultLeaseDuration = 10 * time.Second
	idleBetweenReads     = "200ms"
)

// cluster is one application (stream, lease and metadata tables) and its workers.
type cluster struct {
	t             *testing.T
	stream        string
	app           string
	recordDir     string
	logDir        string
	leaseDuration time.Duration
	kin           *kinesis.Client
	store         *dynamostore.Store

	mu      sync.Mutex
	workers map[string]*worker
}

// newCluster creates a stream with the given number of shards (none if 0) and names an
// application for this test alone. Workers left running are killed when the test ends,
// and their log tails are printed if it failed.
func newCluster(t *testing.T, shards int, leaseDuration time.Duration) *cluster {
	t.Helper()
	c := &cluster{
		t:             t,
		stream:        enginetest.UniqueName(t, "s"),
		app:           enginetest.UniqueName(t, "app"),
		recordDir:     filepath.Join(t.TempDir(), "records"),
		logDir:        t.TempDir(),
		leaseDuration: leaseDuration,
		kin:           enginetest.Kinesis(t),
		workers:       make(map[string]*worker),
	}
	store, err := dynamostore.New(enginetest.DynamoDB(t), c.app)
	if err != nil {
		t.Fatal(err)
	}
	c.store = store
	if shards > 0 {
		enginetest.CreateStream(t, c.stream, shards)
	}
	t.Cleanup(c.cleanup)
	return c
}

func (c *cluster) cleanup() {
	c.mu.Lock()
	workers := slices.Collect(maps.Values(c.workers))
	c.mu.Unlock()
	for _, w := range workers {
		if !w.exited() {
			_ = w.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only when resumed
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	}
	if c.t.Failed() {
		sort.Slice(workers, func(i, j int) bool { return workers[i].id < workers[j].id })
		for _, w := range workers {
			c.t.Logf("--- log tail of worker %s (%s) ---\n%s", w.id, w.state(), tail(w.logPath, 40))
		}
		c.keepLogs()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.store.DeleteTables(ctx); err != nil {
		c.t.Logf("delete tables: %v", err)
	}
}

// keepLogs copies the worker and record logs of a failed test out of its temporary
// directories, for a closer look.
func (c *cluster) keepLogs() {
	dst := filepath.Join(os.TempDir(), "kds-e2e-failures", fmt.Sprintf("%s-%s", unsafePath.Replace(c.t.Name()), time.Now().Format("150405")))
	for name, src := range map[string]string{"logs": c.logDir, "records": c.recordDir} {
		if err := os.CopyFS(filepath.Join(dst, name), os.DirFS(src)); err != nil {
			c.t.Logf("keep %s: %v", name, err)
			return
		}
	}
	c.t.Logf("worker logs and record logs kept in %s", dst)
}

var unsafePath = strings.NewReplacer("/", "_", " ", "_")

// worker is one running kds-consumer process.
type worker struct {
	id         string
	logPath    string
	healthAddr string
	cmd        *exec.Cmd
	started    time.Time
	done       chan struct{} // closed when the process has exited and been reaped
	stderr     *bytes.Buffer // set only for processes run with runWorker
}

func (w *worker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status after the process ended; -1 for death by a signal.
func (w *worker) exitCode() int { return w.cmd.ProcessState.ExitCode() }

func (w *worker) state() string {
	if w.exited() {
		return w.cmd.ProcessState.String()
	}
	return "running"
}

// workerEnv is the environment of a worker process; extra ("KEY=value") wins over it.
func (c *cluster) workerEnv(id, healthAddr string, extra []string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + c.logDir, // no ~/.aws of the developer's
		"AWS_ENDPOINT_URL=" + enginetest.Endpoint(),
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=" + enginetest.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"STREAM_NAME=" + c.stream,
		"APP_NAME=" + c.app,
		"WORKER_ID=" + id,
		"HEALTH_ADDR=" + healthAddr,
		"RECORD_LOG_DIR=" + c.recordDir,
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"LEASE_DURATION=" + c.leaseDuration.String(),
		"IDLE_TIME_BETWEEN_READS=" + idleBetweenReads,
	}
	return append(env, extra...)
}

// startWorker spawns a worker; its stdout and stderr go to <logDir>/<id>.log.
func (c *cluster) startWorker(id string, extraEnv ...string) *worker {
	c.t.Helper()
	addr := freeAddr(c.t)
	logPath := filepath.Join(c.logDir, id+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(workerBinary)
	cmd.Env = c.workerEnv(id, addr, extraEnv)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	w := &worker{id: id, logPath: logPath, healthAddr: addr, cmd: cmd, done: make(chan struct{})}
	c.spawn(w)
	return w
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

func (c *cluster) spawn(w *worker) {
	c.t.Helper()
	c.mu.Lock()
	if _, dup := c.workers[w.id]; dup {
		c.mu.Unlock()
		c.t.Fatalf("worker %s started twice", w.id)
	}
	c.workers[w.id] = w
	c.mu.Unlock()
	if err := w.cmd.Start(); err != nil {
		close(w.done)
		c.t.Fatalf("start worker %s: %v", w.id, err)
	}
	w.started = time.Now()
	go func() {
		_ = w.cmd.Wait()
		close(w.done)
	}()
}

// runWorker runs a worker that is expected to exit by itself and returns it after it
// exited (or fails the test after timeout). Its stderr is kept in w.stderr.
func (c *cluster) runWorker(id string, timeout time.Duration, extraEnv ...string) (*worker, time.Duration) {
	c.t.Helper()
	cmd := exec.Command(workerBinary)
	cmd.Env = c.workerEnv(id, freeAddr(c.t), extraEnv)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = procAttr()
	w := &worker{id: id, cmd: cmd, done: make(chan struct{}), stderr: &stderr}
	start := time.Now()
	c.spawn(w)
	select {
	case <-w.done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-w.done
		c.t.Fatalf("worker %s did not exit within %s; stderr:\n%s", id, timeout, stderr.String())
	}
	return w, time.Since(start)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// kill9 kills the worker with SIGKILL and waits until it is gone.
func (c *cluster) kill9(w *worker) {
	c.t.Helper()
	if err := w.cmd.Process.Kill(); err != nil {
		c.t.Fatalf("kill -9 %s: %v", w.id, err)
	}
	<-w.done
}

// sigterm sends SIGTERM and waits up to timeout for the exit; it returns how long the
// worker took and fails the test unless it exited with status 0.
func (c *cluster) sigterm(w *worker, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM %s: %v", w.id, err)
	}
	select {
	case <-w.done:
	case <-time.After(timeout):
		c.t.Fatalf("worker %s did not exit within %s of SIGTERM", w.id, timeout)
	}
	took := time.Since(start)
	if code := w.exitCode(); code != 0 {
		c.t.Fatalf("worker %s exited with %s after SIGTERM, want status 0", w.id, w.cmd.ProcessState)
	}
	return took
}

func (c *cluster) signal(w *worker, sig syscall.Signal) {
	c.t.Helper()
	if err := w.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to %s: %v", sig, w.id, err)
	}
}

func (c *cluster) sigstop(w *worker) { c.t.Helper(); c.signal(w, syscall.SIGSTOP) }
func (c *cluster) sigcont(w *worker) { c.t.Helper(); c.signal(w, syscall.SIGCONT) }

// ---- Gate proxy: a worker's view of the network. ----

// gateProxy forwards one worker's AWS requests to the engines and can hold the requests
// of chosen operations (by X-Amz-Target prefix) until released, like a stalled network
// path.
type gateProxy struct {
	url   string
	proxy *httputil.ReverseProxy

	mu    sync.Mutex
	holds map[string]chan struct{} // target prefix -> closed on release
}

func newGateProxy(t *testing.T) *gateProxy {
	t.Helper()
	backend, err := url.Parse(enginetest.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	g := &gateProxy{proxy: httputil.NewSingleHostReverseProxy(backend), holds: map[string]chan struct{}{}}
	g.proxy.ErrorLog = log.New(io.Discard, "", 0) // a worker giving up on a held call is expected
	srv := httptest.NewServer(g)
	g.url = srv.URL
	t.Cleanup(func() {
		g.releaseAll()
		srv.Close()
	})
	return g
}

func (g *gateProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	g.mu.Lock()
	var wait chan struct{}
	for prefix, ch := range g.holds {
		if strings.HasPrefix(target, prefix) {
			wait = ch
		}
	}
	g.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-r.Context().Done():
		}
		if r.Context().Err() != nil {
			// The worker gave up on the call: do not send the engine a request whose
			// client is gone (a burst of those has crashed dynalite).
			return
		}
	}
	g.proxy.ServeHTTP(w, r)
}

// hold makes requests whose X-Amz-Target starts with prefix wait until release.
func (g *gateProxy) hold(prefix string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.holds[prefix]; !ok {
		g.holds[prefix] = make(chan struct{})
	}
}

// release lets held and later requests for prefix through.
func (g *gateProxy) release(prefix string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch, ok := g.holds[prefix]; ok {
		close(ch)
		delete(g.holds, prefix)
	}
}

func (g *gateProxy) releaseAll() {
	g.mu.Lock()
	prefixes := slices.Collect(maps.Keys(g.holds))
	g.mu.Unlock()
	for _, p := range prefixes {
		g.release(p)
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.healthAddr+"/ready", nil)
	if err != nil {
		return readiness{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return readiness{}, err
	}
	defer resp.Body.Close()
	var r readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return readiness{}, fmt.Errorf("decode /ready of %s: %w", w.id, err)
	}
	return r, nil
}

// ---- Record logs: what the workers processed. ----

// record is one line of a worker's record log.
type record struct {
	Worker string `json:"worker"`
	Shard  string `json:"shard"`
	Epoch  int64  `json:"epoch"`
	Seq    string `json:"seq"`
	PK     string `json:"pk"`
	Data   string `json:"data"`
	T      int64  `json:"t"` // Unix nanoseconds when processed
}

// records parses every record log. A last line without its newline is being written (or
// was cut by kill -9) and is skipped; any other unparsable line is an error.
func (c *cluster) records() ([]record, error) {
	files, err := filepath.Glob(filepath.Join(c.recordDir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	var out []record
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i+1]
		} else {
			continue
		}
		for n, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
			var r record
			if err := json.Unmarshal(line, &r); err != nil {
				return nil, fmt.Errorf("%s line %d: %w: %q", filepath.Base(f), n+1, err, line)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func (c *cluster) mustRecords() []record {
	c.t.Helper()
	recs, err := c.records()
	if err != nil {
		c.t.Fatalf("read record logs: %v", err)
	}
	return recs
}

// firstPerShard returns, per shard, the earliest processing time of a record that
// satisfies keep.
func firstPerShard(recs []record, keep func(record) bool) map[string]int64 {
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
		first := firstPerShard(recs, func(r record) bool {
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

type recordKey struct{ shard, seq string }

// delivery compares what was produced with what the record logs show.
type delivery struct {
	lost       []sentRecord
	duplicates map[recordKey]int // (shard, seq) -> times processed, only those > 1
	mismatched []string
}

func checkDelivery(sent []sentRecord, recs []record) delivery {
	seen := make(map[recordKey][]record, len(recs))
	for _, r := range recs {
		k := recordKey{r.Shard, r.Seq}
		seen[k] = append(seen[k], r)
	}
	d := delivery{duplicates: map[recordKey]int{}}
	for k, rs := range seen {
		if len(rs) > 1 {
			d.duplicates[k] = len(rs)
		}
	}
	for _, s := range sent {
		rs, ok := seen[recordKey{s.Shard, s.Seq}]
		if !ok {
			d.lost = append(d.lost, s)
			continue
		}
		if rs[0].PK != s.PK || rs[0].Data != s.Data {
			d.mismatched = append(d.mismatched, fmt.Sprintf("%s/%s: processed %s=%q, produced %s=%q", s.Shard, s.Seq, rs[0].PK, rs[0].Data, s.PK, s.Data))
		}
	}
	return d
}

// waitDelivered waits until every produced record appears in the record logs and returns
// the final comparison. It fails the test on lost or altered records.
func (c *cluster) waitDelivered(timeout time.Duration, sent []sentRecord) (delivery, []record) {
	c.t.Helper()
	var d delivery
	var recs []record
	waitFor(c.t, timeout, fmt.Sprintf("all %d produced records in the record logs", len(sent)), func() (bool, string) {
		var err error
		recs, err = c.records()
		if err != nil {
			return false, err.Error()
		}
		d = checkDelivery(sent, recs)
		return len(d.lost) == 0, fmt.Sprintf("%d lost, e.g. %v", len(d.lost), d.lost[:min(len(d.lost), 5)])
	})
	if len(d.mismatched) > 0 {
		c.t.Fatalf("%d records processed with other content than produced: %v", len(d.mismatched), d.mismatched[:min(5, len(d.mismatched))])
	}
	return d, recs
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
		for _, e := range logEntries(w.logPath) {
			if match(e) {
				n[w.id]++
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

// sentRecord is a record Kinesis accepted.
type sentRecord struct {
	Shard, Seq, PK, Data string
}

// producerKey is a partition key bound to one hash key for its whole life, so that its
// records stay in one shard, or move from a parent to a child after a reshard: the order
// of its records can then be checked.
type producerKey struct {
	name    string
	hashKey string
	next    int // data sequence number of the key's next record
}

// producer puts records with partition keys "pk-<n>" and data "<key>:<seq-in-key>". All
// puts are serialized, and a put carries at most one record per key and retries failed
// records before anything else is sent, so each key's records enter Kinesis in data order.
type producer struct {
	t      *testing.T
	kin    *kinesis.Client
	stream string

	mu     sync.Mutex
	keys   []*producerKey
	bound  map[string]bool // hash keys that have a key
	sent   []sentRecord
	cursor int

	bgStop chan struct{}
	bgDone chan struct{}
	bgErr  error
}

func newProducer(t *testing.T, c *cluster) *producer {
	p := &producer{t: t, kin: c.kin, stream: c.stream, bound: map[string]bool{}}
	t.Cleanup(func() {
		if p.bgStop != nil {
			p.stop()
		}
	})
	return p
}

// openShards lists the stream's open shards.
func listShards(ctx context.Context, kin *kinesis.Client, streamName string) ([]ktypes.Shard, error) {
	var shards []ktypes.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(streamName)}
	for {
		out, err := kin.ListShards(ctx, in)
		if err != nil {
			return nil, err
		}
		shards = append(shards, out.Shards...)
		if aws.ToString(out.NextToken) == "" {
			return shards, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

func isOpen(s ktypes.Shard) bool {
	return s.SequenceNumberRange == nil || s.SequenceNumberRange.EndingSequenceNumber == nil
}

// bindKeys adds a key for every open shard whose starting hash key has none yet, so that
// each open shard receives records. It returns the new keys' names.
func (p *producer) bindKeys() []string {
	p.t.Helper()
	ctx, cancel := observeCtx()
	defer cancel()
	shards, err := listShards(ctx, p.kin, p.stream)
	if err != nil {
		p.t.Fatalf("list shards: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var added []string
	for _, s := range shards {
		hk := aws.ToString(s.HashKeyRange.StartingHashKey)
		if !isOpen(s) || p.bound[hk] {
			continue
		}
		k := &producerKey{name: fmt.Sprintf("pk-%d", len(p.keys)), hashKey: hk}
		p.keys = append(p.keys, k)
		p.bound[hk] = true
		added = append(added, k.name)
	}
	return added
}

// putRound puts one record for every key, rounds times.
func (p *producer) putRound(rounds int) {
	p.t.Helper()
	for range rounds {
		p.mu.Lock()
		err := p.putLocked(p.keys)
		p.mu.Unlock()
		if err != nil {
			p.t.Fatalf("put records: %v", err)
		}
	}
}

// putLocked puts one record for each key (at most 500) and retries failed entries until
// Kinesis accepted all of them.
func (p *producer) putLocked(keys []*producerKey) error {
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(len(keys), start+500)]
		pending := make([]int, len(batch))
		entries := make([]ktypes.PutRecordsRequestEntry, len(batch))
		for i, k := range batch {
			pending[i] = i
			entries[i] = ktypes.PutRecordsRequestEntry{
				PartitionKey:    aws.String(k.name),
				ExplicitHashKey: aws.String(k.hashKey),
				Data:            fmt.Appendf(nil, "%s:%d", k.name, k.next),
			}
		}
		for attempt := 0; len(pending) > 0; attempt++ {
			if attempt == 50 {
				return fmt.Errorf("%d records still refused after %d attempts", len(pending), attempt)
			}
			if attempt > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			req := make([]ktypes.PutRecordsRequestEntry, len(pending))
			for i, j := range pending {
				req[i] = entries[j]
			}
			ctx, cancel := observeCtx()
			out, err := p.kin.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(p.stream), Records: req})
			cancel()
			if err != nil {
				continue // nothing was stored; send the same records again
			}
			var still []int
			for i, res := range out.Records {
				j := pending[i]
				if res.ErrorCode != nil {
					still = append(still, j)
					continue
				}
				k := batch[j]
				p.sent = append(p.sent, sentRecord{Shard: aws.ToString(res.ShardId), Seq: aws.ToString(res.SequenceNumber),
					PK: k.name, Data: string(entries[j].Data)})
				k.next++
			}
			pending = still
		}
	}
	return nil
}

// start produces in the background: every 250ms one record for each of the next
// perTick keys, round robin (perTick*4 records per second).
func (p *producer) start(perTick int) {
	p.bgStop, p.bgDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.bgDone)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.bgStop:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			var keys []*producerKey
			for range min(perTick, len(p.keys)) {
				keys = append(keys, p.keys[p.cursor%len(p.keys)])
				p.cursor++
			}
			err := p.putLocked(keys)
			p.mu.Unlock()
			if err != nil {
				p.bgErr = err
				return
			}
		}
	}()
}

// stop ends background production and fails the test if it failed.
func (p *producer) stop() {
	p.t.Helper()
	close(p.bgStop)
	<-p.bgDone
	p.bgStop = nil
	if p.bgErr != nil {
		p.t.Errorf("background producer: %v", p.bgErr)
	}
}

// sentRecords returns a copy of what Kinesis accepted so far.
func (p *producer) sentRecords() []sentRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent)
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

// seqNum parses a Kinesis sequence number.
func seqNum(s string) (*big.Int, bool) { return new(big.Int).SetString(s, 10) }

// since formats d for the MEASURED lines.
func since(from, to time.Time) string { return to.Sub(from).Round(10 * time.Millisecond).String() }

func ids(ws []*worker) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.id
	}
	return out
}
