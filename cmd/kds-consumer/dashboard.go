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

// serveDashboard serves the live dashboard on DASHBOARD_ADDR until ctx ends; stop waits
// for it to end. The page reads the tables only while someone views it.
func serveDashboard(ctx context.Context, s settings, src dashboard.Source, log *slog.Logger) (stop func(), err error) {
	d, err := dashboard.New(dashboard.Config{Source: src, Title: fmt.Sprintf("app %s, stream %s (served by %s)", s.AppName, s.StreamName, s.WorkerID),
		Logger: log.With("component", "dashboard")})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", s.DashboardAddr)
	if err != nil {
		return nil, fmt.Errorf("dashboard on %s: %w (set DASHBOARD_ADDR)", s.DashboardAddr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	polled, served := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(polled)
		_ = d.Run(ctx)
	}()
	go func() {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard server stopped", "addr", s.DashboardAddr, "err", err)
		}
	}()
	log.Info("dashboard serving", "url", "http://"+ln.Addr().String()+"/")
	return func() {
		cancel() // ends the event streams and the poller
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		<-served
		<-polled
	}, nil
}
