package harness

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
)

// TestShortChaosRun runs the chaos scenario in a short form against the shared engines:
// every invariant, and the IAM policy, must hold.
func TestShortChaosRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	binDir := t.TempDir()
	workerBin, ctlBin, err := BuildBinaries(ctx, binDir)
	if err != nil {
		t.Fatal(err)
	}
	app := enginetest.UniqueName(t, "app")
	streamName := enginetest.UniqueName(t, "s")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if store, err := dynamostore.New(enginetest.DynamoDB(t), app); err == nil {
			_ = store.DeleteTables(ctx)
		}
	})
	var progress strings.Builder
	rep, err := RunChaos(ctx, ChaosOptions{
		WorkerBin: workerBin, CtlBin: ctlBin, Upstream: enginetest.Endpoint(), Region: enginetest.Region,
		Stream: streamName, App: app, Dir: chaosDir(t),
		Duration: 60 * time.Second, LeaseDuration: 3 * time.Second, Rate: 60, Keys: 100, Shards: 30,
		PolicyPath: "../../docs/iam-policy.json", Seed: 42, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("chaos run: %v\n%s", err, progress.String())
	}
	var out strings.Builder
	rep.Print(&out)
	if !rep.OK() {
		t.Fatalf("chaos run failed:\n%s\n%s", progress.String(), out.String())
	}
	t.Logf("\n%s", out.String())
	if rep.Produced == 0 || len(rep.Causes) == 0 && rep.Deliveries > rep.Produced {
		t.Errorf("suspicious run: %d produced, %d processed, causes %v", rep.Produced, rep.Deliveries, rep.Causes)
	}
	iam := rep.Results[len(rep.Results)-1]
	if !strings.Contains(iam.Checked, "dynamodb:UpdateItem") || !strings.Contains(iam.Checked, "kinesis:GetRecords") {
		t.Errorf("IAM check saw too little: %s", iam.Checked)
	}
}

// chaosDir is where the run keeps its worker logs and record logs: a test directory,
// or KDS_CHAOS_KEEP when set (to read the logs of a failed run).
func chaosDir(t *testing.T) string {
	if d := os.Getenv("KDS_CHAOS_KEEP"); d != "" {
		return d
	}
	return t.TempDir()
}
