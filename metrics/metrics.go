// Package metrics exports a consumer.Worker's state and activity as Prometheus metrics:
// gauges read from Worker.Status at scrape time (the application-wide ones, the
// coordinator record's values, are the same on every worker: aggregate them with max),
// counters, the processing-latency histogram and the per-shard lag fed by
// consumer.Hooks, and per-operation AWS request counters fed by an AWS SDK middleware.
// The chart's Grafana board and alert rules (deploy/helm/kds-lease-manager/files) use
// these names.
package metrics

import (
	"context"
	"errors"
	"sync"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

const namespace = "kds"

// Metrics holds one worker's metrics.
type Metrics struct {
	takes, releases, losses prometheus.Counter
	records, batches        prometheus.Counter
	malformed, discarded    prometheus.Counter
	targetChanges           prometheus.Counter
	processorFailures       prometheus.Counter
	abandoned               *prometheus.CounterVec
	checkpoints             *prometheus.CounterVec
	processing              prometheus.Histogram
	lag                     *lagCollector
	awsRequests             *prometheus.CounterVec
	awsErrors               *prometheus.CounterVec
}

// New registers the metrics on reg. status is called at every scrape (Worker.Status).
func New(reg prometheus.Registerer, status func() consumer.Status) (*Metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	}
	m := &Metrics{
		takes:         counter("lease_takes_total", "Leases this worker took."),
		releases:      counter("lease_releases_total", "Leases this worker released (rebalancing, shutdown, shard end)."),
		losses:        counter("lease_losses_total", "Leases this worker lost without releasing them (taken over or self-fenced)."),
		records:       counter("records_processed_total", "Records processed."),
		batches:       counter("batches_processed_total", "Non-empty GetRecords batches processed."),
		targetChanges: counter("max_leases_changes_total", "Changes of the max leases per worker this worker obeys."),
		malformed: counter("kpl_malformed_aggregates_total",
			"Records with the KPL aggregate prefix that are not valid aggregates (bad MD5, truncated, bad protobuf): delivered whole."),
		discarded: counter("kpl_discarded_user_records_total",
			"User records of KPL aggregates not delivered because a hash key of the aggregate is outside the shard's range (as the KCL does)."),
		processorFailures: counter("processor_failures_total", "Errors ProcessRecords returned (each try of a batch)."),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "batches_abandoned_total",
			Help: "Batches the processor kept failing on, by what ON_PROCESSOR_FAILURE did: stop, skip or dead-letter."}, []string{"policy"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "checkpoint_writes_total",
			Help: "Checkpoint writes by result: ok, lease_lost or error."}, []string{"result"}),
		processing: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "processing_duration_seconds",
			Help:    "Time ProcessRecords took, each call (each try of a batch, failed ones included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		lag: &lagCollector{now: time.Now, shards: map[string]shardLag{}, desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "lag_seconds"),
			lagHelp, []string{"shard"}, nil)},
		awsRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "aws_requests_total",
			Help: "AWS API requests sent (each attempt), by service and operation."}, []string{"service", "operation"}),
		awsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "aws_request_errors_total",
			Help: "AWS API requests that failed, by service, operation and error code."}, []string{"service", "operation", "code"}),
	}
	// Every known label value exported from the start (at 0), so that the series exist
	// for rates and alerts before the first event.
	for _, p := range []consumer.FailurePolicy{consumer.FailureStop, consumer.FailureSkip, consumer.FailureDeadLetter} {
		m.abandoned.WithLabelValues(string(p))
	}
	for _, r := range []string{"ok", "lease_lost", "error"} {
		m.checkpoints.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.takes, m.releases, m.losses, m.records, m.batches, m.targetChanges, m.malformed, m.discarded,
		m.processorFailures, m.abandoned, m.checkpoints, m.processing, m.lag, m.awsRequests, m.awsErrors, statusCollector{status}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RegisterBuildInfo registers kds_build_info: always 1, with the build's version,
// revision and Go version as labels (the Prometheus convention for build information,
// to join on or to alert on a fleet running mixed builds).
func RegisterBuildInfo(reg prometheus.Registerer, version, revision, goVersion string) error {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help: "Always 1: the build of the running binary in its labels."}, []string{"version", "revision", "go_version"})
	if err := reg.Register(g); err != nil {
		return err
	}
	g.WithLabelValues(version, revision, goVersion).Set(1)
	return nil
}

// Hooks returns the consumer hooks that feed the counters. Chain them with the
// application's own hooks if it has any.
func (m *Metrics) Hooks() consumer.Hooks {
	return consumer.Hooks{
		TargetChanged: func(int, int) { m.targetChanges.Inc() },
		LeaseTaken:    func(string, int64) { m.takes.Inc() },
		LeaseReleased: func(shard string) { m.releases.Inc(); m.lag.forget(shard) },
		LeaseLost:     func(shard string) { m.losses.Inc(); m.lag.forget(shard) },
		RecordsRead:   m.lag.read,
		RecordsProcessed: func(shard string, n int, _ int64) {
			m.records.Add(float64(n))
			m.batches.Inc()
			m.lag.processed(shard)
		},
		ProcessorReturned: func(_ string, _ int, took time.Duration, _ error) {
			m.processing.Observe(took.Seconds())
		},
		MalformedAggregate: func(string, string, error) { m.malformed.Inc() },
		AggregateDiscarded: func(_, _ string, n int) { m.discarded.Add(float64(n)) },
		ProcessorFailed:    func(string, error) { m.processorFailures.Inc() },
		BatchAbandoned: func(_ string, policy consumer.FailurePolicy, _ int) {
			m.abandoned.WithLabelValues(string(policy)).Inc()
		},
		Checkpointed: func(_ string, err error) {
			switch {
			case err == nil:
				m.checkpoints.WithLabelValues("ok").Inc()
			case errors.Is(err, lease.ErrConflict):
				m.checkpoints.WithLabelValues("lease_lost").Inc()
			default:
				m.checkpoints.WithLabelValues("error").Inc()
			}
		},
	}
}

