// Package kubetest gives tests a real Kubernetes API: etcd and kube-apiserver built from
// the Go module proxy (deploy/k8s/tools/build.sh) and run on loopback, with the matching
// kubectl and helm. There is no controller-manager, scheduler or kubelet: objects are
// stored, validated, defaulted, admitted and authorized exactly as in a cluster, but no
// controller acts on them (no pods are created for a StatefulSet, no status is written,
// no default ServiceAccount appears, deleted namespaces stay Terminating, and
// `helm install --wait` never returns).
//
// Use Main from TestMain to share one cluster per test binary (or an existing one named
// by $KDS_TEST_KUBECONFIG), and Shared to get it in a test.
package kubetest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
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
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/proc"
)

// Options configures Start. The zero value is what tests want.
type Options struct {
	// BinDir holds kube-apiserver, etcd, kubectl and helm. If set they are used as they
	// are; if empty, EnsureBinaries builds them into DefaultBinDir() when needed.
	BinDir string
	// Dir receives the data, certificates, kubeconfigs and logs and is kept after Close.
	// If empty, a temporary directory is used and removed by Close.
	Dir string
	// StartTimeout bounds the start of etcd and kube-apiserver (not a build); 2m if zero.
	StartTimeout time.Duration
	// Progress receives build progress; os.Stderr if nil.
	Progress io.Writer
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
	// APIServerArgs are appended to kube-apiserver's flags (a later flag wins).
	APIServerArgs []string
}

// ServiceAccountIssuer is the apiserver's --service-account-issuer and --api-audiences.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// Cluster is a running etcd + kube-apiserver (from Start) or an existing cluster (from
// Attach), with kubectl and helm to drive it.
type Cluster struct {
	binDir     string
	dir        string
	ownDir     bool // remove dir on Close
	server     string
	caPEM      []byte // nil if the kubeconfig skips TLS verification
	insecure   bool
	kubeconfig string
	log        *slog.Logger

	etcd, apiserver *proc.Process
	etcdURL         string

	done      chan struct{} // closed when a server exits on its own, or on Close
	doneOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
	closing   bool
	started   bool // Start succeeded: an exit from now on is a crash
	mu        sync.Mutex
}

// Start starts etcd and kube-apiserver on free loopback ports, waits until the apiserver
// is ready and writes an admin kubeconfig (client certificate in system:masters). It
// builds the binaries first if needed (see EnsureBinaries). ctx bounds only the start:
// the cluster runs until Close.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	c, err := newCluster(ctx, &opts, binAPIServer, binEtcd, binKubectl, binHelm)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()

	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()

	pkiDir := filepath.Join(c.dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	pk, err := genPKI(pkiDir)
	if err != nil {
		return nil, fmt.Errorf("kubetest: generate certificates: %w", err)
	}
	c.caPEM = pk.caCert

	// A port picked free can be taken before the server binds it; retry then.
	for attempt := 1; ; attempt++ {
		err = c.startEtcd(ctx)
		if err == nil || attempt == 3 || c.etcd == nil || !portClash(c.etcd) {
			break
		}
		c.log.Warn("etcd port taken, retrying with new ports")
	}
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = c.startAPIServer(ctx, pk, opts.APIServerArgs)
		if err == nil || attempt == 3 || c.apiserver == nil || !portClash(c.apiserver) {
			break
		}
		c.log.Warn("kube-apiserver port taken, retrying with a new port")
	}
	if err != nil {
		return nil, err
	}

	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.kubeconfig, c.server, c.caPEM, false, kubeUser{
		ClientCertificateData: pk.adminCert, ClientKeyData: pk.adminKey,
	}); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	if err := c.Err(); err != nil { // died just before
		return nil, err
	}
	c.log.Info("kubetest cluster running", "server", c.server, "kubeconfig", c.kubeconfig,
		"took", time.Since(t0).Round(time.Millisecond))
	return c, nil
}

