package sim

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

var (
	flagScale         = flag.String("sim.scale", "", "scale runs: comma-separated SHARDSxWORKERS sizes, e.g. 100x10,1000x50 (empty: skipped)")
	flagScaleRolling  = flag.Int("sim.scale.rolling", 0, "scale runs: restart at most this many workers in the rolling restart (0: all)")
	flagScaleReshard  = flag.Bool("sim.scale.reshard", true, "scale runs: include the reshard M -> 2M")
	flagScaleBaseline = flag.Bool("sim.scale.baseline", true, "scale runs: also run the KCL-style baseline")
	flagScaleCostOnly = flag.Bool("sim.scale.costonly", false, "scale runs: cold start and steady-state cost only")
	flagScaleOut      = flag.String("sim.scale.out", "", "scale runs: also write the markdown table to this file")
	flagScaleFlow     = flag.Duration("sim.scale.flow", 0, "scale runs: also measure a cost window of this length with records flowing (checkpoints counted)")
	flagScaleCkpt     = flag.Duration("sim.scale.checkpoint", 0, "scale runs: the workers' checkpoint interval (0: every checkpoint written)")
	flagScaleProduce  = flag.Duration("sim.scale.produce", 0, "scale runs: the producer's period (0: 50ms, 20 records a second)")
)

// parseSizes parses "100x10,1000x50" as (shards, workers) pairs.
func parseSizes(s string) ([][2]int, error) {
	var out [][2]int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, b, ok := strings.Cut(f, "x")
		m, err1 := strconv.Atoi(a)
		n, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || m < 1 || n < 1 {
			return nil, fmt.Errorf("size %q: want SHARDSxWORKERS, e.g. 1000x50", f)
		}
		out = append(out, [2]int{m, n})
	}
	return out, nil
}

func TestScale(t *testing.T) {
	if *flagScale == "" {
		t.Skip("scale runs need -sim.scale=SHARDSxWORKERS[,...] (make sim-scale)")
	}
	sizes, err := parseSizes(*flagScale)
	if err != nil {
		t.Fatal(err)
	}
	var runs []ScaleResult
	var base []*BaselineResult
	for _, sz := range sizes {
		t.Run(fmt.Sprintf("%dx%d", sz[0], sz[1]), func(t *testing.T) {
			progress := func(p string) { t.Logf("%s: %s", time.Now().Format("15:04:05"), p) }
			cfg := ScaleConfig{Seed: 1, Shards: sz[0], Workers: sz[1], Rolling: *flagScaleRolling, SkipReshard: !*flagScaleReshard, CostOnly: *flagScaleCostOnly,
				FlowWindow: *flagScaleFlow, CheckpointInterval: *flagScaleCkpt, ProduceEvery: *flagScaleProduce}
			var res ScaleResult
			var br *BaselineResult
			wall := time.Now()
			synctest.Test(t, func(t *testing.T) {
				cfg.Progress = func(p string) { progress(p) }
				res = RunScale(cfg)
			})
			ours := time.Since(wall)
			memOurs := heapMB()
			if *flagScaleBaseline {
				wall = time.Now()
				synctest.Test(t, func(t *testing.T) {
					x := RunBaseline(BaselineConfig{Seed: 1, Shards: sz[0], Workers: sz[1], Progress: progress})
					br = &x
				})
				t.Logf("baseline: wall %s", time.Since(wall).Round(time.Second))
			}
			t.Logf("kds-lease-manager: wall %s for %s virtual, heap after %d MB (peak sys %d MB)", ours.Round(time.Second), res.Virtual.Round(time.Second), memOurs, sysMB())
			t.Logf("cold start requests: %s", RateOver(res.ColdUsage, time.Minute).OpsString())
			t.Logf("cold start failed conditions: %s", conflictsString(res.ColdUsage))
			for _, v := range res.Violations[:min(len(res.Violations), 20)] {
				t.Errorf("violation: %s", v)
			}
			runs = append(runs, res)
			base = append(base, br)
		})
	}
	rep := ScaleReport(runs, base)
	fmt.Println(rep)
	if *flagScaleOut != "" {
		if err := os.WriteFile(*flagScaleOut, []byte(rep), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func heapMB() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse >> 20
}

func sysMB() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys >> 20
}

func conflictsString(u Usage) string {
	var parts []string
	for _, op := range u.Ops() {
		if c := u[op].Conflicts; c > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", op, c))
		}
	}
	return strings.Join(parts, ", ")
}