// AWSMiddleware counts every request attempt of an AWS SDK client, by operation, and its
// failures by error code. Add it to a client's options:
//
//	dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
//		o.APIOptions = append(o.APIOptions, m.AWSMiddleware("dynamodb"))
//	})
func (m *Metrics) AWSMiddleware(service string) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		// In the finalize step after the retry middleware, so each attempt counts: that is
		// what is billed and throttled.
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("kdsRequestMetrics",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				op := awsmiddleware.GetOperationName(ctx)
				m.awsRequests.WithLabelValues(service, op).Inc()
				out, md, err := next.HandleFinalize(ctx, in)
				if err != nil {
					code := "other"
					var apiErr smithy.APIError
					if errors.As(err, &apiErr) {
						code = apiErr.ErrorCode()
					} else if ctx.Err() != nil {
						code = "canceled"
					}
					m.awsErrors.WithLabelValues(service, op, code).Inc()
				}
				return out, md, err
			}), middleware.After)
	}
}

// lagCollector exports kds_lag_seconds{shard} for every shard held: the MillisBehindLatest
// of the shard's last GetRecords response (empty ones included, so an idle shard has a
// series, at 0), plus, while the records of that response are still with the processor
// (being processed, retried, or held by a stopped shard), the time since the read: a
// stuck processor shows a growing lag, not the frozen one of its last read.
type lagCollector struct {
	desc   *prometheus.Desc
	now    func() time.Time
	mu     sync.Mutex
	shards map[string]shardLag
}

const lagHelp = "How far behind the tip of the shard this worker is, per shard held: MillisBehindLatest of the last read, " +
	"plus the time since that read while its records are still with the processor."

type shardLag struct {
	behind time.Duration
	readAt time.Time
	busy   bool // the records of the last read are not processed yet
}

func (c *lagCollector) read(shard string, records int, behind int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shards[shard] = shardLag{behind: time.Duration(behind) * time.Millisecond, readAt: c.now(), busy: records > 0}
}

func (c *lagCollector) processed(shard string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.shards[shard]; ok {
		l.busy = false
		c.shards[shard] = l
	}
}

func (c *lagCollector) forget(shard string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.shards, shard)
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for shard, l := range c.shards {
		lag := l.behind
		if l.busy {
			lag += max(0, now.Sub(l.readAt))
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, lag.Seconds(), shard)
	}
}

// statusCollector turns Worker.Status into gauges at scrape time.
type statusCollector struct{ status func() consumer.Status }

// gauges are read from Worker.Status. The application-wide ones are the coordinator
// record's values: every worker exports the same value, so aggregate them with max
// (or pick one pod), never sum; their HELP text says so.
var gauges = []struct {
	name, help string
	appWide    bool
	value      func(consumer.Status) float64
}{
	{"leases_held", "Leases this worker holds.", false, func(s consumer.Status) float64 { return float64(len(s.Leases)) }},
	{"max_leases_per_worker", "Max leases per worker this worker obeys.", false, func(s consumer.Status) float64 { return float64(s.Target) }},
	{"coordinator_max_leases_per_worker", "min(cap, ceil(shards / desired workers)) as the coordinator computed it.", true, func(s consumer.Status) float64 { return float64(s.MaxLeasesPerWorker) }},
	{"shards_open", "Open shards of the stream.", true, func(s consumer.Status) float64 { return float64(s.ShardCount) }},
	{"shards_owned", "Leases held by live workers, as they report.", true, func(s consumer.Status) float64 { return float64(s.OwnedLeases) }},
	{"shards_unowned", "Open shards that no worker may take under the cap.", true, func(s consumer.Status) float64 { return float64(s.UnownedShards) }},
	{"workers_desired", "Desired worker count the coordinator divides by.", true, func(s consumer.Status) float64 { return float64(s.WorkerCount) }},
	{"workers_live", "Workers with fresh heartbeats.", true, func(s consumer.Status) float64 { return float64(s.LiveWorkers) }},
	{"recommended_workers", "Workers needed so that no shard is left unowned under the cap (for autoscalers).", true, func(s consumer.Status) float64 { return float64(s.RecommendedWorkers) }},
	{"shards_stopped", "Shards this worker holds but stopped reading: their processor kept failing (ON_PROCESSOR_FAILURE=stop). Alert when above 0.", false, func(s consumer.Status) float64 { return float64(len(s.StoppedShards)) }},
	{"coordinator", "1 while this worker is the coordinator.", false, func(s consumer.Status) float64 { return b2f(s.Coordinator) }},
	{"ready", "1 once the worker has joined.", false, func(s consumer.Status) float64 { return b2f(s.Ready) }},
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// appWideHelp ends the HELP text of an application-wide gauge.
const appWideHelp = " Application-wide: every worker exports the coordinator's value (aggregate with max, not sum)."

func desc(name, help string, appWide bool) *prometheus.Desc {
	if appWide {
		help += appWideHelp
	}
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, nil, nil)
}

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range gauges {
		ch <- desc(g.name, g.help, g.appWide)
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	for _, g := range gauges {
		ch <- prometheus.MustNewConstMetric(desc(g.name, g.help, g.appWide), prometheus.GaugeValue, g.value(s))
	}
}
