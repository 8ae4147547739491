//go:build bench

package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
)

// TestBenchmarks is `make bench`: it measures, on the real local engines with real worker
// processes, what the brief promises, and prints one table (medians of KDS_BENCH_RUNS runs,
// default 3). KDS_BENCH_OUT names a file to write the table to as Markdown.
func TestBenchmarks(t *testing.T) {
	runs := envInt("KDS_BENCH_RUNS", 3)
	window := time.Duration(envInt("KDS_BENCH_WINDOW_SECONDS", 60)) * time.Second
	var rows []benchRow
	timed := []struct {
		name, target string
		run          func(t *testing.T) (time.Duration, int)
	}{
		{"1. startup: 3 workers / 30 shards until every shard is processing", "5 s", benchStartup},
		{"2. join: 3 -> 5 workers until balanced 6/6/6/6/6", "<= 5 s, 0 duplicates", benchJoin},
		{"3. kill -9 of a worker until all its shards process elsewhere", "<= 12 s", benchKill},
		{"4. SIGTERM of a worker until all its shards process elsewhere", "<= 3 s, 0 duplicates", benchSigterm},
		{"5. coordinator kill -9 until a new coordinator wrote the value", "<= 12 s", benchCoordinatorKill},
		{"6. reshard 30 -> 60 until every child is processing", "0 duplicates", benchReshard},
	}
	for _, b := range timed {
		var ds []time.Duration
		var dups []int
		for i := range runs {
			t.Run(fmt.Sprintf("%s/run%d", strings.SplitN(b.name, ":", 2)[0], i+1), func(t *testing.T) {
				d, dup := b.run(t)
				ds, dups = append(ds, d), append(dups, dup)
			})
		}
		rows = append(rows, benchRow{b.name, fmt.Sprintf("%.2f s (runs: %s)", median(ds).Seconds(), list(ds)),
			fmt.Sprintf("%v", dups), b.target})
	}
	var cost []string
	for _, size := range []struct{ workers, shards int }{{3, 30}, {10, 300}} {
		t.Run(fmt.Sprintf("8. cost %dw-%ds", size.workers, size.shards), func(t *testing.T) {
			cost = append(cost, benchCost(t, size.workers, size.shards, window)...)
		})
	}
	var throughput []string
	t.Run("9. throughput", func(t *testing.T) { throughput = benchThroughput(t) })

	var b strings.Builder
	fmt.Fprintf(&b, "## Timings (lease duration 10 s; median of %d runs; item 7: records processed twice per run)\n\n", runs)
	fmt.Fprintln(&b, "| benchmark | median (all runs) | 7. duplicates | target |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.name, r.value, r.dups, r.target)
	}
	fmt.Fprintf(&b, "\n## 8. DynamoDB at steady state (measured over %s at the edge: requests on the app's tables, capacity units as the engine reports them)\n\n", window)
	fmt.Fprintln(&b, strings.Join(cost, "\n"))
	fmt.Fprintln(&b, "\n## 9. Records per second through one worker")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, strings.Join(throughput, "\n"))
	fmt.Println("\n" + b.String())
	if out := os.Getenv("KDS_BENCH_OUT"); out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type benchRow struct{ name, value, dups, target string }

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func list(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	return strings.Join(parts, ", ")
}

// duplicates stops background production, waits until every record sent was processed and counts
// the records processed more than once.
func duplicates(c *cluster, p *producer) int {
	_, d, _ := c.drain(p, 0, 90*time.Second)
	n := 0
	for _, times := range d.Duplicated {
		n += times - 1
	}
	return n
}

func benchStartup(t *testing.T) (time.Duration, int) {
	c := newCluster(t, 30, defaultLeaseDuration)
	p := newProducer(t, c)
	p.putRound(1) // a record on every shard: "processing" is seeing it processed
	_, last := c.startWorkers(names(3)...)
	var done time.Time
	waitFor(t, 60*time.Second, "every shard processing", func() (bool, string) {
		first := firstPerShard(c.mustRecords(), func(harness.Delivery) bool { return true })
		for _, ts := range first {
			if at := time.Unix(0, ts); at.After(done) {
				done = at
			}
		}
		return len(first) == 30, fmt.Sprintf("%d of 30 shards processed", len(first))
	})
	return done.Sub(last), duplicates(c, p)
}

