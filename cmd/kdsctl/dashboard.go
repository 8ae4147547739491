package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/dashboard"
)

// dashboardCmd serves the live dashboard until Ctrl+C. One poller reads the tables for
// every viewer.
func dashboardCmd(ctx context.Context, e *env, args []string) error {
	fs := e.flags("dashboard")
	addr := fs.String("addr", "127.0.0.1:8090", "address to serve the page on (port 0: any free port)")
	interval := fs.Duration("interval", time.Second, "shortest time between two reads of the tables (bigger tables are read less often)")
	if err := e.parseNone(fs, args); err != nil {
		return err
	}
	if *interval < 500*time.Millisecond {
		return usageError("dashboard: --interval %s: want at least 500ms", *interval)
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := dashboard.New(dashboard.Config{Source: st, Title: fmt.Sprintf("app %s, stream %s", e.app, e.stream),
		Interval: *interval, Always: true, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	fmt.Fprintf(e.progress(), "dashboard of app %s on http://%s/ (Ctrl+C to stop)\n", e.app, ln.Addr())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	polled := make(chan error, 1)
	go func() { polled <- d.Run(ctx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err = <-served:
		err = fmt.Errorf("dashboard: serve: %w", err)
	case <-ctx.Done():
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer scancel()
		// Event streams end with the base context; Shutdown waits for the rest.
		if serr := srv.Shutdown(sctx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
			err = fmt.Errorf("dashboard: shutdown: %w", serr)
		}
	}
	cancel()
	<-polled
	return err
}
