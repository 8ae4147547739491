package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Environment variables read by this package.
const (
	// CacheDirEnv is the cache root of the Kubernetes tools; the binaries are in its bin/.
	// Default ~/.cache/kds-lease-manager/k8s.
	CacheDirEnv = "KDS_K8S_CACHE_DIR"
	// NoBuildEnv, set to 1, makes a missing or outdated binary an error instead of
	// running build.sh (which takes ~7 minutes the first time).
	NoBuildEnv = "KDS_K8S_NO_BUILD"
	// BuildScriptEnv overrides the path of deploy/k8s/tools/build.sh.
	BuildScriptEnv = "KDS_K8S_BUILD_SCRIPT"
)

// buildScriptRel is build.sh's path relative to the repository root.
const buildScriptRel = "deploy/k8s/tools/build.sh"

// Binary names as built by build.sh.
const (
	binAPIServer = "kube-apiserver"
	binEtcd      = "etcd"
	binKubectl   = "kubectl"
	binHelm      = "helm"
)

// DefaultBinDir is where build.sh puts the binaries: $KDS_K8S_CACHE_DIR/bin, or
// ~/.cache/kds-lease-manager/k8s/bin.
func DefaultBinDir() string {
	if d := os.Getenv(CacheDirEnv); d != "" {
		return filepath.Join(d, "bin")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "kds-lease-manager", "k8s", "bin")
}

// BuildScript finds deploy/k8s/tools/build.sh: $KDS_K8S_BUILD_SCRIPT, else relative to
// this source file, else in the first parent of the working directory that has it.
func BuildScript() (string, error) {
	if p := os.Getenv(BuildScriptEnv); p != "" {
		return p, nil
	}
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, buildScriptRel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("cannot find %s above %v; set %s to its path", buildScriptRel, starts, BuildScriptEnv)
}

// PinnedVersions returns the versions build.sh pins, by binary name
// ("kube-apiserver", "kubectl", "etcd", "helm").
func PinnedVersions(ctx context.Context) (map[string]string, error) {
	script, err := BuildScript()
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, "bash", script, "--versions").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --versions: %w", script, err)
	}
	v := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			v[f[0]] = f[1]
		}
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%s --versions printed nothing", script)
	}
	return v, nil
}

// EnsureBinaries makes sure the named binaries (all four if none are named) are built at
// the pinned versions in DefaultBinDir, running build.sh if they are not, unless
// $KDS_K8S_NO_BUILD=1. Build progress goes to progress (os.Stderr if nil). It returns the
// bin dir.
func EnsureBinaries(ctx context.Context, progress io.Writer, names ...string) (string, error) {
	if progress == nil {
		progress = os.Stderr
	}
	if len(names) == 0 {
		names = []string{binAPIServer, binKubectl, binEtcd, binHelm}
	}
	binDir := DefaultBinDir()
	script, err := BuildScript()
	if err != nil {
		// Without the script, binaries that are there are all we have.
		if missing := missingBinaries(binDir, names); len(missing) > 0 {
			return "", fmt.Errorf("kubetest: %v not in %s and %w", missing, binDir, err)
		}
		return binDir, nil
	}
	check := exec.CommandContext(ctx, "bash", append([]string{script, "--check"}, names...)...)
	checkOut, err := check.CombinedOutput()
	if err == nil {
		return binDir, nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		return "", fmt.Errorf("kubetest: %s --check: %w\n%s", script, err, checkOut)
	}
	if os.Getenv(NoBuildEnv) == "1" {
		return "", fmt.Errorf("kubetest: Kubernetes test binaries are not built and %s=1 forbids building them:\n%s"+
			"run %s (about 7 minutes the first time) or unset %s",
			NoBuildEnv, checkOut, script, NoBuildEnv)
	}
	fmt.Fprintf(progress, "kubetest: Kubernetes test binaries missing or outdated, running %s %s "+
		"(the first build takes ~7 minutes on 2 cores; later runs reuse %s):\n%s",
		script, strings.Join(names, " "), binDir, checkOut)
	if f := flag.Lookup("test.timeout"); f != nil {
		// `go test` kills a test binary at -timeout + 1m, counting from its start.
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 && d < 30*time.Minute {
			fmt.Fprintf(progress, "kubetest: WARNING: go test -timeout is %s, and a cold build can take longer: "+
				"run %s before the tests, or pass -timeout 30m\n", d, script)
		}
	}
	build := exec.CommandContext(ctx, "bash", append([]string{script}, names...)...)
	build.Stdout = io.Discard // only the bin dir
	build.Stderr = progress
	build.WaitDelay = waitDelay
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("kubetest: %s failed: %w (its output is above)", script, err)
	}
	if missing := missingBinaries(binDir, names); len(missing) > 0 {
		return "", fmt.Errorf("kubetest: %s succeeded but %v are not in %s (is %s different for it?)",
			script, missing, binDir, CacheDirEnv)
	}
	return binDir, nil
}

func missingBinaries(dir string, names []string) []string {
	var missing []string
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, n)
		}
	}
	return missing
}