func benchJoin(t *testing.T) (time.Duration, int) {
	c, p, _ := balancedWithRecords(t, names(3)...)
	_, started := c.startWorkers(names(5)[3:]...)
	balanced := c.waitBalanced(60*time.Second, 30, 6, names(5)...)
	time.Sleep(time.Second)
	return balanced.Sub(started), duplicates(c, p)
}

func benchKill(t *testing.T) (time.Duration, int) {
	return benchVictim(t, func(c *cluster, victim *worker) time.Time {
		c.kill9(victim)
		return time.Now()
	})
}

func benchSigterm(t *testing.T) (time.Duration, int) {
	return benchVictim(t, func(c *cluster, victim *worker) time.Time {
		signalled := time.Now()
		go func() {
			if err := c.Terminate(context.Background(), victim.ID, 30*time.Second); err != nil {
				t.Error(err)
			}
		}()
		return signalled
	})
}

// benchVictim stops a non-coordinator worker of three with stop, which returns the time
// to measure from, and measures until every shard it held is processing elsewhere.
func benchVictim(t *testing.T, stop func(c *cluster, victim *worker) time.Time) (time.Duration, int) {
	c, p, ws := balancedWithRecords(t, names(3)...)
	victim, _, held := pickVictim(t, c, ws)
	stopped := stop(c, victim)
	p.putRound(1)
	resumed := c.waitProcessedElsewhere(60*time.Second, victim.ID, held)
	return resumed.Sub(stopped), duplicates(c, p)
}

func benchCoordinatorKill(t *testing.T) (time.Duration, int) {
	c, p, ws := balancedWithRecords(t, names(3)...)
	coord, _, old := roles(t, c, ws)
	c.kill9(coord)
	killed := time.Now()
	written := waitFor(t, 60*time.Second, "a new coordinator's record", func() (bool, string) {
		r, err := c.coordinator()
		if err != nil || r == nil {
			return false, fmt.Sprint(err)
		}
		return r.CoordinatorID != old.CoordinatorID && r.Epoch > old.Epoch && r.WorkerCount == 2 && r.MaxLeasesPerWorker == 15, coordString(r)
	})
	return written.Sub(killed), duplicates(c, p)
}

func benchReshard(t *testing.T) (time.Duration, int) {
	c, p, _ := balancedWithRecords(t, names(3)...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resharded := time.Now()
	if _, err := c.kin.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(c.stream),
		TargetShardCount: aws.Int32(60), ScalingType: ktypes.ScalingTypeUniformScaling}); err != nil {
		t.Fatal(err)
	}
	p.bindKeys() // keys on the children, so each child receives records
	children := map[string]bool{}
	shards, err := kinesisstream.New(c.kin, c.stream).ListShards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shards {
		if !s.Closed {
			children[s.ID] = true
		}
	}
	var done time.Time
	waitFor(t, 90*time.Second, "every child processing", func() (bool, string) {
		first := firstPerShard(c.mustRecords(), func(r harness.Delivery) bool { return children[r.Shard] })
		for _, ts := range first {
			if at := time.Unix(0, ts); at.After(done) {
				done = at
			}
		}
		return len(first) == len(children), fmt.Sprintf("%d of %d children processed", len(first), len(children))
	})
	return done.Sub(resharded), duplicates(c, p)
}

// ---- 8. DynamoDB cost. ----

// On-demand prices in us-east-1 (per million request units), as published since Nov 2024.
const (
	pricePerMillionWrites = 0.625
	pricePerMillionReads  = 0.125
	minutesPerMonth       = 30 * 24 * 60
)

// usage is DynamoDB use per minute on an application's tables, as the edge measured it:
// requests and capacity units by operation and table (e.g. "GetItem meta").
type usage struct {
	requests map[string]float64
	units    map[string]units // by the same keys as requests
	wru, rru float64
}

// units are read and write capacity units a minute.
type units struct{ rru, wru float64 }

func (u usage) total() float64 {
	n := 0.0
	for _, v := range u.requests {
		n += v
	}
	return n
}

func (u usage) monthly() float64 {
	return (u.wru*pricePerMillionWrites + u.rru*pricePerMillionReads) * minutesPerMonth / 1e6
}

