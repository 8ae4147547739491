//go:build scenarios

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// TestSeedScenarios runs the design's five scenarios in sequence on the real engines with
// real worker processes (`make test-all`; about 2 minutes):
//
//  1. 30 shards, 3 workers -> max 10, 10/10/10
//  2. 30 -> 60 shards -> max 20, every open shard owned once its parent finished
//  3. 3 -> 5 workers (30 shards) -> max 6, 6/6/6/6/6
//  4. 300 shards, 3 workers -> ceil 100 capped at 80, 60 shards unowned, said loudly
//  5. 100 shards, 5 workers -> max 20
func TestSeedScenarios(t *testing.T) {
	t.Run("1 and 2: 30 shards / 3 workers, then 60 shards", func(t *testing.T) {
		c := newCluster(t, 30, defaultLeaseDuration)
		c.startWorkers(names(3)...)
		t.Logf("MEASURED scenario 1: converged in %s", c.waitConverged(90*time.Second, 30, 3, 10, 0))
		c.waitBalanced(30*time.Second, 30, 10, names(3)...)

		scaleShards(t, c, 60)
		t.Logf("MEASURED scenario 2: converged in %s", c.waitConverged(90*time.Second, 60, 3, 20, 0))
		o, err := c.ownership()
		if err != nil {
			t.Fatal(err)
		}
		if o.finished != 30 {
			t.Fatalf("%d leases at SHARD_END, want the 30 parents", o.finished)
		}
		c.waitBalanced(30*time.Second, 60, 20, names(3)...)
	})
	t.Run("3: 3 -> 5 workers on 30 shards", func(t *testing.T) {
		c := newCluster(t, 30, defaultLeaseDuration)
		c.startWorkers(names(3)...)
		c.waitConverged(90*time.Second, 30, 3, 10, 0)
		c.startWorkers(names(5)[3:]...)
		t.Logf("MEASURED scenario 3: converged in %s", c.waitConverged(90*time.Second, 30, 5, 6, 0))
		c.waitBalanced(30*time.Second, 30, 6, names(5)...)
	})
	t.Run("4: 300 shards / 3 workers, capped at 80", func(t *testing.T) {
		c := newCluster(t, 300, defaultLeaseDuration)
		ws, _ := c.startWorkers(names(3)...)
		t.Logf("MEASURED scenario 4: converged in %s", c.waitConverged(180*time.Second, 300, 3, 80, 60))
		warned := countLogs(ws, func(e logEntry) bool {
			return strings.Contains(e.Msg, "max leases") && strings.Contains(e.Msg, "unowned")
		})
		if sum(warned) != 3 {
			t.Errorf("workers logging the capped max leases warning: %v, want all 3", warned)
		}
		for _, w := range ws {
			if got := w.metric(t, "kds_shards_unowned"); got != 60 {
				t.Errorf("%s kds_shards_unowned = %v, want 60", w.ID, got)
			}
			if got := w.metric(t, "kds_recommended_workers"); got != 4 {
				t.Errorf("%s kds_recommended_workers = %v, want 4", w.ID, got)
			}
		}
		out := kdsctl(t, c, "metadata")
		if !strings.Contains(out, "60 of 300 shards are UNOWNED") || !strings.Contains(out, "run 4 workers") {
			t.Errorf("kdsctl metadata does not warn about the unowned shards:\n%s", out)
		}
	})
	// The path a new user takes (make up, then kdsctl scale-shards 300): 30 -> 60 -> 120 ->
	// 240 -> 300 under running workers. Closed parents must be taken before open leaves at
	// the cap, and no lease may be taken from a live worker.
	t.Run("4b: 30 -> 300 shards under 3 workers, capped at 80", func(t *testing.T) {
		c := newCluster(t, 30, defaultLeaseDuration)
		// Idle shards polled at the default interval (1 s, as the KCL's): 240 shards polled
		// every 200 ms, as the other tests do, saturate the local Kinesis engine, whose
		// calls then time out (shard listings and iterators included).
		var ws []*worker
		for _, id := range names(3) {
			ws = append(ws, c.startWorker(id, "IDLE_TIME_BETWEEN_READS=1s"))
		}
		c.waitConverged(90*time.Second, 30, 3, 10, 0)
		start := time.Now()
		kdsctl(t, c, "scale-shards", "300")
		t.Logf("MEASURED scenario 4b: resharded to 300 in %s", time.Since(start).Round(time.Millisecond))
		c.waitConverged(300*time.Second, 300, 3, 80, 60)
		t.Logf("MEASURED scenario 4b: 80/80/80 + 60 unowned %s after the reshard started", time.Since(start).Round(time.Millisecond))
		o, err := c.ownership()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ownership: %s", o)
		for _, id := range names(3) {
			if n := len(o.ownedBy(id)); n != 80 {
				t.Errorf("%s owns %d open leases, want 80", id, n)
			}
		}
		stolen := countLogs(ws, msgIs("took expired lease"))
		t.Logf("MEASURED scenario 4b: leases taken from live workers: %d", sum(stolen))
		if sum(stolen) != 0 {
			t.Errorf("leases taken as expired while every worker was alive: %v", stolen)
		}
	})
	t.Run("5: 100 shards / 5 workers", func(t *testing.T) {
		c := newCluster(t, 100, defaultLeaseDuration)
		c.startWorkers(names(5)...)
		t.Logf("MEASURED scenario 5: converged in %s", c.waitConverged(120*time.Second, 100, 5, 20, 0))
		c.waitBalanced(30*time.Second, 100, 20, names(5)...)
	})
}

func scaleShards(t *testing.T, c *cluster, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.kin.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{
		StreamName: aws.String(c.stream), TargetShardCount: aws.Int32(int32(n)), ScalingType: types.ScalingTypeUniformScaling,
	}); err != nil {
		t.Fatal(err)
	}
}

// kdsctl runs the operator tool against the cluster and returns what it printed.
func kdsctl(t *testing.T, c *cluster, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stdout, stderr, err := c.CtlOutput(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(stdout) + string(stderr)
}
