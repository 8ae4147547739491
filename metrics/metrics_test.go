package metrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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
		m.checkpoints.WithLabelValues("error"): 1,
	}
	for c, want := range checks {
		if got := testutil.ToFloat64(c); got != want {
			t.Errorf("%v = %v, want %v", c, got, want)
		}
	}
	want := `
# HELP kds_recommended_workers Workers needed so that no shard is left unowned under the cap (for autoscalers). Application-wide: every worker exports the coordinator's value (aggregate with max, not sum).
# TYPE kds_recommended_workers gauge
kds_recommended_workers 4
# HELP kds_shards_unowned Open shards that no worker may take under the cap. Application-wide: every worker exports the coordinator's value (aggregate with max, not sum).
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

// kds_lag_seconds follows every read, empty ones included, and grows while the records
// of the last read are still with the processor.
func TestLagSeconds(t *testing.T) {
	type step struct {
		advance time.Duration
		do      func(consumer.Hooks)
	}
	read := func(records int, behind int64) func(consumer.Hooks) {
		return func(h consumer.Hooks) { h.RecordsRead("s1", records, behind) }
	}
	processed := func(h consumer.Hooks) { h.RecordsProcessed("s1", 4, 0) }
	failed := func(h consumer.Hooks) {
		h.ProcessorReturned("s1", 4, time.Second, errors.New("bad"))
		h.ProcessorFailed("s1", nil)
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  string // the s1 sample, "" for none
	}{
		{"idle shard, caught up", []step{{0, read(0, 0)}, {10 * time.Minute, nil}}, "0"},
		{"idle shard behind", []step{{0, read(0, 2500)}, {time.Minute, nil}}, "2.5"},
		{"batch processed", []step{{0, read(4, 1500)}, {3 * time.Second, processed}, {time.Minute, nil}}, "1.5"},
		{"stuck processor", []step{{0, read(4, 1500)}, {time.Minute, nil}}, "61.5"},
		{"failing processor", []step{{0, read(4, 1500)}, {time.Second, failed}, {time.Minute, nil}}, "62.5"},
		{"next read", []step{{0, read(4, 1500)}, {time.Minute, read(0, 0)}, {time.Minute, nil}}, "0"},
		{"lease released", []step{{0, read(4, 1500)}, {0, func(h consumer.Hooks) { h.LeaseReleased("s1") }}}, ""},
		{"lease lost", []step{{0, read(0, 1500)}, {0, func(h consumer.Hooks) { h.LeaseLost("s1") }}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := New(reg, func() consumer.Status { return consumer.Status{} })
			if err != nil {
				t.Fatal(err)
			}
			now := time.Unix(1_700_000_000, 0)
			m.lag.now = func() time.Time { return now }
			h := m.Hooks()
			for _, s := range tc.steps {
				now = now.Add(s.advance)
				if s.do != nil {
					s.do(h)
				}
			}
			want := ""
			if tc.want != "" {
				want = fmt.Sprintf("# HELP kds_lag_seconds %s\n# TYPE kds_lag_seconds gauge\nkds_lag_seconds{shard=\"s1\"} %s\n", lagHelp, tc.want)
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kds_lag_seconds"); err != nil {
				t.Error(err)
			}
		})
	}
}

// The processing histogram times every ProcessRecords call, failed ones included.
func TestProcessingDuration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg, func() consumer.Status { return consumer.Status{} })
	if err != nil {
		t.Fatal(err)
	}
	h := m.Hooks()
	h.ProcessorReturned("s1", 10, 20*time.Millisecond, nil)
	h.ProcessorReturned("s1", 10, 3*time.Second, errors.New("bad"))
	want := `# HELP kds_processing_duration_seconds Time ProcessRecords took, each call (each try of a batch, failed ones included).
# TYPE kds_processing_duration_seconds histogram
kds_processing_duration_seconds_bucket{le="0.001"} 0
kds_processing_duration_seconds_bucket{le="0.0025"} 0
kds_processing_duration_seconds_bucket{le="0.005"} 0
kds_processing_duration_seconds_bucket{le="0.01"} 0
kds_processing_duration_seconds_bucket{le="0.025"} 1
kds_processing_duration_seconds_bucket{le="0.05"} 1
kds_processing_duration_seconds_bucket{le="0.1"} 1
kds_processing_duration_seconds_bucket{le="0.25"} 1
kds_processing_duration_seconds_bucket{le="0.5"} 1
kds_processing_duration_seconds_bucket{le="1"} 1
kds_processing_duration_seconds_bucket{le="2.5"} 1
kds_processing_duration_seconds_bucket{le="5"} 2
kds_processing_duration_seconds_bucket{le="10"} 2
kds_processing_duration_seconds_bucket{le="30"} 2
kds_processing_duration_seconds_bucket{le="60"} 2
kds_processing_duration_seconds_bucket{le="+Inf"} 2
kds_processing_duration_seconds_sum 3.02
kds_processing_duration_seconds_count 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kds_processing_duration_seconds"); err != nil {
		t.Error(err)
	}
}

// The series that rates and alerts need exist before the first event.
func TestSeriesExistBeforeTheFirstEvent(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, func() consumer.Status { return consumer.Status{} }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		series int
	}{
		{"kds_batches_abandoned_total", 3}, {"kds_checkpoint_writes_total", 3}, {"kds_processing_duration_seconds", 1},
		{"kds_processor_failures_total", 1}, {"kds_lease_losses_total", 1}, {"kds_shards_unowned", 1}, {"kds_lag_seconds", 0},
	} {
		if n, err := testutil.GatherAndCount(reg, tc.name); err != nil || n != tc.series {
			t.Errorf("%s: %d series (%v), want %d", tc.name, n, err, tc.series)
		}
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

// collectorsOf records what is registered.
type collectorsOf struct{ cs []prometheus.Collector }

func (r *collectorsOf) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *collectorsOf) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *collectorsOf) Unregister(prometheus.Collector) bool    { return false }

// The docs name every metric the worker exports (in QUICK_REFERENCE.md's metrics
// section), and every kds_ metric they name anywhere is one it exports.
func TestTheDocsNameEveryMetric(t *testing.T) {
	reg := &collectorsOf{}
	if _, err := New(reg, func() consumer.Status { return consumer.Status{} }); err != nil {
		t.Fatal(err)
	}
	if err := RegisterBuildInfo(reg, "v", "r", "go"); err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for _, c := range reg.cs {
		ch := make(chan *prometheus.Desc, 64)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			if m := fqName.FindStringSubmatch(d.String()); m != nil {
				exported[m[1]] = true
			}
		}
	}
	if len(exported) < 20 {
		t.Fatalf("found only %d metrics: %v", len(exported), exported)
	}
	ref, err := os.ReadFile("../docs/QUICK_REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	section, _, _ := strings.Cut(string(ref)[strings.Index(string(ref), "## Metrics"):], "\n## ")
	for name := range exported {
		if !strings.Contains(section, "`"+name) {
			t.Errorf("QUICK_REFERENCE.md's metrics section does not name %s", name)
		}
	}
	docs, _ := filepath.Glob("../docs/*.md")
	for _, f := range append(docs, "../README.md", "../deploy/helm/kds-lease-manager/values.yaml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`\bkds_[a-z_]+[a-z]`).FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
			if !exported[m] && !exported[base] && m != "kds_millis_behind_latest" {
				t.Errorf("%s names %s, which the worker does not export", f, m)
			}
		}
	}
}