// byOperation sums the requests per DynamoDB operation, over the tables.
func (u usage) byOperation() map[string]float64 {
	out := map[string]float64{}
	for k, n := range u.requests {
		op, _, _ := strings.Cut(k, " ")
		out[op] += n
	}
	return out
}

// steadyAfter is how long a cost measurement waits after the workers are balanced, past
// the join's fast polling: as long as the simulator's scale runs wait (sim.RunScale).
const steadyAfter = 30 * time.Second

func benchCost(t *testing.T, workers, shards int, window time.Duration) []string {
	c := newCluster(t, shards, defaultLeaseDuration)
	c.startWorkers(names(workers)...)
	maxLeases := (shards + workers - 1) / workers
	c.waitBalanced(180*time.Second, shards, maxLeases, names(workers)...)
	time.Sleep(steadyAfter) // past the join's fast polling
	ours := measureUsage(t, c, window, nil)
	c.cleanup() // the edge counts every app's requests: nothing else may run during the baseline

	base := newCluster(t, 0, defaultLeaseDuration)
	baseline := measureUsage(t, base, window, func(ctx context.Context, ready func()) { kclBaseline(ctx, t, base, workers, shards, ready) })

	row := func(name string, u usage) string {
		ops := make([]string, 0, len(u.requests))
		for op, n := range u.requests {
			ops = append(ops, fmt.Sprintf("%s %.0f", op, n))
		}
		sort.Strings(ops)
		return fmt.Sprintf("| %d workers / %d shards | %s | %.0f (%s) | %.1f | %.1f | $%.2f |", workers, shards, name,
			u.total(), strings.Join(ops, ", "), u.wru, u.rru, u.monthly())
	}
	ratio := baseline.monthly() / math.Max(ours.monthly(), 1e-9)
	return []string{
		"| size | consumer | requests/min (by operation and table) | write units/min (measured) | read units/min (measured) | on-demand $/month |",
		"|---|---|---|---|---|---|",
		row("kds-lease-manager", ours),
		row("KCL-style baseline (renew every lease every 3.3 s, every worker scans the lease table every 20 s)", baseline),
		fmt.Sprintf("\nCost ratio baseline / kds-lease-manager at %d workers / %d shards: **%.1fx**\n", workers, shards, ratio),
	}
}

// measureUsage counts the DynamoDB requests on the app's tables (the lease table and its
// metadata table) at the edge while load runs (the cluster's workers, or load), with the
// capacity units the engine reported for each (see the edge's capacity accounting in
// package localengines: it asks dynalite for them and corrects what dynalite gets wrong).
func measureUsage(t *testing.T, c *cluster, window time.Duration, load func(ctx context.Context, ready func())) usage {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	if load != nil {
		ready := make(chan struct{})
		var once sync.Once
		wg.Add(1)
		go func() { defer wg.Done(); load(ctx, func() { once.Do(func() { close(ready) }) }) }()
		select { // past the load's set-up: the baseline writes its leases first
		case <-ready:
		case <-time.After(2 * time.Minute):
			t.Fatal("the load did not get ready")
		}
	}
	before := enginetest.Stats(t)
	start := time.Now()
	time.Sleep(window)
	after := enginetest.Stats(t)
	minutes := time.Since(start).Minutes()
	cancel()
	wg.Wait()
	return usageOf(after.Sub(before), c.app, minutes)
}

// usageOf is the DynamoDB use a minute on app's tables in the edge counts delta.
func usageOf(delta localengines.Stats, app string, minutes float64) usage {
	u := usage{requests: map[string]float64{}, units: map[string]units{}}
	for k, n := range delta.Tables {
		var key string
		switch k.Table {
		case app:
			key = k.Operation + " leases"
		case app + "_meta":
			key = k.Operation + " meta"
		default:
			continue // another application's, or a request that named no table
		}
		u.requests[key] += float64(n.Requests) / minutes
		x := u.units[key]
		x.rru += n.ReadUnits / minutes
		x.wru += n.WriteUnits / minutes
		u.units[key] = x
		u.rru += n.ReadUnits / minutes
		u.wru += n.WriteUnits / minutes
	}
	return u
}

