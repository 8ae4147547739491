// Command kds-consumer is a Kinesis consumer worker: it shares a stream's shards with
// the other workers of its application through leases in DynamoDB and runs a demo record
// processor (count, log, checkpoint every batch) on each shard it holds.
//
// Configuration comes from flags and the same-named environment variables; run with
// --help for the list (`kds-consumer version` or --version prints the build). Invalid
// settings exit with status 2 and a message naming them.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/awsenv"
	"github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo"
	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/kubeworkers"
	"github.com/kds-lease-manager/kds-lease-manager/metrics"
	"github.com/kds-lease-manager/kds-lease-manager/multilang"
	"github.com/kds-lease-manager/kds-lease-manager/takeover"
)

func main() {
	host, _ := os.Hostname()
	s, err := parseSettings(os.Args[1:], os.Getenv, host, os.Stderr)
	if err != nil {
		os.Exit(settingsExit(err, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := newLogger(s)
	for _, w := range s.Warnings {
		log.Warn(w)
	}
	if err := run(ctx, s, log); err != nil {
		fmt.Fprintf(os.Stderr, "kds-consumer: %v\n", err)
		var se *settingError
		if errors.As(err, &se) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// settingsExit answers an invocation that does not run a worker and returns its exit
// status: 0 after --help or a version request, 2 for bad settings (named on stderr).
func settingsExit(err error, stdout, stderr io.Writer) int {
	switch {
	case errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(stdout, "kds-consumer", buildinfo.Read())
		return 0
	}
	fmt.Fprintf(stderr, "kds-consumer: %v\n", err)
	return 2
}

// statefulSetReplicas watches the workers' StatefulSet for its replica count. A worker that
// cannot read it (RBAC, API server away) still starts: the coordinator counts live workers
// until the count can be read, and says so.
func statefulSetReplicas(ctx context.Context, s settings, log *slog.Logger) (*kubeworkers.Replicas, error) {
	klog.SetSlogLogger(log.With("component", "client-go"))
	ns, err := kubeworkers.Namespace(s.PodNamespace)
	if err != nil {
		return nil, err
	}
	name := s.StatefulSetName
	if name == "" {
		if name, err = kubeworkers.StatefulSetName(s.WorkerID); err != nil {
			return nil, err
		}
	}
	restCfg, err := kubeworkers.Config()
	if err != nil {
		return nil, err
	}
	r, err := kubeworkers.New(restCfg, ns, name, log)
	if err != nil {
		return nil, err
	}
	go r.Run(ctx)
	if err := r.WaitSynced(ctx, 5*time.Second); err != nil {
		log.Warn("cannot read the StatefulSet's replica count; counting live workers by heartbeat until it can be read",
			"statefulset", ns+"/"+name, "err", err)
	}
	return r, nil
}

func newLogger(s settings) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(s.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if s.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	// A persistent failure (a deleted stream or table) repeats on every retry of every
	// shard; say it once per window instead of flooding the log.
	return slog.New(newRepeatFilter(h, repeatWindow))
}

func run(ctx context.Context, s settings, log *slog.Logger) error {
	awsCfg, err := awsenv.Load(ctx, awsconfig.LoadDefaultConfig, s.Region)
	if err != nil {
		return err
	}
	var endpoint *string
	if s.Endpoint != "" {
		endpoint = aws.String(s.Endpoint)
	}
	// The worker is created below; the status collector reads it at scrape time.
	var w *consumer.Worker
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg, func() consumer.Status { return w.Status() })
	if err != nil {
		return err
	}
	build := buildinfo.Read()
	if err := metrics.RegisterBuildInfo(reg, build.Version, build.Revision, build.GoVersion); err != nil {
		return err
	}
	// A per-service endpoint variable wins over AWS_ENDPOINT_URL, as in the SDK.
	ddb := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
		if endpoint != nil && s.DynamoDBEndpoint == "" {
			o.BaseEndpoint = endpoint
		}
		o.APIOptions = append(o.APIOptions, m.AWSMiddleware("dynamodb"))
	})
	kin := kinesis.NewFromConfig(awsCfg, func(o *kinesis.Options) {
		if endpoint != nil && s.KinesisEndpoint == "" {
			o.BaseEndpoint = endpoint
		}
		o.APIOptions = append(o.APIOptions, m.AWSMiddleware("kinesis"))
	})
	var storeOpts []dynamostore.Option
	if s.LeaseTable != "" {
		storeOpts = append(storeOpts, dynamostore.WithLeaseTable(s.LeaseTable))
	}
	store, err := dynamostore.New(ddb, s.AppName, storeOpts...)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	if s.CreateTables {
		err = store.EnsureTables(tctx)
	} else {
		err = store.CheckTables(tctx)
	}
	cancel()
	if errors.Is(err, dynamostore.ErrAdoptedTableMissing) {
		// A table to adopt that is not there is a wrong setting, not a failure.
		return s.invalid(&s.LeaseTable, s.LeaseTable, err.Error())
	}
	if err != nil {
		return unreachable("DynamoDB", ddb.Options().Region, aws.ToString(ddb.Options().BaseEndpoint), time.Minute, err)
	}
	source := kinesisstream.New(kin, s.StreamName)
	factory, closeFactory, err := processorFactory(s, log)
	if err != nil {
		return err
	}
	defer closeFactory()

	cfg := s.Config
	if s.DeadLetterStream != "" {
		cfg.DeadLetter = &kinesisstream.DeadLetterStream{API: kin, Stream: s.DeadLetterStream}
	}
	cfg.Logger = log
	cfg.Hooks = m.Hooks()
	switch s.WorkerCountSource {
	case "static":
		cfg.WorkerCounter = consumer.StaticWorkers(s.WorkerCount)
	case "kubernetes":
		counter, err := statefulSetReplicas(ctx, s, log)
		if err != nil {
			return err
		}
		cfg.WorkerCounter = counter
	}
	w, err = consumer.New(cfg, store, store, source, factory)
	if err != nil {
		return err
	}

	srv := &http.Server{Addr: s.HealthAddr, Handler: healthHandler(w, reg), ReadHeaderTimeout: 5 * time.Second}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.ListenAndServe() }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	select {
	case err := <-srvErr:
		return fmt.Errorf("health endpoint on %s: %w (set HEALTH_ADDR)", s.HealthAddr, err)
	case <-time.After(50 * time.Millisecond):
	}
	if s.DashboardAddr != "" {
		stop, err := serveDashboard(ctx, s, store, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	// Alive (/health) and not ready (/ready) while the stream is missing or being created.
	sw := defaultStreamWait()
	if err := waitForStream(ctx, source.CheckStream, sw, log); err != nil {
		if ctx.Err() != nil {
			return nil // Stopped before the stream came: nothing to hand over.
		}
		return unreachable("Kinesis", kin.Options().Region, aws.ToString(kin.Options().BaseEndpoint), sw.timeout, err)
	}
	// After the health endpoint is up (alive, not ready) and before the worker takes
	// any lease.
	if err := checkTakeover(ctx, s, store, log); err != nil || ctx.Err() != nil {
		return err
	}
	return w.Run(ctx)
}

// processorFactory returns the MultiLang record processor's factory when a command is
// set, else the demo processor's with its record log (closed by the returned func).
func processorFactory(s settings, log *slog.Logger) (consumer.ProcessorFactory, func(), error) {
	if s.MultiLangCommand != "" {
		f, err := multilang.NewFactory(multilang.Config{Command: strings.Fields(s.MultiLangCommand), WorkerID: s.WorkerID,
			ActionTimeout: s.MultiLangTimeout, Logger: log.With("component", "multilang")})
		if err != nil {
			return nil, nil, s.invalid(&s.MultiLangCommand, s.MultiLangCommand, err.Error())
		}
		log.Info("running a KCL MultiLang record processor per shard", "command", s.MultiLangCommand, "action_timeout", s.MultiLangTimeout)
		return f.Processor, f.Wait, nil
	}
	recorder, err := recordlog.Open(s.RecordLogDir, s.WorkerID)
	if err != nil {
		return nil, nil, s.invalid(&s.RecordLogDir, s.RecordLogDir, err.Error())
	}
	return demoFactory(log, recorder, s), func() { recorder.Close() }, nil
}

// checkTakeover refuses to start, or waits, while KCL workers still renew leases in the
// lease table (package takeover), unless KCL_CHECK=false. It returns nil when ctx ends
// while it waits: the worker was asked to stop.
func checkTakeover(ctx context.Context, s settings, store *dynamostore.Store, log *slog.Logger) error {
	if !s.KCLCheck {
		return nil
	}
	err := takeover.Check{Leases: store, Meta: store, Table: store.LeaseTable(),
		Window: cmp.Or(s.KCLCheckWindow, s.LeaseDuration, consumer.DefaultLeaseDuration),
		Wait:   s.WaitForKCLShutdown, Logger: log}.Run(ctx)
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, takeover.ErrStillRenewing):
		return fmt.Errorf("%w, or set WAIT_FOR_KCL_SHUTDOWN=true to wait until it has stopped "+
			"(KCL_CHECK=false skips this check; see docs/migrating-from-kcl.md)", err)
	}
	return err
}
