package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/internal/proc"
)

// ClusterConfig says which binaries to run against which engines.
type ClusterConfig struct {
	// WorkerBin and CtlBin are the built kds-consumer and kdsctl binaries.
	WorkerBin, CtlBin string
	// Upstream is the engines' edge URL; every worker gets its own edge in front of it.
	Upstream string
	Region   string
	Stream   string
	App      string
	// Dir receives records/ (the record logs) and logs/ (the workers' output).
	Dir string
	// LeaseDuration is the workers' LEASE_DURATION.
	LeaseDuration time.Duration
	// WorkerEnv is added to every worker's environment ("KEY=value").
	WorkerEnv []string
	// Seed seeds the edges' fault draws (each edge its own stream of draws).
	Seed   uint64
	Logger *slog.Logger
}

// Cluster runs kds-consumer processes, each behind its own WorkerEdge, and kdsctl.
type Cluster struct {
	cfg ClusterConfig
	log *slog.Logger

	mu      sync.Mutex
	workers map[string]*Worker
	events  []Event
	seed    uint64
}

// Worker is one worker id: its edge, which outlives restarts, and its current process.
type Worker struct {
	ID   string
	Edge *WorkerEdge

	mu      sync.Mutex
	proc    *proc.Process // the latest process; nil before the first start
	health  string        // its HEALTH_ADDR
	healCut func()
}

// NewCluster prepares the directories; workers start with Start.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, d := range []string{cfg.RecordDir(), cfg.LogDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	return &Cluster{cfg: cfg, log: cfg.Logger, workers: map[string]*Worker{}, seed: cfg.Seed}, nil
}

// RecordDir is where the workers write their record logs.
func (c ClusterConfig) RecordDir() string { return filepath.Join(c.Dir, "records") }

// LogDir is where the workers' output goes, one <id>.log each.
func (c ClusterConfig) LogDir() string { return filepath.Join(c.Dir, "logs") }

// Config returns the cluster's configuration.
func (c *Cluster) Config() ClusterConfig { return c.cfg }

// Record adds an event to the timeline and returns it.
func (c *Cluster) Record(e Event) Event {
	if e.From.IsZero() {
		e.From = time.Now()
	}
	if e.To.IsZero() {
		e.To = e.From
	}
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	c.log.Info("chaos event", "event", e.String())
	return e
}

// Events returns the timeline so far, in order.
func (c *Cluster) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]Event(nil), c.events...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	return out
}

// finish sets the end of the latest open-ended event of kind for worker.
func (c *Cluster) finish(kind EventKind, worker string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.events) - 1; i >= 0; i-- {
		if e := &c.events[i]; e.Kind == kind && e.Worker == worker {
			e.To = time.Now()
			return
		}
	}
}

// Workers returns every worker id the cluster ever started, sorted.
func (c *Cluster) Workers() []*Worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Worker, 0, len(c.workers))
	for _, w := range c.workers {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Running returns the ids of workers whose process runs (paused ones included).
func (c *Cluster) Running() []string {
	var ids []string
	for _, w := range c.Workers() {
		if w.running() {
			ids = append(ids, w.ID)
		}
	}
	return ids
}

func (w *Worker) running() bool {
	p := w.Process()
	return p != nil && !p.Exited()
}

// Process is the worker's latest process (nil before its first start).
func (w *Worker) Process() *proc.Process {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.proc
}

// HealthAddr is the health, readiness and metrics address of the latest process.
func (w *Worker) HealthAddr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.health
}

