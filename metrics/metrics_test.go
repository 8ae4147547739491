package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func TestStatusGaugesAndHookCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := consumer.Status{Ready: true, Coordinator: true, Target: 80, Leases: make([]string, 80), MaxLeasesPerWorker: 80,
		ShardCount: 300, WorkerCount: 3, LiveWorkers: 3, UnownedShards: 60, RecommendedWorkers: 4, OwnedLeases: 240,
		StoppedShards: []string{"s9"}}
	m, err := New(reg, func() consumer.Status { return st })
	if err != nil {
		t.Fatal(err)
	}
	h := m.Hooks()
	h.LeaseTaken("s1", 1)
	h.LeaseTaken("s2", 1)
	h.LeaseReleased("s1")
	h.LeaseLost("s2")
	h.RecordsProcessed("s3", 10, 1500)
	h.RecordsProcessed("s3", 5, 0)
	h.Checkpointed("s3", nil)
	h.Checkpointed("s3", lease.ErrConflict)
	h.Checkpointed("s3", errors.New("network"))
	h.ProcessorFailed("s9", errors.New("bad record"))
	h.ProcessorFailed("s9", errors.New("bad record"))
	h.BatchAbandoned("s9", consumer.FailureStop, 12)
	checks := map[prometheus.Collector]float64{
		m.processorFailures: 2, m.abandoned.WithLabelValues("stop"): 1, m.abandoned.WithLabelValues("skip"): 0,
		m.takes: 2, m.releases: 1, m.losses: 1, m.records: 15, m.batches: 2,
		m.checkpoints.WithLabelValues("ok"): 1, m.checkpoints.WithLabelValues("lease_lost"): 1,
		m.checkpoints.WithLabelValues("error"): 1, m.lag.WithLabelValues("s3"): 0,
	}
	for c, want := range checks {
		if got := testutil.ToFloat64(c); got != want {
			t.Errorf("%v = %v, want %v", c, got, want)
		}
	}
	want := `
# HELP kds_recommended_workers Workers needed so that no shard is left unowned under the cap (for autoscalers).
# TYPE kds_recommended_workers gauge
kds_recommended_workers 4
# HELP kds_shards_unowned Open shards that no worker may take under the cap.
# TYPE kds_shards_unowned gauge
kds_shards_unowned 60
# HELP kds_leases_held Leases this worker holds.
# TYPE kds_leases_held gauge
kds_leases_held 80
# HELP kds_coordinator 1 while this worker is the coordinator.
# TYPE kds_coordinator gauge
kds_coordinator 1
# HELP kds_shards_stopped Shards this worker holds but stopped reading: their processor kept failing (ON_PROCESSOR_FAILURE=stop). Alert when above 0.
# TYPE kds_shards_stopped gauge
kds_shards_stopped 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"kds_recommended_workers", "kds_shards_unowned", "kds_leases_held", "kds_coordinator", "kds_shards_stopped"); err != nil {
		t.Fatal(err)
	}
}

// The middleware counts real requests and their error codes, on the real DynamoDB engine.
func TestAWSMiddlewareCountsRequestsAndErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg, func() consumer.Status { return consumer.Status{} })
	if err != nil {
		t.Fatal(err)
	}
	client := dynamodb.NewFromConfig(enginetest.AWSConfig(t), func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, m.AWSMiddleware("dynamodb"))
	})
	for range 3 {
		if _, err := client.ListTables(t.Context(), &dynamodb.ListTablesInput{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = client.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(enginetest.UniqueName(t, "missing"))})
	if err == nil {
		t.Fatal("DescribeTable of a missing table succeeded")
	}
	if got := testutil.ToFloat64(m.awsRequests.WithLabelValues("dynamodb", "ListTables")); got != 3 {
		t.Errorf("ListTables requests = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.awsErrors.WithLabelValues("dynamodb", "DescribeTable", "ResourceNotFoundException")); got != 1 {
		t.Errorf("DescribeTable ResourceNotFoundException errors = %v, want 1", got)
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := RegisterBuildInfo(reg, "v1.2.0", "0123456789ab", "go1.26.0"); err != nil {
		t.Fatal(err)
	}
	want := `# HELP kds_build_info Always 1: the build of the running binary in its labels.
# TYPE kds_build_info gauge
kds_build_info{go_version="go1.26.0",revision="0123456789ab",version="v1.2.0"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kds_build_info"); err != nil {
		t.Error(err)
	}
}
