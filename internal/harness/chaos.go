package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// ChaosOptions configures RunChaos.
type ChaosOptions struct {
	WorkerBin, CtlBin string
	// Upstream is the engines' edge URL.
	Upstream string
	Region   string
	// Stream and App name the stream (created by the run) and the application.
	Stream, App string
	// Dir receives record logs and worker logs.
	Dir string
	// Duration is how long records are produced while chaos happens.
	Duration time.Duration
	// LeaseDuration is the workers' LEASE_DURATION.
	LeaseDuration time.Duration
	// Rate (records/s) and Keys configure kdsctl produce.
	Rate float64
	Keys int
	// Shards is the starting shard count; the run scales to twice as many and back.
	Shards int
	// DrainTimeout bounds the wait for the checkpoints to catch up after producing.
	DrainTimeout time.Duration
	// PolicyPath, if set, is the worker IAM policy (docs/iam-policy.json) every action the
	// workers called is checked against; its stream and application names
	// (test-stream, kds-consumer-app) are read as this run's.
	PolicyPath string
	// Seed makes the fault draws repeatable.
	Seed uint64
	// Progress receives a line per step; nil for none.
	Progress io.Writer
	Logger   *slog.Logger
}

func (o *ChaosOptions) defaults() {
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Duration <= 0 {
		o.Duration = 90 * time.Second
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = 3 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 100
	}
	if o.Keys <= 0 {
		o.Keys = 200
	}
	if o.Shards <= 0 {
		o.Shards = 30
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 90 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// LocalAccount is the account id the local engines use in ARNs.
const LocalAccount = "000000000000"

// VerifySummary is what `kdsctl verify -o json` reported for the run.
type VerifySummary = delivery.Run

// Report is what a chaos run injected, saw and concluded.
type Report struct {
	Options    ChaosOptions
	Run        string
	Started    time.Time
	Elapsed    time.Duration
	Events     []Event
	Injected   map[string]map[Injection]int64
	Stats      map[string]localengines.Stats
	Accesses   map[string]map[Access]int64
	Produced   int
	Deliveries int
	Samples    int
	SampleErrs int
	Results    []Result
	Causes     []DuplicateCause
	Verify     *VerifySummary
	VerifyErr  string
	// Errors are failures of the run itself (a step that could not be carried out).
	Errors []string
}

// OK reports whether every invariant held and the run itself went as planned.
func (r *Report) OK() bool {
	if len(r.Errors) > 0 || r.VerifyErr != "" {
		return false
	}
	for _, res := range r.Results {
		if !res.OK() {
			return false
		}
	}
	return true
}

// step is one scheduled chaos action at a fraction of the duration.
type step struct {
	at   float64
	name string
	do   func(ctx context.Context) error
}

// RunChaos runs the chaos scenario and checks the invariants. It returns an error only
// when it could not run at all; broken invariants are in the report (Report.OK).
func RunChaos(ctx context.Context, o ChaosOptions) (*Report, error) {
	o.defaults()
	rep := &Report{Options: o, Run: fmt.Sprintf("chaos-%s-%04x", time.Now().UTC().Format("150405"), rand.IntN(1<<16)), Started: time.Now()}
	progress := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "%6.1fs  %s\n", time.Since(rep.Started).Seconds(), fmt.Sprintf(format, args...))
	}
	c, err := NewCluster(ClusterConfig{
		WorkerBin: o.WorkerBin, CtlBin: o.CtlBin, Upstream: o.Upstream, Region: o.Region,
		Stream: o.Stream, App: o.App, Dir: o.Dir, LeaseDuration: o.LeaseDuration, Logger: o.Logger, Seed: o.Seed,
		// Faster reads of idle shards keep the drain short; still within the 5 reads/s limit.
		WorkerEnv: []string{"IDLE_TIME_BETWEEN_READS=500ms"},
	})
	if err != nil {
		return nil, err
	}
	awsCfg := aws.Config{
		Region:       o.Region,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(o.Upstream),
	}
	store, err := dynamostore.New(dynamodb.NewFromConfig(awsCfg), o.App)
	if err != nil {
		return nil, err
	}
	kin := kinesisstream.New(kinesis.NewFromConfig(awsCfg), o.Stream)

	if _, err := c.Ctl(ctx, "create-stream", o.Stream, "--shards", fmt.Sprint(o.Shards)); err != nil {
		return nil, err
	}
	progress("stream %s created with %d shards", o.Stream, o.Shards)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = c.Close(cctx, 10*time.Second)
	}()

	sampler := NewSampler(store, 200*time.Millisecond)
	sctx, stopSampler := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Go(func() { sampler.Run(sctx) })
	defer func() { stopSampler(); sampling.Wait() }()

	for _, id := range []string{"w0", "w1", "w2"} {
		if err := c.Start(id); err != nil {
			return nil, err
		}
	}
	if err := waitLeases(ctx, store, o.Shards, 60*time.Second); err != nil {
		return nil, fmt.Errorf("workers did not take the %d leases: %w", o.Shards, err)
	}
	progress("3 workers hold all %d leases; producing %g records/s for %s (run %s)", o.Shards, o.Rate, o.Duration, rep.Run)

	prodDone := make(chan error, 1)
	go func() {
		_, err := c.Ctl(ctx, "produce", "--rate", fmt.Sprint(o.Rate), "--duration", o.Duration.String(),
			"--keys", fmt.Sprint(o.Keys), "--run", rep.Run)
		prodDone <- err
	}()

	L := o.LeaseDuration
	hold := func(d time.Duration) func(ctx context.Context) error {
		return func(ctx context.Context) error { return sleep(ctx, d) }
	}
	seq := func(fs ...func(ctx context.Context) error) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			for _, f := range fs {
				if err := f(ctx); err != nil {
					return err
				}
			}
			return nil
		}
	}
	var removeFaults func()
	steps := []step{
		{0.08, "throttle DynamoDB (p=0.2 PTE, p=0.1 ThrottlingException) and Kinesis GetRecords (p=0.3)", func(context.Context) error {
			removeFaults = c.InjectAll(
				Rule{Service: localengines.DynamoDB, Kind: FaultThrottle, Probability: 0.2},
				Rule{Service: localengines.DynamoDB, Kind: FaultThrottle, Code: CodeThrottling, Probability: 0.1},
				Rule{Service: localengines.Kinesis, Operation: "GetRecords", Kind: FaultThrottle, Probability: 0.3})
			return nil
		}},
		{0.14, "SIGKILL w0", func(ctx context.Context) error { return c.Kill(ctx, "w0") }},
		{0.18, "end throttling", func(context.Context) error { removeFaults(); return nil }},
		{0.22, "restart w0", func(context.Context) error { return c.Start("w0") }},
		{0.25, fmt.Sprintf("scale shards %d -> %d", o.Shards, 2*o.Shards), func(ctx context.Context) error {
			return scaleShards(ctx, c, 2*o.Shards)
		}},
		{0.30, "workers 3 -> 5 (start w3, w4)", func(context.Context) error {
			return errors.Join(c.Start("w3"), c.Start("w4"))
		}},
		{0.40, fmt.Sprintf("cut off w1 for %s", 2*L), seq(
			func(context.Context) error { return c.CutOff("w1") }, hold(2*L),
			func(context.Context) error { return c.Heal("w1") })},
		{0.52, fmt.Sprintf("SIGSTOP w2 for %s (zombie), then SIGCONT", 5*L/2), seq(
			func(context.Context) error { return c.Pause("w2") }, hold(5*L/2),
			func(context.Context) error { return c.Resume("w2") })},
		{0.62, "SIGTERM w3", func(ctx context.Context) error { return c.Terminate(ctx, "w3", 30*time.Second) }},
		{0.65, "restart w3", func(context.Context) error { return c.Start("w3") }},
		{0.67, "faults: http-500 p=0.05, drop p=0.03, latency 200ms p=0.2", func(context.Context) error {
			removeFaults = c.InjectAll(
				Rule{Kind: FaultServerError, Probability: 0.05},
				Rule{Kind: FaultDrop, Probability: 0.03},
				Rule{Kind: FaultLatency, Latency: 200 * time.Millisecond, Probability: 0.2})
			return nil
		}},
		{0.72, fmt.Sprintf("scale shards %d -> %d", 2*o.Shards, o.Shards), func(ctx context.Context) error {
			return scaleShards(ctx, c, o.Shards)
		}},
		{0.77, "end faults", func(context.Context) error { removeFaults(); return nil }},
		{0.82, "workers 5 -> 2 (SIGTERM w2, w3, w4)", func(ctx context.Context) error {
			var errs []error
			for _, id := range []string{"w2", "w3", "w4"} {
				errs = append(errs, c.Terminate(ctx, id, 30*time.Second))
			}
			return errors.Join(errs...)
		}},
	}
	chaosStart := time.Now()
	for _, s := range steps {
		if err := sleep(ctx, time.Until(chaosStart.Add(time.Duration(s.at*float64(o.Duration))))); err != nil {
			return nil, err
		}
		progress("%s", s.name)
		if err := s.do(ctx); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", s.name, err))
			progress("  failed: %v", err)
		}
	}
	if err := <-prodDone; err != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("producer: %v", err))
	}
	progress("producer done; waiting for the checkpoints to catch up")

	produced, err := ReadStream(ctx, kin, rep.Run)
	if err != nil {
		return nil, fmt.Errorf("read stream: %w", err)
	}
	final, derr := drain(ctx, store, produced, o.DrainTimeout)
	if derr != nil {
		rep.Errors = append(rep.Errors, derr.Error())
	}
	progress("drained; stopping the workers")
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	if err := c.Close(cctx, 30*time.Second); err != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("stop workers: %v", err))
	}
	cancel()
	stopSampler()
	sampling.Wait()

	deliveries, err := ReadRecordLogs(c.Config().RecordDir())
	if err != nil {
		return nil, err
	}
	samples, sampleErrs := sampler.Samples()
	rep.Events = c.Events()
	rep.Produced, rep.Deliveries, rep.Samples, rep.SampleErrs = len(produced), len(deliveries), len(samples), sampleErrs
	rep.Injected, rep.Stats, rep.Accesses = map[string]map[Injection]int64{}, c.Stats(), map[string]map[Access]int64{}
	for _, w := range c.Workers() {
		rep.Injected[w.ID] = w.Edge.Injector().Injected()
		rep.Accesses[w.ID] = w.Edge.Accesses()
	}
	dups, causes := CheckDuplicates(deliveries, samples, rep.Events)
	rep.Results = []Result{
		CheckLost(produced, deliveries, final),
		CheckOrder(produced, deliveries),
		CheckCheckpoints(samples),
		CheckFencing(samples, deliveries),
		CheckExclusive(deliveries),
		dups,
	}
	rep.Causes = causes
	if o.PolicyPath != "" {
		pol, err := LoadPolicy(o.PolicyPath, map[string]string{
			"${AWS_REGION}": o.Region, "${ACCOUNT_ID}": LocalAccount, "kds-consumer-app": o.App, "test-stream": o.Stream,
		})
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, CheckIAM(pol, rep.Accesses, o.Region, LocalAccount))
	}
	rep.Verify, err = runVerify(ctx, c, rep.Run)
	if err != nil {
		rep.VerifyErr = err.Error()
	}
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

