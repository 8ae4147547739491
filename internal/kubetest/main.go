package kubetest

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// KubeconfigEnv names an existing cluster's kubeconfig to test against instead of
// starting one. Main also sets it for the cluster it starts, so subprocesses of the tests
// find it.
const KubeconfigEnv = "KDS_TEST_KUBECONFIG"

// KeepDirEnv, if set, is the directory where Main runs its cluster (data, certificates,
// kubeconfigs, etcd.log, kube-apiserver.log); it is kept after the tests, for debugging.
const KeepDirEnv = "KDS_TEST_KUBE_DIR"

var shared *Cluster

// Main runs the tests of a package against one shared cluster. Use it as
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
// It starts etcd and kube-apiserver (building them first if needed, which the test
// timeout does not cover) or attaches to $KDS_TEST_KUBECONFIG. If that fails, the test
// binary fails: an integration suite that silently skips proves nothing.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Runner is what Run runs with the cluster up: a *testing.M, or another helper's Run
// wrapped around it, so one test binary can have engines and a cluster.
type Runner interface{ Run() int }

// RunnerFunc adapts a function to Runner.
type RunnerFunc func() int

// Run implements Runner.
func (f RunnerFunc) Run() int { return f() }

// Run is Main without the exit: it starts (or attaches to) the cluster, runs m and
// returns its exit code.
func Run(m Runner) int {
	if !flag.Parsed() {
		flag.Parse() // for testing.Verbose; m.Run would parse anyway
	}
	ctx := context.Background()
	// Server chatter would drown the test output; errors carry the log tails.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var (
		c   *Cluster
		err error
	)
	if kc := os.Getenv(KubeconfigEnv); kc != "" {
		c, err = Attach(ctx, kc, Options{Logger: logger})
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: cannot use the cluster of %s=%s: %v\n", KubeconfigEnv, kc, err)
			return 1
		}
	} else {
		t0 := time.Now()
		c, err = Start(ctx, Options{Logger: logger, Dir: os.Getenv(KeepDirEnv)})
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: cannot start etcd + kube-apiserver: %v\n"+
				"(set %s to test against an existing cluster)\n", err, KubeconfigEnv)
			return 1
		}
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "kubetest: cluster %s ready in %s\n", c.Server(), time.Since(t0).Round(time.Millisecond))
		}
		if err := os.Setenv(KubeconfigEnv, c.Kubeconfig()); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
			c.Close()
			return 1
		}
		defer os.Unsetenv(KubeconfigEnv)
	}
	shared = c
	defer func() {
		if err := c.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stop cluster: %v\n", err)
		}
	}()
	code := m.Run()
	if err := c.Err(); err != nil && code == 0 {
		// A crash mid-run can make later tests pass vacuously; fail the binary.
		fmt.Fprintf(os.Stderr, "kubetest: the cluster died during the tests: %v\n", err)
		code = 1
	}
	return code
}

// Shared returns the cluster Main started or attached to. It fails the test if Main did
// not run.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if shared == nil {
		t.Fatalf("kubetest: no cluster: call kubetest.Main from TestMain")
	}
	if err := shared.Err(); err != nil {
		t.Fatalf("kubetest: cluster is down: %v", err)
	}
	return shared
}

var unsafeNameChars = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace named after the test (with a random suffix) and deletes
// it when the test ends. Without a controller-manager a deleted namespace stays
// Terminating with its contents, so never reuse a name.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	base := strings.Trim(unsafeNameChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	name := fmt.Sprintf("t-%s-%05d", base, rand.IntN(100000))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := c.Kubectl(ctx, "create", "namespace", name); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, _, err := c.Kubectl(ctx, "delete", "namespace", name, "--wait=false"); err != nil {
			t.Logf("kubetest: %v", err)
		}
	})
	return name
}
