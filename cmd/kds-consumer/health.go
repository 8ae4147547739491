package main

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
)

// healthHandler serves /live (for a liveness probe: consumer.Worker.Alive, the worker's
// loops run; it fails only on a hang, never for a DynamoDB outage), /health (for a
// readiness probe: consumer.Worker.Check, which also fails while heartbeats fail), /ready
// (the worker has joined: registered and read the metadata table) and /metrics
// (Prometheus). /live and /health answer {"status", "worker_id"}, 503 with the error as
// the status. None exposes configuration or credentials.
func healthHandler(w *consumer.Worker, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	reply := func(rw http.ResponseWriter, ok bool, body any) {
		rw.Header().Set("Content-Type", "application/json")
		if !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(rw).Encode(body)
	}
	check := func(probe func() error) http.HandlerFunc {
		return func(rw http.ResponseWriter, _ *http.Request) {
			if err := probe(); err != nil {
				reply(rw, false, map[string]any{"status": err.Error(), "worker_id": w.Status().WorkerID})
				return
			}
			reply(rw, true, map[string]any{"status": "ok", "worker_id": w.Status().WorkerID})
		}
	}
	// Alive while starting, and while the control loop completes passes and the heartbeat
	// loop ends its writes, failed or not: a hung loop is a bug a restart may cure, an
	// outage is not.
	mux.HandleFunc("GET /live", check(w.Alive))
	// Healthy while starting, and while the control loop completes passes and heartbeats
	// succeed: a worker that cannot renew holds no leases and should get no traffic.
	mux.HandleFunc("GET /health", check(w.Check))
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
