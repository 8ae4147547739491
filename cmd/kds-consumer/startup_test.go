package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// The worker waits for a stream that is missing or being created, backing off (1, 2, 4
// s ... up to the most) and saying why each time; any other failure ends the wait at
// once, and so does the end of its context.
func TestWaitForStream(t *testing.T) {
	missing := fmt.Errorf(`stream "orders" not found in region eu-west-3: create it or set STREAM_NAME: %w`, stream.ErrStreamNotFound)
	creating := fmt.Errorf(`stream "orders" is still being created: %w`, kinesisstream.ErrStreamCreating)
	denied := fmt.Errorf("cannot describe stream: %w", stream.ErrAccessDenied)
	bw := streamWait{first: time.Second, most: 4 * time.Second, timeout: time.Second}
	for _, tc := range []struct {
		name    string
		answers []error // then nil
		want    error
		waited  time.Duration
		logged  []string
	}{
		{"there already", nil, nil, 0, nil},
		{"missing, then being created, then there", []error{missing, missing, creating, creating}, nil, 1*time.Second + 2*time.Second + 4*time.Second + 4*time.Second,
			[]string{`not found in region eu-west-3: create it or set STREAM_NAME`, "is still being created", "retry_in=4s", "the stream is ready"}},
		{"access denied ends the wait", []error{missing, denied}, stream.ErrAccessDenied, time.Second, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs strings.Builder
				log := slog.New(slog.NewTextHandler(&logs, nil))
				calls := 0
				check := func(ctx context.Context) error {
					if _, ok := ctx.Deadline(); !ok {
						t.Error("a check without a deadline")
					}
					calls++
					if calls <= len(tc.answers) {
						return tc.answers[calls-1]
					}
					return nil
				}
				start := time.Now()
				err := waitForStream(t.Context(), check, bw, log)
				if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if got := time.Since(start); got != tc.waited {
					t.Errorf("waited %s, want %s", got, tc.waited)
				}
				for _, want := range tc.logged {
					if !strings.Contains(logs.String(), want) {
						t.Errorf("log lacks %q:\n%s", want, logs.String())
					}
				}
			})
		})
	}
	t.Run("stopped while waiting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := waitForStream(ctx, func(context.Context) error { return missing }, bw, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the context's", err)
			}
		})
	})
}

// faultyPuts fails every heartbeat write while fail is set (an outage: the calls end) and
// holds each one until release is closed while hang is set (a hung call: a bug).
type faultyPuts struct {
	consumer.MetaStore
	fail, hang *atomic.Bool
	release    <-chan struct{}
}

func (f faultyPuts) PutWorker(ctx context.Context, r lease.WorkerRecord) error {
	switch {
	case f.hang.Load():
		<-f.release
		return errors.New("released (test)")
	case f.fail.Load():
		return errors.New("DynamoDB unavailable (test)")
	}
	return f.MetaStore.PutWorker(ctx, r)
}

// /live (liveness) fails on a hung heartbeat but not on failing ones; /health (readiness)
// fails on both. Both answer {"status", "worker_id"}. A worker on in-memory stores, in a
// synctest bubble: four lease durations after the fault.
func TestLiveFailsOnlyOnAHang(t *testing.T) {
	for _, tc := range []struct {
		name         string
		fail, hang   bool
		live, health int
		liveSays     string
	}{
		{name: "healthy", live: http.StatusOK, health: http.StatusOK, liveSays: "ok"},
		{name: "every heartbeat write fails", fail: true, live: http.StatusOK, health: http.StatusServiceUnavailable, liveSays: "ok"},
		{name: "a heartbeat write never returns", hang: true, live: http.StatusServiceUnavailable, health: http.StatusServiceUnavailable,
			liveSays: "heartbeat loop has not ended a write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var fail, hang atomic.Bool
				release := make(chan struct{})
				log := slog.New(slog.NewTextHandler(io.Discard, nil))
				w, err := consumer.New(consumer.Config{AppName: "app", WorkerID: "w0", Logger: log},
					memstore.NewLeases(), faultyPuts{memstore.NewMeta(), &fail, &hang, release}, memstore.NewStream(1),
					demoFactory(log, nil, settings{}))
				if err != nil {
					t.Fatal(err)
				}
				h := healthHandler(w, prometheus.NewRegistry())
				get := func(path string) (int, map[string]any) {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
					var body map[string]any
					if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
						t.Fatalf("%s: %v: %s", path, err, rec.Body)
					}
					return rec.Code, body
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- w.Run(ctx) }()
				time.Sleep(consumer.DefaultLeaseDuration)
				fail.Store(tc.fail)
				hang.Store(tc.hang)
				time.Sleep(4 * consumer.DefaultLeaseDuration)
				for _, c := range []struct {
					path string
					want int
				}{{"/live", tc.live}, {"/health", tc.health}} {
					code, body := get(c.path)
					if code != c.want || body["worker_id"] != "w0" || len(body) != 2 {
						t.Errorf("GET %s = %d %v, want %d with status and worker_id w0", c.path, code, body, c.want)
					}
				}
				if _, body := get("/live"); !strings.Contains(fmt.Sprint(body["status"]), tc.liveSays) {
					t.Errorf("/live status = %q, want it to say %q", body["status"], tc.liveSays)
				}
				hang.Store(false)
				fail.Store(false)
				close(release)
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