// Attach returns a Cluster for an existing cluster's kubeconfig (its current context),
// with the pinned kubectl and helm (built if needed). Close removes only temporary files.
func Attach(ctx context.Context, kubeconfig string, opts Options) (_ *Cluster, err error) {
	abs, err := filepath.Abs(kubeconfig)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("kubetest: kubeconfig: %w", err)
	}
	c, err := newCluster(ctx, &opts, binKubectl, binHelm)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	c.kubeconfig = abs
	out, _, err := c.Kubectl(ctx, "config", "view", "--raw", "--minify", "--flatten", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("kubetest: read kubeconfig %s: %w", abs, err)
	}
	var cfg struct {
		Clusters []struct {
			Cluster struct {
				Server   string `json:"server"`
				CAData   []byte `json:"certificate-authority-data"`
				Insecure bool   `json:"insecure-skip-tls-verify"`
			} `json:"cluster"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil || len(cfg.Clusters) != 1 {
		return nil, fmt.Errorf("kubetest: kubeconfig %s has no usable current context (%v)", abs, err)
	}
	cl := cfg.Clusters[0].Cluster
	c.server, c.caPEM, c.insecure = cl.Server, cl.CAData, cl.Insecure
	return c, nil
}

func newCluster(ctx context.Context, opts *Options, bins ...string) (*Cluster, error) {
	c := &Cluster{log: opts.Logger, done: make(chan struct{}), binDir: opts.BinDir}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.binDir == "" {
		var err error
		if c.binDir, err = EnsureBinaries(ctx, opts.Progress, bins...); err != nil {
			return nil, err
		}
	} else if missing := missingBinaries(c.binDir, bins); len(missing) > 0 {
		return nil, fmt.Errorf("kubetest: %v not found in %s", missing, c.binDir)
	}
	c.dir = opts.Dir
	if c.dir == "" {
		d, err := os.MkdirTemp("", "kds-kube-")
		if err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
		c.dir, c.ownDir = d, true
	} else if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	return c, nil
}

func (c *Cluster) onExit(p *proc.Process) {
	c.mu.Lock()
	crash := c.started && !c.closing
	c.mu.Unlock()
	if crash { // during Start, the error returned says it
		c.log.Error("kubetest: server exited on its own", "name", p.Name(), "err", p.Err(), "log", p.LogPath())
		c.doneOnce.Do(func() { close(c.done) })
	}
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	if c.etcd != nil { // a previous attempt
		_ = c.etcd.Stop(ctx, time.Second)
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dataDir := filepath.Join(c.dir, "etcd")
	_ = os.RemoveAll(dataDir)
	args := []string{
		"--name=kubetest",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=kubetest=" + peer,
		"--unsafe-no-fsync", // test data: speed over durability
		"--log-level=warn",
	}
	p, err := startProcess("etcd", filepath.Join(c.binDir, binEtcd), filepath.Join(c.dir, "etcd.log"), args, c.onExit)
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	c.etcd, c.etcdURL = p, client
	err = waitReady(ctx, p, http.DefaultClient, client+"/health", func(body string) bool {
		return strings.Contains(body, `"health":"true"`)
	})
	if err != nil {
		return fmt.Errorf("kubetest: etcd did not become healthy: %w", err)
	}
	return nil
}

func (c *Cluster) startAPIServer(ctx context.Context, pk *pki, extra []string) error {
	if c.apiserver != nil {
		_ = c.apiserver.Stop(ctx, time.Second)
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	port := strconv.Itoa(ports[0])
	c.server = "https://127.0.0.1:" + port
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + port,
		"--cert-dir=" + filepath.Join(c.dir, "apiserver-certs"),
		"--tls-cert-file=" + pk.serverCertFile,
		"--tls-private-key-file=" + pk.serverKeyFile,
		"--client-ca-file=" + pk.caFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--api-audiences=" + ServiceAccountIssuer,
		"--service-account-key-file=" + pk.saPublicKeyFile,
		"--service-account-signing-key-file=" + pk.saSigningKey,
		"--service-cluster-ip-range=10.96.0.0/16", // allocated in etcd only; nothing routes it
		// The master-service endpoint reconciler cannot publish a loopback address.
		"--endpoint-reconciler-type=none",
		// Without a controller-manager no namespace gets a "default" ServiceAccount, so
		// this plugin would reject every Pod.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--profiling=false",
	}
	args = append(args, extra...)
	p, err := startProcess("kube-apiserver", filepath.Join(c.binDir, binAPIServer),
		filepath.Join(c.dir, "kube-apiserver.log"), args, c.onExit)
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	c.apiserver = p
	hc, err := c.adminHTTPClient(pk)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, hc, c.server+"/readyz", func(body string) bool { return body == "ok" }); err != nil {
		return fmt.Errorf("kubetest: kube-apiserver did not become ready: %w", err)
	}
	// The "default" namespace is created by a loop in the apiserver shortly after
	// /readyz; tests that use it right away should not race it.
	if err := waitReady(ctx, p, hc, c.server+"/api/v1/namespaces/default", func(string) bool { return true }); err != nil {
		return fmt.Errorf("kubetest: namespace default did not appear: %w", err)
	}
	return nil
}

func (c *Cluster) adminHTTPClient(pk *pki) (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pk.caCert)
	cert, err := tls.X509KeyPair(pk.adminCert, pk.adminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}, nil
}

// waitReady polls url until it answers 200 with a body ok accepts, p exits, or ctx ends.
func waitReady(ctx context.Context, p *proc.Process, hc *http.Client, url string, ok func(body string) bool) error {
	last := "no answer yet"
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(strings.TrimSpace(string(body))) {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		select {
		case <-p.Done():
			return p.ExitError()
		case <-ctx.Done():
			return fmt.Errorf("%w waiting for %s (last answer: %s); last output:\n%s", ctx.Err(), url, last, p.Tail())
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubetest: pick a free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Kubeconfig is the path of the admin kubeconfig (or the one passed to Attach).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Server is the apiserver URL, e.g. https://127.0.0.1:41234.
func (c *Cluster) Server() string { return c.server }

// CACert is the PEM CA that signed the apiserver's serving certificate (nil if the
// attached kubeconfig skips verification).
func (c *Cluster) CACert() []byte { return slices.Clone(c.caPEM) }

// BinDir holds the kubectl and helm (and, for a started cluster, etcd and kube-apiserver)
// that the cluster uses.
func (c *Cluster) BinDir() string { return c.binDir }

// Dir is the cluster's working directory: data, certificates, kubeconfigs and the
// servers' logs (etcd.log, kube-apiserver.log).
func (c *Cluster) Dir() string { return c.dir }

// Done is closed when etcd or kube-apiserver exits on its own, or when Close runs.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Err reports a server that exited without Close, with its log tail; nil while they run.
func (c *Cluster) Err() error {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return nil
	}
	var errs []error
	for _, p := range []*proc.Process{c.etcd, c.apiserver} {
		if p != nil && p.Exited() {
			errs = append(errs, p.ExitError())
		}
	}
	return errors.Join(errs...)
}

// RSS returns the resident memory of the servers Start started, in bytes, by name.
func (c *Cluster) RSS() map[string]int64 {
	m := map[string]int64{}
	for _, p := range []*proc.Process{c.etcd, c.apiserver} {
		if p != nil {
			m[p.Name()] = p.RSS()
		}
	}
	return m
}

// Close stops kube-apiserver and etcd (their whole process groups) and removes the
// temporary directory. It is safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		var errs []error
		for _, p := range []*proc.Process{c.apiserver, c.etcd} {
			if p != nil {
				if err := p.Stop(context.Background(), 10*time.Second); err != nil && !errors.Is(err, proc.ErrKilled) {
					errs = append(errs, err)
				}
			}
		}
		c.doneOnce.Do(func() { close(c.done) })
		if c.ownDir {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, fmt.Errorf("kubetest: remove %s: %w", c.dir, err))
			}
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Env is the environment for a command that should use this cluster: the test's own,
// with KUBECONFIG set, the pinned kubectl and helm first on PATH, and kubectl's and
// helm's caches and config under Dir (so tests never touch ~/.kube or ~/.config/helm).
func (c *Cluster) Env() []string { return c.envFor(c.kubeconfig) }

func (c *Cluster) envFor(kubeconfig string) []string {
	set := map[string]string{
		"KUBECONFIG":       kubeconfig,
		"PATH":             c.binDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"KUBECACHEDIR":     filepath.Join(c.dir, "home", "kube-cache"),
		"HELM_CACHE_HOME":  filepath.Join(c.dir, "home", "helm-cache"),
		"HELM_CONFIG_HOME": filepath.Join(c.dir, "home", "helm-config"),
		"HELM_DATA_HOME":   filepath.Join(c.dir, "home", "helm-data"),
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok || k == "HELM_KUBECONTEXT" || k == "HELM_NAMESPACE" || strings.HasPrefix(k, "HELM_KUBE") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// Command returns an unstarted command running the pinned tool ("kubectl" or "helm")
// against the cluster as admin (see Env). Use it for stdin, a working directory or
// streaming output; Kubectl and Helm cover the common case.
func (c *Cluster) Command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	return c.CommandAs(ctx, c.kubeconfig, tool, args...)
}

// CommandAs is Command with another kubeconfig, e.g. one from KubeconfigFor.
func (c *Cluster) CommandAs(ctx context.Context, kubeconfig, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, tool), args...)
	cmd.Env = c.envFor(kubeconfig)
	cmd.WaitDelay = waitDelay
	return cmd
}

// Kubectl runs the pinned kubectl as admin. err, if any, includes stderr.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return run(c.Command(ctx, binKubectl, args...), "", args)
}

// KubectlStdin runs kubectl as admin with stdin, e.g. for `apply -f -`.
func (c *Cluster) KubectlStdin(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	return run(c.Command(ctx, binKubectl, args...), stdin, args)
}

// KubectlAs runs kubectl with another kubeconfig, e.g. one from KubeconfigFor.
func (c *Cluster) KubectlAs(ctx context.Context, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	return run(c.CommandAs(ctx, kubeconfig, binKubectl, args...), "", args)
}

// Helm runs the pinned helm as admin (KUBECONFIG set). Don't use `--wait`: without a
// controller-manager nothing ever becomes ready.
func (c *Cluster) Helm(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return run(c.Command(ctx, binHelm, args...), "", args)
}

// HelmAs runs helm with another kubeconfig.
func (c *Cluster) HelmAs(ctx context.Context, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	return run(c.CommandAs(ctx, kubeconfig, binHelm, args...), "", args)
}

func run(cmd *exec.Cmd, stdin string, args []string) (string, string, error) {
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", filepath.Base(cmd.Path), strings.Join(args, " "), err,
			strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// Token returns a bound token for a ServiceAccount (`kubectl create token`), valid for
// the apiserver's audience. extra goes to kubectl, e.g. "--duration=10m".
func (c *Cluster) Token(ctx context.Context, namespace, serviceAccount string, extra ...string) (string, error) {
	args := append([]string{"create", "token", serviceAccount, "-n", namespace}, extra...)
	out, _, err := c.Kubectl(ctx, args...)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(out)
	if tok == "" {
		return "", fmt.Errorf("kubetest: kubectl create token %s -n %s printed no token", serviceAccount, namespace)
	}
	return tok, nil
}

// KubeconfigFor writes a kubeconfig for this cluster that authenticates with a bearer
// token (e.g. from Token) and returns its path, inside Dir.
func (c *Cluster) KubeconfigFor(token string) (string, error) {
	sum := sha256.Sum256([]byte(token))
	dir := filepath.Join(c.dir, "kubeconfigs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "token-"+hex.EncodeToString(sum[:8])+".kubeconfig")
	if err := writeKubeconfig(path, c.server, c.caPEM, c.insecure, kubeUser{Token: token}); err != nil {
		return "", err
	}
	return path, nil
}

type kubeUser struct {
	ClientCertificateData []byte `json:"client-certificate-data,omitempty"`
	ClientKeyData         []byte `json:"client-key-data,omitempty"`
	Token                 string `json:"token,omitempty"`
}

// writeKubeconfig writes a one-context kubeconfig as JSON (which kubeconfig loaders read
// as YAML).
func writeKubeconfig(path, server string, caPEM []byte, insecure bool, user kubeUser) error {
	type cluster struct {
		Server   string `json:"server"`
		CAData   []byte `json:"certificate-authority-data,omitempty"`
		Insecure bool   `json:"insecure-skip-tls-verify,omitempty"`
	}
	cfg := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []any{map[string]any{"name": "kubetest",
			"cluster": cluster{Server: server, CAData: caPEM, Insecure: insecure}}},
		"users":           []any{map[string]any{"name": "kubetest-user", "user": user}},
		"contexts":        []any{map[string]any{"name": "kubetest", "context": map[string]string{"cluster": "kubetest", "user": "kubetest-user", "namespace": "default"}}},
		"current-context": "kubetest",
		"preferences":     map[string]any{},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("kubetest: write kubeconfig: %w", err)
	}
	return nil
}