// Get fetches path from the worker's health server (/health, /ready, /metrics) and
// returns the status and body.
func (w *Worker) Get(ctx context.Context, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.HealthAddr()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("worker %s %s: %w", w.ID, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Worker returns the worker with the id.
func (c *Cluster) Worker(id string) (*Worker, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.workers[id]
	if !ok {
		return nil, fmt.Errorf("no worker %s", id)
	}
	return w, nil
}

// Start starts worker id (again), creating its edge the first time. env ("KEY=value")
// is added to its environment and wins over the rest.
func (c *Cluster) Start(id string, env ...string) error {
	_, err := c.start(id, false, env)
	return err
}

// Run runs worker id as a process that is expected to exit by itself (a refused
// configuration, say) and returns it once it exited. Its standard output is dropped;
// standard error is in its log and in Process().Output(). If ctx ends first, the worker
// is killed and the error has the end of its output.
func (c *Cluster) Run(ctx context.Context, id string, env ...string) (*Worker, error) {
	w, err := c.start(id, true, env)
	if err != nil {
		return nil, err
	}
	p := w.Process()
	if err := p.Wait(ctx); err != nil {
		_ = p.Kill(context.WithoutCancel(ctx))
		return w, fmt.Errorf("%w; output:\n%s", err, p.Output())
	}
	return w, nil
}

func (c *Cluster) start(id string, stderrOnly bool, extraEnv []string) (*Worker, error) {
	c.mu.Lock()
	w, ok := c.workers[id]
	if !ok {
		c.seed++
		edge, err := StartEdge(id, c.cfg.Upstream, c.seed, c.log)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		w = &Worker{ID: id, Edge: edge}
		c.workers[id] = w
	}
	c.mu.Unlock()
	if w.running() {
		return nil, fmt.Errorf("worker %s is already running", id)
	}
	healthAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	env := append(c.baseEnv(w.Edge.URL()),
		"WORKER_ID="+id,
		"HEALTH_ADDR="+healthAddr,
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"LEASE_DURATION="+c.cfg.LeaseDuration.String(),
	)
	env = append(env, c.cfg.WorkerEnv...)
	spec := proc.Spec{
		Name: "worker " + id, Path: c.cfg.WorkerBin, Env: append(env, extraEnv...),
		LogPath: filepath.Join(c.cfg.LogDir(), id+".log"), StderrOnly: stderrOnly,
	}
	if stderrOnly {
		spec.TailSize = 1 << 20 // all of it: the caller reads what the worker said
	}
	p, err := proc.Start(spec)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.proc, w.health = p, healthAddr
	w.mu.Unlock()
	c.Record(Event{Kind: EventStart, Worker: id})
	return w, nil
}

// process returns worker id's latest process.
func (c *Cluster) process(id string) (*proc.Process, error) {
	w, err := c.Worker(id)
	if err != nil {
		return nil, err
	}
	if p := w.Process(); p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("worker %s never started", id)
}

// act returns worker id's latest process and records an event of kind for it.
func (c *Cluster) act(kind EventKind, id string) (*proc.Process, error) {
	p, err := c.process(id)
	if err == nil {
		c.Record(Event{Kind: kind, Worker: id})
	}
	return p, err
}

// Kill kills the worker with SIGKILL and waits for the process to exit.
func (c *Cluster) Kill(ctx context.Context, id string) error {
	p, err := c.act(EventKill, id)
	if err != nil {
		return err
	}
	return p.Kill(ctx)
}

// Terminate sends SIGTERM and waits for the graceful drain; after grace it kills. It
// fails unless the worker exited with status 0 within grace.
func (c *Cluster) Terminate(ctx context.Context, id string, grace time.Duration) error {
	p, err := c.act(EventTerm, id)
	if err != nil {
		return err
	}
	if err := p.Stop(ctx, grace); err != nil {
		return err
	}
	c.finish(EventTerm, id)
	if code := p.ExitCode(); code != 0 {
		return fmt.Errorf("worker %s exited with %s after SIGTERM, want status 0", id, p.State())
	}
	return nil
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(id string) error {
	p, err := c.act(EventPause, id)
	if err != nil {
		return err
	}
	return p.Pause()
}

// Resume sends SIGCONT to a paused worker.
func (c *Cluster) Resume(id string) error {
	p, err := c.process(id)
	if err != nil {
		return err
	}
	err = p.Resume()
	c.finish(EventPause, id)
	return err
}

// CutOff makes the worker's requests hang; Heal lets them (and those held) through.
func (c *Cluster) CutOff(id string) error {
	w, err := c.Worker(id)
	if err != nil {
		return err
	}
	c.Record(Event{Kind: EventCutOff, Worker: id})
	heal := w.Edge.CutOff()
	w.mu.Lock()
	w.healCut = heal
	w.mu.Unlock()
	return nil
}

// Heal ends a cut-off.
func (c *Cluster) Heal(id string) error {
	w, err := c.Worker(id)
	if err != nil {
		return err
	}
	w.mu.Lock()
	heal := w.healCut
	w.healCut = nil
	w.mu.Unlock()
	if heal != nil {
		heal()
		c.finish(EventCutOff, id)
	}
	return nil
}

// InjectAll adds rule to every worker's edge (those started later too are not covered)
// and returns the function that removes it again.
func (c *Cluster) InjectAll(rules ...Rule) (remove func()) {
	var removes []func()
	for _, w := range c.Workers() {
		for _, r := range rules {
			removes = append(removes, w.Edge.Injector().Add(r))
		}
	}
	detail := ""
	for i, r := range rules {
		if i > 0 {
			detail += "; "
		}
		detail += r.String()
	}
	c.Record(Event{Kind: EventFaults, Detail: detail})
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, rm := range removes {
				rm()
			}
			c.finish(EventFaults, "")
		})
	}
}

