// Package localengines runs local stand-ins for Kinesis (kinesis-local, LocalStack's
// engine) and DynamoDB (dynalite) as Node.js processes, behind one HTTP edge endpoint that
// routes each AWS request to the right engine.
package localengines

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Pinned engine versions: the tests depend on their exact behaviour.
const (
	KinesisLocalVersion = "0.6.2"
	DynaliteVersion     = "4.0.0"
)

// ErrNodeMissing means node or npm is not on PATH.
var ErrNodeMissing = errors.New("node and npm are required to run the local engines: install Node.js >= 18 and npm")

// DefaultDir is where engines are installed: $KDS_CACHE_DIR, or
// ~/.cache/kds-lease-manager/engines (the user cache dir on other systems).
func DefaultDir() string {
	if d := os.Getenv("KDS_CACHE_DIR"); d != "" {
		return d
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "kds-lease-manager", "engines")
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "kds-lease-manager", "engines")
	}
	return filepath.Join(os.TempDir(), "kds-lease-manager", "engines")
}

// Install installs the pinned engines into dir with npm unless they are already there.
// Concurrent installers (parallel test binaries) serialize on a lock file in dir.
func Install(ctx context.Context, dir string) error {
	return npmInstall(ctx, dir, "kds-lease-manager-engines", "Local Kinesis and DynamoDB engines for kds-lease-manager tests",
		map[string]string{"kinesis-local": KinesisLocalVersion, "dynalite": DynaliteVersion}, installed)
}

// npmInstall installs the pinned deps into dir with npm unless installed(dir) says they
// are there, under a lock file in dir.
func npmInstall(ctx context.Context, dir, name, description string, deps map[string]string, installed func(string) bool) error {
	if _, err := exec.LookPath("node"); err != nil {
		return ErrNodeMissing
	}
	if installed(dir) {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return ErrNodeMissing
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create install dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".install.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	// Another process may have finished the install while we waited for the lock.
	if installed(dir) {
		return nil
	}
	if err := writePackageJSON(dir, name, description, deps); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm install in %s failed: %w\n%s", dir, err, tail(out.Bytes(), 4096))
	}
	if !installed(dir) {
		return fmt.Errorf("npm install in %s succeeded but the packages are still missing or at the wrong version\n%s",
			dir, tail(out.Bytes(), 4096))
	}
	return nil
}

// writePackageJSON pins the versions so a plain `npm install` in dir reproduces them.
func writePackageJSON(dir, name, description string, deps map[string]string) error {
	pkg := map[string]any{
		"name":         name,
		"private":      true,
		"description":  description,
		"dependencies": deps,
	}
	b, err := json.MarshalIndent(pkg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode package.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write package.json: %w", err)
	}
	return nil
}

func installed(dir string) bool {
	return hasModule(dir, "kinesis-local", "main.js", KinesisLocalVersion) &&
		hasModule(dir, "dynalite", "cli.js", DynaliteVersion)
}

func hasModule(dir, name, entry, version string) bool {
	mod := filepath.Join(dir, "node_modules", name)
	if _, err := os.Stat(filepath.Join(mod, entry)); err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(mod, "package.json"))
	if err != nil {
		return false
	}
	var pkg struct {
		Version string `json:"version"`
	}
	return json.Unmarshal(b, &pkg) == nil && pkg.Version == version
}

// lockFile takes an exclusive flock on path. flock blocks without a context, so it runs
// in a goroutine; if ctx ends first the lock is released as soon as it is acquired.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open install lock: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- flockRetry(f)
	}()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() { f.Close() }, nil // closing the file releases the lock
	case <-ctx.Done():
		go func() {
			<-done
			f.Close()
		}()
		return nil, fmt.Errorf("wait for install lock %s: %w", path, ctx.Err())
	}
}

func flockRetry(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// tail returns the last n bytes of b, starting at a line boundary when possible.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}
