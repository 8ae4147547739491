package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/kds-lease-manager/kds-lease-manager/internal/dashboard"
)

// serveDashboard serves the live dashboard on DASHBOARD_ADDR until ctx ends or stop is
// called; stop waits for it to end. The page reads the tables only while someone views
// it.
func serveDashboard(ctx context.Context, s settings, src dashboard.Source, log *slog.Logger) (stop func(), err error) {
	log = log.With("component", "dashboard")
	d, err := dashboard.New(dashboard.Config{Source: src, Logger: log,
		Title: fmt.Sprintf("app %s, stream %s (served by %s)", s.AppName, s.StreamName, s.WorkerID)})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", s.DashboardAddr)
	if err != nil {
		return nil, fmt.Errorf("dashboard on %s: %w (set DASHBOARD_ADDR)", s.DashboardAddr, err)
	}
	log.Info("dashboard serving", "url", "http://"+ln.Addr().String()+"/")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Serve(ctx, ln); err != nil {
			log.Error("dashboard stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