// kclBaseline is the KCL's lease pattern with its defaults, on a table of the same leases:
// every owner renews each of its leases every 3.3 s (a conditional UpdateItem), and every
// worker scans the whole lease table every 20 s.
func kclBaseline(ctx context.Context, t *testing.T, c *cluster, workers, shards int, ready func()) {
	ddb := enginetest.DynamoDB(t)
	if _, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(c.app),
		BillingMode:          dtypes.BillingModePayPerRequest,
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("leaseKey"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: dtypes.KeyTypeHash}},
	}); err != nil {
		t.Errorf("baseline table: %v", err)
		return
	}
	if err := dynamodb.NewTableExistsWaiter(ddb).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.app)}, time.Minute); err != nil {
		t.Errorf("baseline table: %v", err)
		return
	}
	for i := range shards {
		_, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.app), Item: map[string]dtypes.AttributeValue{
			"leaseKey":                     &dtypes.AttributeValueMemberS{Value: fmt.Sprintf("shardId-%012d", i)},
			"leaseOwner":                   &dtypes.AttributeValueMemberS{Value: fmt.Sprintf("kds-consumer-%d", i%workers)},
			"leaseCounter":                 &dtypes.AttributeValueMemberN{Value: "1"},
			"checkpoint":                   &dtypes.AttributeValueMemberS{Value: "49656789012345678901234567890123456789012345678901234"},
			"checkpointSubSequenceNumber":  &dtypes.AttributeValueMemberN{Value: "0"},
			"ownerSwitchesSinceCheckpoint": &dtypes.AttributeValueMemberN{Value: "0"},
		}})
		if err != nil {
			t.Errorf("baseline lease: %v", err)
			return
		}
	}
	ready()
	// Renewals are sent on schedule, each in its own goroutine (at most 64 in flight), so
	// that the engine's latency does not slow the baseline below its nominal rate.
	inflight := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(2)
		go func() { // renewer: its leases, spread over the 3.3 s period
			defer wg.Done()
			tick := time.NewTicker(3300 * time.Millisecond / time.Duration(max(1, shards/workers)))
			defer tick.Stop()
			for i := w; ctx.Err() == nil; i = (i + workers) % shards {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				select {
				case inflight <- struct{}{}:
				default:
					t.Errorf("baseline renewals fall behind: the engine cannot sustain %d writes/s", shards*10/33)
					return
				}
				wg.Add(1)
				go func() {
					defer func() { <-inflight; wg.Done() }()
					renew(ctx, ddb, c.app, i, w)
				}()
			}
		}()
		go func() { // lease taker: full consistent scan every 20 s
			defer wg.Done()
			for {
				p := dynamodb.NewScanPaginator(ddb, &dynamodb.ScanInput{TableName: aws.String(c.app), ConsistentRead: aws.Bool(true)})
				for p.HasMorePages() {
					if _, err := p.NextPage(ctx); err != nil {
						break
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Second):
				}
			}
		}()
	}
	wg.Wait()
}

// renew is one KCL-style lease renewal: a conditional write of the lease item.
func renew(ctx context.Context, ddb *dynamodb.Client, table string, shard, worker int) {
	_, _ = ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table),
		Key:                       map[string]dtypes.AttributeValue{"leaseKey": &dtypes.AttributeValueMemberS{Value: fmt.Sprintf("shardId-%012d", shard)}},
		UpdateExpression:          aws.String("SET leaseCounter = leaseCounter + :one"),
		ConditionExpression:       aws.String("leaseOwner = :me"),
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":one": &dtypes.AttributeValueMemberN{Value: "1"}, ":me": &dtypes.AttributeValueMemberS{Value: fmt.Sprintf("kds-consumer-%d", worker)}},
	})
}

// ---- 9. Throughput. ----

