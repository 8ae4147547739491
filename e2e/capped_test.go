package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestCapLeavesShardsUnownedLoudly is the seed's scenario 4 (300 shards, 3 workers, cap 80)
// scaled down for the default run: 20 shards, 3 workers, cap 5 -> max 5, 5 shards unowned,
// 4 workers needed. It proves the system says so loudly: the worker logs a `max leases`
// warning, the coordinator logs SHARDS LEFT UNOWNED, and /metrics exports the unowned
// shards and the recommended worker count. The full-size run is in scenarios_test.go.
func TestCapLeavesShardsUnownedLoudly(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 20, defaultLeaseDuration)
	ids := names(3)
	var ws []*worker
	for _, id := range ids {
		ws = append(ws, c.startWorker(id, "MAX_LEASES_CAP=5"))
	}
	took := c.waitConverged(60*time.Second, 20, 3, 5, 5)
	t.Logf("MEASURED capped start (20 shards, 3 workers, cap 5) converged: %s", took)

	warned := countLogs(ws, func(e logEntry) bool {
		return strings.Contains(e.Msg, "max leases") && strings.Contains(e.Msg, "unowned")
	})
	if sum(warned) != 3 {
		t.Errorf("workers logging the capped max leases warning: %v, want all 3", warned)
	}
	if n := sum(countLogs(ws, func(e logEntry) bool { return strings.Contains(e.Msg, "SHARDS LEFT UNOWNED") })); n < 1 {
		t.Error("the coordinator did not log SHARDS LEFT UNOWNED")
	}
	for _, w := range ws {
		if got := w.metric(t, "kds_shards_unowned"); got != 5 {
			t.Errorf("%s kds_shards_unowned = %v, want 5", w.ID, got)
		}
		if got := w.metric(t, "kds_recommended_workers"); got != 4 {
			t.Errorf("%s kds_recommended_workers = %v, want 4", w.ID, got)
		}
		if got := w.metric(t, "kds_leases_held"); got != 5 {
			t.Errorf("%s kds_leases_held = %v, want 5", w.ID, got)
		}
	}
}
