package main

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
)

// healthHandler serves /health (liveness: the worker renews its heartbeat), /ready (the
// worker has joined: registered and read the metadata table) and /metrics (Prometheus).
// None exposes configuration or credentials.
func healthHandler(w *consumer.Worker, leaseDuration time.Duration, reg *prometheus.Registry) http.Handler {
	started := time.Now()
	mux := http.NewServeMux()
	reply := func(rw http.ResponseWriter, ok bool, body any) {
		rw.Header().Set("Content-Type", "application/json")
		if !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(rw).Encode(body)
	}
	mux.HandleFunc("GET /health", func(rw http.ResponseWriter, _ *http.Request) {
		st := w.Status()
		// Alive while starting, and while heartbeats succeed; a worker that cannot renew
		// for several lease durations is better restarted.
		last := st.LastHeartbeat
		if last.IsZero() {
			last = started
		}
		ok := time.Since(last) < 3*leaseDuration
		status := "ok"
		if !ok {
			status = "heartbeat stale"
		}
		reply(rw, ok, map[string]any{"status": status, "worker_id": st.WorkerID})
	})
	mux.HandleFunc("GET /ready", func(rw http.ResponseWriter, _ *http.Request) {
		st := w.Status()
		reply(rw, st.Ready, map[string]any{
			"ready": st.Ready, "worker_id": st.WorkerID, "coordinator": st.Coordinator,
			"max_leases": st.Target, "leases": len(st.Leases), "shard_count": st.ShardCount,
			"worker_count": st.WorkerCount, "live_workers": st.LiveWorkers,
		})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
