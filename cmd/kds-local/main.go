// Command kds-local runs the local Kinesis and DynamoDB engines behind one edge endpoint,
// for development and `make up`.
//
//	kds-local up [--edge 127.0.0.1:4566] [--dir DIR] [--run-dir DIR] [--log-level info]
//	kds-local install [--dir DIR]
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

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

const usage = `usage:
  kds-local up [--edge 127.0.0.1:4566] [--dir DIR] [--run-dir DIR] [--log-level LEVEL]
      start kinesis-local and dynalite behind one edge endpoint until SIGINT/SIGTERM
  kds-local install [--dir DIR]
      install the engines (npm) and exit
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kds-local:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("kds-local "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", localengines.DefaultDir(), "engine install directory ($KDS_CACHE_DIR)")
	switch cmd {
	case "install":
		if err := fs.Parse(args); err != nil {
			return err
		}
		if err := localengines.Install(ctx, *dir); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "engines installed in", *dir)
		return nil
	case "up":
		edge := fs.String("edge", "127.0.0.1:4566", "edge listen address")
		runDir := fs.String("run-dir", "", "directory for engine logs (default DIR/run)")
		level := fs.String("log-level", "info", "log level: debug, info, warn, error")
		if err := fs.Parse(args); err != nil {
			return err
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*level)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		if *runDir == "" {
			*runDir = filepath.Join(*dir, "run")
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
		return up(ctx, log, localengines.Options{Dir: *dir, RunDir: *runDir, EdgeAddr: *edge, Logger: log})
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// up runs the engines until ctx ends (a signal) or an engine dies.
func up(ctx context.Context, log *slog.Logger, opts localengines.Options) error {
	eng, err := localengines.Start(ctx, opts)
	if err != nil {
		return err
	}
	log.Info("ready: point AWS clients at the edge",
		"endpoint", eng.Endpoint(), "logs", opts.RunDir,
		"example", "aws --endpoint-url "+eng.Endpoint()+" kinesis list-streams")
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case <-eng.Done():
		err = fmt.Errorf("engine stopped unexpectedly: %w", eng.Err())
	}
	return errors.Join(err, eng.Close())
}
