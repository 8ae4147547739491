package main

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
)

// healthHandler serves /health (liveness: consumer.Worker.Check), /ready (the
// worker has joined: registered and read the metadata table) and /metrics (Prometheus).
// None exposes configuration or credentials.
func healthHandler(w *consumer.Worker, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	reply := func(rw http.ResponseWriter, ok bool, body any) {
		rw.Header().Set("Content-Type", "application/json")
		if !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(rw).Encode(body)
	}
	mux.HandleFunc("GET /health", func(rw http.ResponseWriter, _ *http.Request) {
		// Alive while starting, and while the control loop completes passes and heartbeats
		// succeed (consumer.Worker.Check): a worker stuck for several lease durations is
		// better restarted.
		if err := w.Check(); err != nil {
			reply(rw, false, map[string]any{"status": err.Error(), "worker_id": w.Status().WorkerID})
			return
		}
		reply(rw, true, map[string]any{"status": "ok", "worker_id": w.Status().WorkerID})
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