// Ctl runs kdsctl against the engines (not through any worker's edge) and returns its
// standard output.
func (c *Cluster) Ctl(ctx context.Context, args ...string) ([]byte, error) {
	stdout, _, err := c.CtlOutput(ctx, args...)
	return stdout, err
}

// CtlOutput is Ctl that returns standard error (warnings) too.
func (c *Cluster) CtlOutput(ctx context.Context, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, c.cfg.CtlBin, args...)
	cmd.Env = c.baseEnv(c.cfg.Upstream)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = proc.SysProcAttr()
	if err := cmd.Run(); err != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("kdsctl %v: %w\n%s", args, err, tailBytes(errOut.Bytes(), 2000))
	}
	return out.Bytes(), errOut.Bytes(), nil
}

// baseEnv is the environment of the workers and kdsctl: the run's stream, application
// and record directory, test credentials, and endpoint as the AWS endpoint.
func (c *Cluster) baseEnv(endpoint string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + c.cfg.Dir, // no ~/.aws of the developer's
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=" + c.cfg.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"STREAM_NAME=" + c.cfg.Stream,
		"APP_NAME=" + c.cfg.App,
		"RECORD_LOG_DIR=" + c.cfg.RecordDir(),
	}
}

// Stats returns each worker edge's request counts.
func (c *Cluster) Stats() map[string]localengines.Stats {
	out := map[string]localengines.Stats{}
	for _, w := range c.Workers() {
		out[w.ID] = w.Edge.Stats()
	}
	return out
}

// Close stops every worker (SIGTERM, then SIGKILL after grace; SIGKILL at once if grace
// is 0) and every edge.
func (c *Cluster) Close(ctx context.Context, grace time.Duration) error {
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, w := range c.Workers() {
		_ = c.Heal(w.ID)
		if !w.running() {
			continue
		}
		wg.Go(func() {
			stop := func() error { return c.Terminate(ctx, w.ID, grace) }
			if grace <= 0 {
				stop = func() error { return c.Kill(ctx, w.ID) }
			}
			if err := stop(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, w := range c.Workers() {
		if err := w.Edge.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("edge %s: %w", w.ID, err))
		}
	}
	return errors.Join(errs...)
}

// FreeAddr returns a loopback address with a port that was free a moment ago, for a
// process to listen on soon. The port is drawn below the kernel's ephemeral range: a port
// from that range can be taken meanwhile as the local port of any outgoing connection (and
// the test processes open many), one below it only by another listener.
func FreeAddr() (string, error) {
	lo, hi := belowEphemeral()
	var err error
	for range 50 {
		var l net.Listener
		l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+rand.IntN(hi-lo))))
		if err == nil {
			addr := l.Addr().String()
			l.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("free port in [%d, %d): %w", lo, hi, err)
}

// belowEphemeral returns a port range under the kernel's ephemeral ports (Linux's
// ip_local_port_range; elsewhere under the usual 32768).
func belowEphemeral() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				hi = n
			}
		}
	}
	return max(1024, hi-12000), hi
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