// benchThroughput compares one worker with bare GetRecords loops on the same backlog.
// Calls return at most perCall records so that the backlog takes many calls on every
// shard, and rates are measured from 10% to 90% of it.
func benchThroughput(t *testing.T) []string {
	const shards, perShard, perCall = 2, 10000, 500
	c := newCluster(t, shards, defaultLeaseDuration)
	fillStream(t, c, shards*perShard)
	total := shards * perShard

	bareFree := bareRead(t, c, total, perCall, 0)
	barePaced := bareRead(t, c, total, perCall, 200*time.Millisecond)

	w := c.startWorker("kds-consumer-0", "RECORD_LOG_DIR=", fmt.Sprintf("MAX_RECORDS_PER_GET=%d", perCall))
	waitFor(t, time.Minute, "the worker serving /metrics", func() (bool, string) {
		_, err := w.ready()
		return err == nil, fmt.Sprint(err)
	})
	var t10, t90 time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for n := 0; n < total; {
		if time.Now().After(deadline) {
			t.Fatalf("the worker processed %d of %d records in 5 minutes", n, total)
		}
		n = int(w.metric(t, "kds_records_processed_total"))
		now := time.Now()
		if t10.IsZero() && n >= total/10 {
			t10 = now
		}
		if t90.IsZero() && n >= total*9/10 {
			t90 = now
		}
		time.Sleep(20 * time.Millisecond)
	}
	worker := float64(total) * 0.8 / t90.Sub(t10).Seconds()
	return []string{
		fmt.Sprintf("Backlog: %d shards x %d records of 100 bytes, GetRecords limit %d (so each shard takes %d calls).\n", shards, perShard, perCall, perShard/perCall),
		"| reader | records/s (10% -> 90% of the backlog) | worker / reader |",
		"|---|---|---|",
		fmt.Sprintf("| kds-consumer, demo processor (count, checkpoint every batch) | %.0f | |", worker),
		fmt.Sprintf("| bare GetRecords loop at 5 calls/s per shard (the Kinesis limit every consumer must respect) | %.0f | **%.2f** |", barePaced, worker/barePaced),
		fmt.Sprintf("| bare GetRecords loop, unpaced (breaks the Kinesis limit; shows the engine's speed) | %.0f | %.2f |", bareFree, worker/bareFree),
	}
}

// fillStream puts n records of 100 bytes, spread over the shards.
func fillStream(t *testing.T, c *cluster, n int) {
	ctx := context.Background()
	payload := strings.Repeat("x", 100)
	for sent := 0; sent < n; {
		entries := make([]ktypes.PutRecordsRequestEntry, 0, 500)
		for i := 0; i < 500 && sent+i < n; i++ {
			entries = append(entries, ktypes.PutRecordsRequestEntry{PartitionKey: aws.String(fmt.Sprintf("k%d", sent+i)), Data: []byte(payload)})
		}
		out, err := c.kin.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(c.stream), Records: entries})
		if err != nil {
			t.Fatal(err)
		}
		sent += len(entries) - int(aws.ToInt32(out.FailedRecordCount))
	}
}

// bareRead reads every shard from TRIM_HORIZON to the end of what is there, concurrently,
// with at least pace between calls on a shard, and returns records/s from 10% to 90%.
func bareRead(t *testing.T, c *cluster, total, limit int, pace time.Duration) float64 {
	ctx := context.Background()
	shards, err := kinesisstream.New(c.kin, c.stream).ListShards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var read atomic.Int64
	var t10, t90 atomic.Int64
	var wg sync.WaitGroup
	for _, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it, err := c.kin.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(c.stream),
				ShardId: aws.String(s.ID), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
			if err != nil {
				t.Error(err)
				return
			}
			iter := it.ShardIterator
			for iter != nil {
				start := time.Now()
				out, err := c.kin.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(int32(limit))})
				if err != nil {
					t.Error(err)
					return
				}
				n := read.Add(int64(len(out.Records)))
				now := time.Now().UnixNano()
				if n >= int64(total/10) {
					t10.CompareAndSwap(0, now)
				}
				if n >= int64(total*9/10) {
					t90.CompareAndSwap(0, now)
				}
				if len(out.Records) == 0 && aws.ToInt64(out.MillisBehindLatest) == 0 {
					return
				}
				iter = out.NextShardIterator
				time.Sleep(pace - time.Since(start))
			}
		}()
	}
	wg.Wait()
	return float64(total) * 0.8 / time.Duration(t90.Load()-t10.Load()).Seconds()
}

// ---- MultiLang throughput. ----

