//go:build bench

package e2e

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/sim"
)

// costTolerance is how far the engines' figures may be from the simulator's.
const costTolerance = 0.10

// TestCostCheck is `make cost-check`: a real-engine check of the simulator's cost model.
// It runs KDS_COST_WORKERS (default 10) real worker processes over KDS_COST_SHARDS
// (default 300) shards on the local engines, the size of `make bench` item 8 (the largest
// these 2 cores hold with the engines and the other runs beside them), measures one
// steady-state window of KDS_COST_WINDOW_SECONDS (default 120) at the edge (requests on
// the app's two tables, and the capacity units dynalite reports, corrected by the edge
// where dynalite differs from DynamoDB), runs the simulator's scale script at the same
// size (cost only), and fails when the requests a minute of any DynamoDB operation, or
// the read or write units a minute, differ by more than 10%. KDS_COST_OUT names a file
// for the table.
//
// Both sides run the same workers with the same settings: lease duration
// sim.ScaleLeaseDuration (the e2e default), every other setting the library's default
// (heartbeat every LeaseDuration/3, poll every second, cleanup every minute, every
// checkpoint written); both measure after the workers are balanced and steadyAfter more,
// past the join's fast polling, with no records flowing (no checkpoints). Differences
// that remain, all small at this size:
//   - the coordinator's cleanup (a lease-table Scan once a minute, 1 request of ~60 a
//     minute on Scan, ~7 read units) falls once or twice into a 2-minute window, or
//     three times on the engines, depending on where the window starts;
//   - item sizes: dynalite counts a number's size within a byte of DynamoDB's rule that
//     the simulator uses; no item is near a 1 KB (write) or 4 KB (read) boundary, except
//     the lease-table Scan's total, a unit either way;
//   - timing: on the real engines a request takes time and the workers' tickers drift
//     with it (a heartbeat every 3.33 s plus the time to write it), and a busy machine
//     delays polls; the simulator's requests take no virtual time.
//
// The workers' Kinesis requests are not compared: the simulator's stream is in memory.
// They are paced down (KDS_COST_IDLE_BETWEEN_READS, default 10s between empty GetRecords
// instead of the e2e tests' 200ms): 300 shards at 5 reads a second saturate kinesis-local
// on 2 shared cores until its answers time out. The pacing changes no DynamoDB request;
// a saturated kinesis-local does: the coordinator, held up by Kinesis timeouts (its shard
// listing), writes the membership view less often than every poll, and the other
// workers, seeing the view stall, read the whole metadata table instead (see
// consumer/membership.go): GetItem and UpdateItem far below the simulator, Scan far above.
func TestCostCheck(t *testing.T) {
	shards, workers := envInt("KDS_COST_SHARDS", 300), envInt("KDS_COST_WORKERS", 10)
	window := time.Duration(envInt("KDS_COST_WINDOW_SECONDS", 120)) * time.Second
	idle := cmp.Or(os.Getenv("KDS_COST_IDLE_BETWEEN_READS"), "10s")
	if defaultLeaseDuration != sim.ScaleLeaseDuration {
		t.Fatalf("the e2e workers' lease duration %s is not the simulator's %s", defaultLeaseDuration, sim.ScaleLeaseDuration)
	}

	// The simulator first (seconds of CPU), then the engines.
	var res sim.ScaleResult
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		res = sim.RunScale(sim.ScaleConfig{Seed: 1, Shards: shards, Workers: workers, CostOnly: true, CostWindow: window})
	})
	t.Logf("simulator: %s virtual in %s", res.Virtual.Round(time.Second), time.Since(wall).Round(time.Second))
	for _, v := range res.Violations[:min(len(res.Violations), 10)] {
		t.Errorf("simulator: invariant violation: %s", v)
	}

	c := newCluster(t, shards, defaultLeaseDuration)
	for _, id := range names(workers) {
		c.startWorker(id, "IDLE_TIME_BETWEEN_READS="+idle)
	}
	c.waitBalanced(180*time.Second, shards, (shards+workers-1)/workers, names(workers)...)
	time.Sleep(steadyAfter)
	eng := measureUsage(t, c, window, nil)

	rows, failed := compareCost(eng, res.Steady)
	var b strings.Builder
	fmt.Fprintf(&b, "## DynamoDB cost: real engines vs simulator, %d workers / %d shards, steady state over %s (tolerance %.0f%%)\n\n",
		workers, shards, window, costTolerance*100)
	fmt.Fprintln(&b, "| per minute | engines (edge) | simulator | difference |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintln(&b, r)
	}
	fmt.Fprintf(&b, "\nEngines by operation and table: %s\n\nSimulator by operation: %s\n", opsString(eng.requests), res.Steady.OpsString())
	fmt.Println("\n" + b.String())
	if out := os.Getenv("KDS_COST_OUT"); out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range failed {
		t.Errorf("%s differs by more than %.0f%%", f, costTolerance*100)
	}
}

// compareCost returns the table rows (requests a minute per DynamoDB operation, then all
// requests, read and write units) and the figures that differ by more than costTolerance.
func compareCost(eng usage, s sim.Rate) (rows, failed []string) {
	f := float64(time.Minute) / float64(s.Window)
	simOps := map[string]float64{}
	for op, st := range s.ByOp {
		name, _, _ := strings.Cut(op, " ") // "GetItem coordinator (eventual)": GetItem
		simOps[name] += float64(st.Requests) * f
	}
	engOps := eng.byOperation()
	var ops []string
	for op := range simOps {
		ops = append(ops, op)
	}
	for op := range engOps {
		if _, ok := simOps[op]; !ok {
			ops = append(ops, op)
		}
	}
	slices.SortFunc(ops, func(a, b string) int {
		return cmp.Or(cmp.Compare(simOps[b]+engOps[b], simOps[a]+engOps[a]), strings.Compare(a, b))
	})
	row := func(name string, e, s float64) {
		d := math.Inf(1)
		switch {
		case s != 0:
			d = (e - s) / s
		case e == 0:
			d = 0
		}
		mark := ""
		if math.Abs(d) > costTolerance {
			mark = " **over**"
			failed = append(failed, fmt.Sprintf("%s: engines %.1f, simulator %.1f", name, e, s))
		}
		rows = append(rows, fmt.Sprintf("| %s | %.1f | %.1f | %+.1f%%%s |", name, e, s, d*100, mark))
	}
	for _, op := range ops {
		row(op+" requests", engOps[op], simOps[op])
	}
	row("all requests", eng.total(), s.Requests)
	row("read units", eng.rru, s.ReadUnits)
	row("write units", eng.wru, s.WriteUnits)
	return rows, failed
}

// opsString lists requests a minute by key, most first.
func opsString(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.1f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
