package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitConverged waits until the coordinator publishes shards, workers and max, every
// unfinished lease is owned except exactly unowned, and no worker holds more than max.
func (c *cluster) waitConverged(timeout time.Duration, shards, workers, maxLeases, unowned int) time.Duration {
	c.t.Helper()
	start := time.Now()
	waitFor(c.t, timeout, fmt.Sprintf("%d shards, %d workers, max %d, %d unowned", shards, workers, maxLeases, unowned), func() (bool, string) {
		o, err := c.ownership()
		if err != nil {
			return false, err.Error()
		}
		r, err := c.coordinator()
		if err != nil || r == nil {
			return false, fmt.Sprint("coordinator: ", err)
		}
		owned, most := 0, 0
		for _, n := range o.byOwner {
			owned += n
			most = max(most, n)
		}
		ok := r.ShardCount == shards && r.WorkerCount == workers && r.MaxLeasesPerWorker == maxLeases &&
			r.UnownedShards == unowned && o.unowned == unowned && owned == shards-unowned && most <= maxLeases &&
			len(o.byOwner) == workers
		return ok, o.String() + "; " + coordString(r)
	})
	return time.Since(start)
}

// metric reads one sample from a worker's /metrics: a name, with its labels if it has
// any, as /metrics writes them.
func (w *worker) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, err := w.sample(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sample is metric with an error when the sample is missing.
func (w *worker) sample(name string) (float64, error) {
	_, body, err := w.Get(context.Background(), "/metrics")
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("%s /metrics has no %s:\n%s", w.ID, name, firstLines(string(body), 40))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// checkMonitoringMetrics fails the test for every kds_ metric name that the chart's
// Grafana board or alert rules mention (expressions, descriptions) and w's /metrics
// does not export. Call it on a worker that has read a shard: kds_lag_seconds has a
// series per shard held.
func checkMonitoringMetrics(t *testing.T, w *worker) {
	t.Helper()
	_, body, err := w.Get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(kds_\w+)[{ ]`).FindAllSubmatch(body, -1) {
		exported[string(m[1])] = true
	}
	for _, file := range []string{"dashboard.json", "alerts.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "helm", "kds-lease-manager", "files", file))
		if err != nil {
			t.Fatal(err)
		}
		used := map[string]bool{}
		for _, name := range regexp.MustCompile(`kds_[a-z0-9_]+`).FindAllString(string(b), -1) {
			used[name] = true
		}
		if len(used) < 5 {
			t.Fatalf("%s mentions %d kds_ metrics: the pattern no longer finds them", file, len(used))
		}
		for name := range used {
			if !exported[name] {
				t.Errorf("%s uses %s, which %s's /metrics does not export", file, name, w.ID)
			}
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// names returns kds-consumer-0..n-1.
func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("kds-consumer-%d", i)
	}
	return out
}