func scaleShards(ctx context.Context, c *Cluster, n int) error {
	e := c.Record(Event{Kind: EventScaleShards, Detail: fmt.Sprintf("to %d", n)})
	_, err := c.Ctl(ctx, "scale-shards", fmt.Sprint(n))
	c.finish(e.Kind, "")
	return err
}

// waitLeases waits until n leases have owners.
func waitLeases(ctx context.Context, store *dynamostore.Store, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		tab, err := store.ListLeases(ctx)
		owned := 0
		if err == nil {
			for _, l := range tab.Leases {
				if l.Owner != "" {
					owned++
				}
			}
			if owned >= n {
				return nil
			}
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("%d of %d owned: %w", owned, n, err)
		}
	}
}

// drain waits until each shard's checkpoint is at or past its last produced record, or
// SHARD_END, and returns the lease table it last read.
func drain(ctx context.Context, store *dynamostore.Store, produced []Produced, timeout time.Duration) ([]lease.Lease, error) {
	last := map[string]string{}
	for _, p := range produced {
		if CompareCheckpoints(p.Seq, last[p.Shard]) > 0 {
			last[p.Shard] = p.Seq
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var tab lease.Table
	for {
		var err error
		behind := len(last)
		if tab, err = store.ListLeases(ctx); err == nil {
			behind = 0
			for _, l := range tab.Leases {
				if s, ok := last[l.ShardID]; ok && CompareCheckpoints(l.Checkpoint, s) < 0 {
					behind++
				}
			}
			byID := map[string]bool{}
			for _, l := range tab.Leases {
				byID[l.ShardID] = true
			}
			for s := range last {
				if !byID[s] {
					behind++
				}
			}
			if behind == 0 {
				return tab.Leases, nil
			}
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return tab.Leases, fmt.Errorf("drain: %d shards still behind their last record after %s", behind, timeout)
		}
	}
}

func runVerify(ctx context.Context, c *Cluster, run string) (*VerifySummary, error) {
	out, err := c.Ctl(ctx, "-o", "json", "verify", "--run", run)
	var r struct {
		Runs []VerifySummary `json:"runs"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil || len(r.Runs) != 1 {
		return nil, errors.Join(err, fmt.Errorf("kdsctl verify: unexpected output %q", tailBytes(out, 500)))
	}
	return &r.Runs[0], err
}