// TestMultiLangThroughput measures records per second through one worker on the same
// backlog (10000 records on one shard, read 1000 at a time) with the Go demo processor
// and with an aws-kcl record processor under MultiLang: two applications on one stream,
// one after the other, each from the worker's start to its last record processed (the
// same start-up for both), and from its first record processed to its last.
func TestMultiLangThroughput(t *testing.T) {
	env := multiLangEnv(t)
	const backlog = 10000
	goApp := newCluster(t, 1, defaultLeaseDuration)
	putAt := time.Now()
	putBacklog(t, goApp, backlog)
	t.Logf("backlog of %d records put in %s", backlog, time.Since(putAt).Round(time.Millisecond))
	mlApp := newClusterOn(t, goApp.stream, 0, defaultLeaseDuration)
	rate := func(c *cluster, name string, workerEnv ...string) float64 {
		start := time.Now()
		c.startWorker("w1", append([]string{"MAX_RECORDS_PER_GET=1000"}, workerEnv...)...)
		var recs []harness.Delivery
		waitFor(t, 90*time.Second, fmt.Sprintf("%s: the %d records of the backlog processed", name, backlog), func() (bool, string) {
			recs = c.mustRecords()
			return len(recs) >= backlog, fmt.Sprintf("%d processed", len(recs))
		})
		first, last := recs[0].T, recs[0].T
		for _, r := range recs {
			first, last = min(first, r.T), max(last, r.T)
		}
		total := time.Unix(0, last).Sub(start).Seconds()
		flow := time.Duration(last - first).Seconds()
		flowRate := "one batch"
		if flow > 0 {
			flowRate = fmt.Sprintf("%.0f records/s", float64(len(recs))/flow)
		}
		t.Logf("MEASURED throughput, one worker, %s: %d records, %.0f records/s from the worker's start (%.2fs), %s from its first record processed (%.2fs)",
			name, len(recs), float64(len(recs))/total, total, flowRate, flow)
		return float64(len(recs)) / total
	}
	goRate := rate(goApp, "Go demo processor")
	mlRate := rate(mlApp, "MultiLang aws-kcl (Node.js) processor", env...)
	t.Logf("MEASURED throughput MultiLang / Go (from the worker's start): %.2f", mlRate/goRate)

	// The MultiLang pipeline's own capacity: the whole backlog in one batch (encode, the
	// pipe, the Node.js KCL's parse and the processor, its checkpoint), timed by the worker.
	whole := newClusterOn(t, goApp.stream, 0, defaultLeaseDuration)
	rate(whole, "MultiLang, the backlog in one batch", append([]string{"LOG_LEVEL=debug", "MAX_RECORDS_PER_GET=10000"}, env...)...)
	for _, e := range logEntries(whole.worker("w1").LogPath()) {
		if e.Msg == "record processor processed a batch" {
			n, _ := e.Attrs["records"].(float64)
			took, _ := e.Attrs["took"].(float64)
			t.Logf("MEASURED MultiLang batch of %.0f records through the aws-kcl processor in %s: %.0f records/s", n, time.Duration(took).Round(time.Millisecond), n/time.Duration(took).Seconds())
		}
	}
	if mlRate < goRate/4 {
		t.Errorf("MultiLang throughput %.0f records/s, under a quarter of the Go processor's %.0f", mlRate, goRate)
	}
}

// putBacklog puts n records on every shard of c's stream, 500 per PutRecords call.
func putBacklog(t *testing.T, c *cluster, n int) {
	t.Helper()
	for done := 0; done < n; done += 500 {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		err := putFiller(ctx, c, min(500, n-done), done)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// putFiller puts k filler records on every open shard (by explicit hash key).
func putFiller(ctx context.Context, c *cluster, k, base int) error {
	shards, err := c.kin.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(c.stream)})
	if err != nil {
		return err
	}
	for _, s := range shards.Shards {
		entries := make([]ktypes.PutRecordsRequestEntry, k)
		for i := range entries {
			entries[i] = ktypes.PutRecordsRequestEntry{PartitionKey: aws.String("filler"), ExplicitHashKey: s.HashKeyRange.StartingHashKey,
				Data: fmt.Appendf(nil, "filler-%d", base+i)}
		}
		out, err := c.kin.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(c.stream), Records: entries})
		if err != nil {
			return err
		}
		if n := aws.ToInt32(out.FailedRecordCount); n > 0 {
			return fmt.Errorf("%d filler records refused", n)
		}
	}
	return nil
}
