package localengines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/proc"
)

// Options configures Start. The zero value starts everything on free loopback ports with
// engines installed in DefaultDir.
type Options struct {
	// Dir is where the engines are installed; DefaultDir() if empty.
	Dir string
	// RunDir receives the engines' log files. If empty, a temporary directory is used and
	// removed by Close.
	RunDir string
	// Output, if set, receives the engines' output instead of log files.
	Output io.Writer
	// EdgeAddr is the edge's listen address; "127.0.0.1:0" (a free port) if empty.
	EdgeAddr string
	// Engine ports; 0 picks a free port.
	KinesisPort, KinesisTLSPort, DynamoDBPort int
	// StartTimeout bounds the wait for the engines to answer; 30s if zero.
	StartTimeout time.Duration
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
}

// Engines is a running kinesis-local, dynalite and edge.
type Engines struct {
	edge       *Edge
	server     *http.Server
	endpoint   string
	kinesisURL string
	dynamoURL  string
	procs      []*proc.Process
	tempDir    string // removed by Close
	log        *slog.Logger

	done      chan struct{} // closed when an engine exits or Close runs
	doneOnce  sync.Once
	running   atomic.Bool // all engines answered; an exit now is a crash
	closeOnce sync.Once
	closeErr  error
}

// Start installs the engines if needed, starts them, waits until they answer and serves
// the edge. ctx bounds only the start-up: the engines run until Close.
func Start(ctx context.Context, opts Options) (_ *Engines, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Dir == "" {
		opts.Dir = DefaultDir()
	}
	if opts.EdgeAddr == "" {
		opts.EdgeAddr = "127.0.0.1:0"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	e := &Engines{log: log, done: make(chan struct{})}
	defer func() {
		if err != nil {
			_ = e.Close()
		}
	}()

	// Bind the edge first: a busy edge port is the most likely mistake and costs nothing
	// to detect before any process starts.
	ln, err := net.Listen("tcp", opts.EdgeAddr)
	if err != nil {
		return nil, fmt.Errorf("edge cannot listen on %s (is another kds-local or LocalStack running? stop it or choose another address): %w",
			opts.EdgeAddr, err)
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	e.endpoint = "http://" + ln.Addr().String()

	installStart := time.Now()
	if err := Install(ctx, opts.Dir); err != nil {
		return nil, err
	}
	log.Debug("engines installed", "dir", opts.Dir, "took", time.Since(installStart))

	if opts.RunDir == "" && opts.Output == nil {
		if e.tempDir, err = os.MkdirTemp("", "kds-engines-"); err != nil {
			return nil, fmt.Errorf("create run dir: %w", err)
		}
		opts.RunDir = e.tempDir
	}
	if opts.RunDir != "" {
		if err := os.MkdirAll(opts.RunDir, 0o755); err != nil {
			return nil, fmt.Errorf("create run dir: %w", err)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	startAt := time.Now()
	kin, err := e.startEngine(ctx, opts, kinesisSpec(opts))
	if err != nil {
		return nil, err
	}
	dyn, err := e.startEngine(ctx, opts, dynaliteSpec(opts))
	if err != nil {
		return nil, err
	}
	e.kinesisURL, e.dynamoURL = kin.url, dyn.url
	log.Debug("engines ready", "took", time.Since(startAt))

	// From here on an engine exit closes Done; one that died just before is caught here.
	e.running.Store(true)
	if err := e.Err(); err != nil {
		return nil, err
	}

	e.edge = NewEdge(e.kinesisURL, e.dynamoURL)
	e.edge.Logger = log
	e.server = &http.Server{Handler: e.edge, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := e.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("edge stopped", "err", err)
		}
	}()
	log.Info("local engines running", "endpoint", e.endpoint, "kinesis", e.kinesisURL, "dynamodb", e.dynamoURL)
	return e, nil
}

// Endpoint is the edge URL that serves both services, e.g. http://127.0.0.1:4566.
func (e *Engines) Endpoint() string { return e.endpoint }

// KinesisURL is kinesis-local's own URL.
func (e *Engines) KinesisURL() string { return e.kinesisURL }

// DynamoDBURL is dynalite's own URL.
func (e *Engines) DynamoDBURL() string { return e.dynamoURL }

// Edge is the edge handler, for Stats and interception.
func (e *Engines) Edge() *Edge { return e.edge }

// Done is closed when an engine process exits on its own (or Close ran); Err says why.
func (e *Engines) Done() <-chan struct{} { return e.done }

// Err reports the engines that have exited, with their log tails; nil while all run.
func (e *Engines) Err() error {
	var errs []error
	for _, p := range e.procs {
		select {
		case <-p.Done():
			errs = append(errs, p.ExitError())
		default:
		}
	}
	return errors.Join(errs...)
}

// Close stops the edge and the engine processes Start started. It is safe to call more
// than once.
func (e *Engines) Close() error {
	e.closeOnce.Do(func() {
		var errs []error
		if e.server != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := e.server.Shutdown(ctx); err != nil {
				_ = e.server.Close() // stop lingering requests; the engines go next anyway
			}
			cancel()
		}
		if e.edge != nil {
			e.edge.CloseIdleConnections()
		}
		for _, p := range e.procs {
			if err := p.Stop(context.Background(), 3*time.Second); err != nil && !errors.Is(err, proc.ErrKilled) {
				errs = append(errs, err)
			}
		}
		if e.tempDir != "" {
			if err := os.RemoveAll(e.tempDir); err != nil {
				errs = append(errs, fmt.Errorf("remove run dir: %w", err))
			}
		}
		e.signalDone()
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// engineSpec describes how to run one engine on given ports.
type engineSpec struct {
	name  string
	ports []int // requested ports; 0 = pick
	// bindAll: the engine listens on all interfaces, so a free port must be free there.
	bindAll bool
	command func(dir string, ports []int) (args, env []string)
	probe   func(ctx context.Context, url string) error
}

func kinesisSpec(opts Options) engineSpec {
	return engineSpec{
		name:    "kinesis-local",
		ports:   []int{opts.KinesisPort, opts.KinesisTLSPort},
		bindAll: true,
		command: func(dir string, ports []int) ([]string, []string) {
			env := []string{
				"KINESIS_MOCK_PLAIN_PORT=" + strconv.Itoa(ports[0]),
				"KINESIS_MOCK_TLS_PORT=" + strconv.Itoa(ports[1]),
				// Without it the engine crashes looking for the certificate in the cwd.
				"KINESIS_MOCK_CERT_PATH=" + filepath.Join(dir, "node_modules", "kinesis-local", "server.json"),
				"SHARD_LIMIT=1000",
			}
			// Make stream state changes immediate; the defaults (0.5 s each) slow tests.
			for _, v := range []string{"CREATE_STREAM", "DELETE_STREAM", "UPDATE_SHARD_COUNT", "SPLIT_SHARD",
				"MERGE_SHARDS", "REGISTER_STREAM_CONSUMER", "DEREGISTER_STREAM_CONSUMER",
				"START_STREAM_ENCRYPTION", "STOP_STREAM_ENCRYPTION", "UPDATE_STREAM_MODE"} {
				env = append(env, v+"_DURATION=0ms")
			}
			return []string{filepath.Join(dir, "node_modules", "kinesis-local", "main.js")}, env
		},
		probe: func(ctx context.Context, url string) error {
			return probe(ctx, url, "Kinesis_20131202.ListStreams", "kinesis", "application/x-amz-json-1.1")
		},
	}
}

func dynaliteSpec(opts Options) engineSpec {
	return engineSpec{
		name:  "dynalite",
		ports: []int{opts.DynamoDBPort},
		command: func(dir string, ports []int) ([]string, []string) {
			return []string{filepath.Join(dir, "node_modules", "dynalite", "cli.js"),
				"--host", "127.0.0.1", "--port", strconv.Itoa(ports[0]),
				"--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"}, nil
		},
		probe: func(ctx context.Context, url string) error {
			return probe(ctx, url, "DynamoDB_20120810.ListTables", "dynamodb", "application/x-amz-json-1.0")
		},
	}
}

// startedEngine is a running engine that answered its probe.
type startedEngine struct {
	*proc.Process
	url string
}

// startEngine starts one engine and waits for it to answer. Ports it picked itself can be
// taken by another process before the engine binds them (parallel test binaries), so it
// retries with fresh ports when the engine reports EADDRINUSE.
func (e *Engines) startEngine(ctx context.Context, opts Options, spec engineSpec) (startedEngine, error) {
	picked := false
	for _, p := range spec.ports {
		picked = picked || p == 0
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		ports, err := choosePorts(spec.name, spec.ports, spec.bindAll)
		if err != nil {
			return startedEngine{}, err
		}
		p, err := e.spawn(opts, spec, ports, attempt)
		if err != nil {
			return startedEngine{}, err
		}
		url := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		err = waitReady(ctx, p, url, spec.probe)
		if err == nil {
			return startedEngine{p, url}, nil
		}
		if picked && attempt < attempts && p.Exited() && strings.Contains(p.Output(), "EADDRINUSE") {
			e.log.Warn("engine port taken before it could bind; retrying", "engine", spec.name, "ports", ports)
			e.procs = slices.DeleteFunc(e.procs, func(q *proc.Process) bool { return q == p })
			continue
		}
		return startedEngine{}, err
	}
}

func waitReady(ctx context.Context, p *proc.Process, url string, probeFn func(context.Context, string) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		last = probeFn(pctx, url)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return p.ExitError()
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer at %s (last error: %v): %w\n%s",
				p.Name(), url, last, ctx.Err(), p.Tail())
		case <-tick.C:
		}
	}
}

// probe makes one real API call, so "ready" means the engine serves requests, not just
// that its port is open. The engines need an Authorization header but do not check it.
func probe(ctx context.Context, url, target, service, contentType string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	// kinesis-local waits for open connections on SIGTERM, so leave none idle behind.
	req.Close = true
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/"+service+
		"/aws4_request, SignedHeaders=host;x-amz-date, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", target, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// choosePorts returns the requested ports, or free ones where 0 was requested. A
// requested port that is busy is an error now rather than an obscure engine crash later.
func choosePorts(engine string, requested []int, bindAll bool) ([]int, error) {
	host := "127.0.0.1"
	if bindAll {
		host = ""
	}
	ports := make([]int, len(requested))
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for i, p := range requested {
		// Keep each listener open until all ports are chosen so two picks cannot collide.
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return nil, fmt.Errorf("%s: port %d is in use (stop whatever holds it, or let the port be picked): %w", engine, p, err)
		}
		held = append(held, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

func (e *Engines) spawn(opts Options, spec engineSpec, ports []int, attempt int) (*proc.Process, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, ErrNodeMissing
	}
	args, env := spec.command(opts.Dir, ports)
	ps := proc.Spec{Name: spec.name, Path: node, Args: args, Env: append(os.Environ(), env...), Dir: opts.Dir, Output: opts.Output}
	if opts.Output == nil {
		name := spec.name + ".log"
		if attempt > 1 {
			name = fmt.Sprintf("%s.%d.log", spec.name, attempt)
		}
		ps.LogPath = filepath.Join(opts.RunDir, name)
		_ = os.Remove(ps.LogPath) // a fresh log per run, not appended to an old one
	}
	ps.OnExit = func(p *proc.Process) {
		if p.Stopping() || !e.running.Load() {
			return // Close stopped it, or Start reports it
		}
		e.log.Error("engine exited", "engine", p.Name(), "err", p.Err(), "log", p.LogPath())
		e.signalDone()
	}
	p, err := proc.Start(ps)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, p)
	e.log.Debug("engine started", "engine", spec.name, "pid", p.Pid(), "ports", ports, "log", p.LogPath())
	return p, nil
}

func (e *Engines) signalDone() { e.doneOnce.Do(func() { close(e.done) }) }
