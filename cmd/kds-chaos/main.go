// Command kds-chaos runs real kds-consumer workers against the local engines while
// killing, stopping, cutting off, pausing and throttling them and resharding the stream,
// then proves from the records' own tags that nothing was lost, order per key held, no
// checkpoint moved backwards or came from a stale owner, no two workers processed a shard
// at once, and duplicates happened only after crashes and cut-offs. It prints what it
// injected and saw, and exits 1 when an invariant broke (2 on a usage error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "kds-chaos:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "kds-chaos:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kds-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 90*time.Second, "how long records are produced while chaos happens (the short CI form: 60-120s)")
	leaseDur := fs.Duration("lease-duration", 3*time.Second, "the workers' LEASE_DURATION (shorter than the default 10s so the short form fits)")
	rate := fs.Float64("rate", 100, "records per second")
	keys := fs.Int("keys", 200, "partition keys")
	shards := fs.Int("shards", 30, "starting shard count; the run scales to twice as many and back")
	endpoint := fs.String("endpoint", "", "engines edge to use (e.g. http://127.0.0.1:4566 from `make up`); default: start local engines")
	binDir := fs.String("bin", "bin", "directory with kds-consumer and kdsctl (built there with go build when missing)")
	dir := fs.String("dir", "", "directory for record and worker logs (default: a new temporary directory, kept)")
	policy := fs.String("iam-policy", "docs/iam-policy.json", "worker IAM policy to check every AWS call against (empty: skip)")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the fault draws")
	verbose := fs.Bool("v", false, "log the harness's own steps")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kds-chaos [flags]\n\n"+
			"Runs workers w0..w4 through SIGKILL, SIGTERM, restarts, a cut-off, a SIGSTOP longer than a\n"+
			"lease, DynamoDB and Kinesis throttling, 500s, dropped connections and latency, shards\n"+
			"N -> 2N -> N and workers 3 -> 5 -> 2, then checks the invariants. Exit 1 on FAIL.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *duration < 20*time.Second || *leaseDur < time.Second || *rate <= 0 || *keys < 1 || *shards < 1 {
		return fmt.Errorf("%w: want --duration >= 20s, --lease-duration >= 1s, and positive --rate, --keys, --shards", errUsage)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *dir == "" {
		d, err := os.MkdirTemp("", "kds-chaos-")
		if err != nil {
			return err
		}
		*dir = d
	}
	workerBin, ctlBin := filepath.Join(*binDir, "kds-consumer"), filepath.Join(*binDir, "kdsctl")
	if !exists(workerBin) || !exists(ctlBin) {
		fmt.Fprintf(stderr, "building kds-consumer and kdsctl into %s\n", *binDir)
		var err error
		if workerBin, ctlBin, err = harness.BuildBinaries(ctx, *binDir); err != nil {
			return err
		}
	}
	if *policy != "" && !exists(*policy) {
		return fmt.Errorf("%w: --iam-policy %s not found (run from the repository root, or --iam-policy '')", errUsage, *policy)
	}

	upstream := *endpoint
	if upstream == "" {
		eng, err := localengines.Start(ctx, localengines.Options{RunDir: filepath.Join(*dir, "engines"), Logger: log})
		if err != nil {
			return err
		}
		defer eng.Close()
		upstream = eng.Endpoint()
	}
	suffix := time.Now().UTC().Format("150405")
	rep, err := harness.RunChaos(ctx, harness.ChaosOptions{
		WorkerBin: workerBin, CtlBin: ctlBin, Upstream: upstream,
		Stream: "chaos-stream-" + suffix, App: "chaos-app-" + suffix, Dir: *dir,
		Duration: *duration, LeaseDuration: *leaseDur, Rate: *rate, Keys: *keys, Shards: *shards,
		PolicyPath: *policy, Seed: *seed, Progress: stderr, Logger: log,
	})
	if err != nil {
		return err
	}
	rep.Print(stdout)
	fmt.Fprintf(stdout, "logs: %s (seed %d)\n", *dir, *seed)
	if !rep.OK() {
		return errors.New("FAIL: an invariant broke (see above)")
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
