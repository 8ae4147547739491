package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Bad input, each on the real engines with real worker processes: a clear error naming
// the problem, nothing lost, no crash loop. What each test proves is stated above it.

// get fetches a worker endpoint and returns status and body.
func (w *worker) get(t *testing.T, path string) (int, string) {
	t.Helper()
	code, body, err := w.Get(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return code, string(body)
}

func (w *worker) mustRun(t *testing.T) {
	t.Helper()
	if w.Exited() {
		t.Fatalf("worker %s exited: %s\n%s", w.ID, w.State(), tail(w.LogPath(), 30))
	}
}

// logsMentioning returns the worker's WARN and ERROR lines whose text contains all of subs.
func logsMentioning(w *worker, subs ...string) []logEntry {
	var out []logEntry
	for _, e := range logEntries(w.LogPath()) {
		if e.Level != "WARN" && e.Level != "ERROR" {
			continue
		}
		text := e.Msg + " " + fmt.Sprint(e.Attrs)
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(text, s)
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

// Combinations of settings the library refuses (HEARTBEAT_INTERVAL above
// LEASE_DURATION/3, SHARD_SYNC_INTERVAL below POLL_INTERVAL) and malformed values are
// refused before any AWS call: exit status 2, the variable named, within seconds.
func TestBadSettingCombinationsExitTwo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"heartbeat above lease/3", []string{"HEARTBEAT_INTERVAL=5s"}, "HEARTBEAT_INTERVAL"},
		{"poll above lease/3", []string{"POLL_INTERVAL=4s"}, "POLL_INTERVAL"},
		{"shard sync below poll", []string{"POLL_INTERVAL=2s", "SHARD_SYNC_INTERVAL=1s"}, "SHARD_SYNC_INTERVAL"},
		{"endpoint without scheme", []string{"AWS_ENDPOINT_URL=localhost:4566"}, "AWS_ENDPOINT_URL"},
		{"stream name with a space", []string{"STREAM_NAME=my stream"}, "STREAM_NAME"},
		{"health address without port", []string{"HEALTH_ADDR=8080"}, "HEALTH_ADDR"},
		{"application name too short", []string{"APP_NAME=ab"}, "APP_NAME"},
		{"unwritable record log", []string{"RECORD_LOG_DIR=/proc/kds-no-such-dir"}, "RECORD_LOG_DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1, defaultLeaseDuration)
			w, took := c.runWorker("w1", 30*time.Second, tc.env...)
			stderr := w.Output()
			if w.ExitCode() != 2 {
				t.Errorf("%v: exit %s, want status 2\n%s", tc.env, w.State(), stderr)
			}
			if !strings.Contains(stderr, "invalid "+tc.want) {
				t.Errorf("%v: stderr does not name %s:\n%s", tc.env, tc.want, stderr)
			}
			if took > 10*time.Second {
				t.Errorf("took %s to refuse a bad setting", took)
			}
		})
	}
}

// A missing stream is waited for, as the chart's init job may create it after the
// workers start (and a wrong region looks the same): the worker stays alive and not
// ready, says which stream it waits for, in which region and at which endpoint, and
// starts once the stream exists.
func TestMissingStreamIsWaitedFor(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 0, defaultLeaseDuration)
	w := c.startWorker("kds-consumer-0")
	waitFor(t, 30*time.Second, "the worker saying it waits for the stream", func() (bool, string) {
		log, err := os.ReadFile(w.LogPath())
		if err != nil {
			return false, err.Error()
		}
		s := string(log)
		return strings.Contains(s, "waiting for the stream") && strings.Contains(s, c.stream) &&
			strings.Contains(s, "region "+enginetest.Region) && strings.Contains(s, "STREAM_NAME"), s
	})
	for path, want := range map[string]int{"/health": http.StatusOK, "/ready": http.StatusServiceUnavailable} {
		if code, body, err := w.Get(t.Context(), path); err != nil || code != want {
			t.Errorf("%s while waiting: %d %s (%v), want %d", path, code, body, err, want)
		}
	}
	enginetest.CreateStream(t, c.stream, 2)
	waitFor(t, 60*time.Second, "the worker holding both shards", func() (bool, string) {
		o, err := c.ownership()
		if err != nil {
			return false, err.Error()
		}
		return o.byOwner["kds-consumer-0"] == 2, o.String()
	})
	if code, body, err := w.Get(t.Context(), "/ready"); err != nil || code != http.StatusOK {
		t.Errorf("/ready once started: %d %s (%v)", code, body, err)
	}
}

// A wrong endpoint is reported at start with the endpoint in the message, and the worker
// exits non-zero within a bounded time: at once when nothing listens, after the start-up
// timeout when something accepts connections but never answers.
func TestWrongEndpointFailsNamingIt(t *testing.T) {
	t.Parallel()
	t.Run("nothing listening", func(t *testing.T) {
		c := newCluster(t, 0, defaultLeaseDuration)
		ep := "http://" + freeAddr(t)
		stderr, took := c.runFailing(60*time.Second, "AWS_ENDPOINT_URL="+ep)
		if !strings.Contains(stderr, "cannot reach DynamoDB at endpoint "+ep) || !strings.Contains(stderr, "AWS_ENDPOINT_URL") {
			t.Errorf("stderr does not name the endpoint %s:\n%s", ep, stderr)
		}
		if took > 30*time.Second {
			t.Errorf("took %s to give up on a closed port", took)
		}
	})
	t.Run("kinesis endpoint wrong", func(t *testing.T) {
		c := newCluster(t, 1, defaultLeaseDuration)
		ep := "http://" + freeAddr(t)
		stderr, took := c.runFailing(60*time.Second, "AWS_ENDPOINT_URL_KINESIS="+ep)
		if !strings.Contains(stderr, ep) || !strings.Contains(stderr, c.stream) {
			t.Errorf("stderr does not name the Kinesis endpoint %s and stream:\n%s", ep, stderr)
		}
		if took > 45*time.Second {
			t.Errorf("took %s", took)
		}
	})
	t.Run("endpoint never answers", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var held []net.Conn
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, conn) // read nothing, answer nothing
			}
		}()
		t.Cleanup(func() {
			l.Close()
			<-done
			for _, c := range held {
				c.Close()
			}
		})
		c := newCluster(t, 0, defaultLeaseDuration)
		ep := "http://" + l.Addr().String()
		stderr, _ := c.runFailing(120*time.Second, "AWS_ENDPOINT_URL="+ep)
		if !strings.Contains(stderr, ep) || !strings.Contains(stderr, "no answer within") {
			t.Errorf("stderr does not say that endpoint %s did not answer:\n%s", ep, stderr)
		}
	})
}

// No credentials anywhere (no variables, no files, instance metadata disabled): the
// worker exits non-zero at once, saying credentials are missing and how to provide them,
// instead of the SDK's message about the EC2 metadata service.
func TestMissingCredentialsAreExplained(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, defaultLeaseDuration)
	stderr, took := c.runFailing(60*time.Second,
		"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials", "AWS_CONFIG_FILE=/nonexistent/config",
		"AWS_EC2_METADATA_DISABLED=true")
	for _, want := range []string{"no usable AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if took > 30*time.Second {
		t.Errorf("took %s to notice missing credentials", took)
	}
}

// The stream deleted while workers run: they keep running and answering /health, keep
// their leases and checkpoints untouched, and say "not found" naming the stream, once per
// shard per 30 s rather than on every retry.
func TestStreamDeletedMidRun(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4, defaultLeaseDuration)
	p := newProducer(t, c)
	p.putRound(3)
	ws, _ := c.startWorkers("w1", "w2")
	c.waitBalanced(60*time.Second, 4, 2, ids(ws)...)
	c.waitDelivered(30*time.Second, p.Sent())
	time.Sleep(time.Second) // the last checkpoints land
	before, err := c.leases()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.kin.DeleteStream(t.Context(), &kinesis.DeleteStreamInput{StreamName: aws.String(c.stream), EnforceConsumerDeletion: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(25 * time.Second)
	for _, w := range ws {
		w.mustRun(t)
		if code, body := w.get(t, "/health"); code != http.StatusOK {
			t.Errorf("%s /health = %d %s with the stream gone, want 200", w.ID, code, body)
		}
	}
	var reported int
	for _, w := range ws {
		lines := logsMentioning(w, "not found", c.stream)
		reported += len(lines)
		perKey := map[string]int{}
		for _, e := range lines {
			perKey[e.Msg+fmt.Sprint(e.Attrs["shard"])]++
		}
		for k, n := range perKey {
			// One per window of 30 s; the window may have started just before deletion.
			if n > 2 {
				t.Errorf("%s logged %q %d times in %s: not throttled", w.ID, k, n, time.Since(deleted).Round(time.Second))
			}
		}
	}
	if reported == 0 {
		t.Errorf("no worker logged that stream %s was not found", c.stream)
	}
	after, err := c.leases()
	if err != nil {
		t.Fatal(err)
	}
	was := map[string]string{}
	for _, l := range before.Leases {
		was[l.ShardID] = fmt.Sprintf("%s/%d/%s", l.Owner, l.Epoch, l.Checkpoint)
	}
	for _, l := range after.Leases {
		if now := fmt.Sprintf("%s/%d/%s", l.Owner, l.Epoch, l.Checkpoint); now != was[l.ShardID] {
			t.Errorf("lease %s changed with the stream gone: %s -> %s", l.ShardID, was[l.ShardID], now)
		}
	}
	if len(after.Leases) != 4 {
		t.Errorf("%d leases after deletion, want the 4 kept", len(after.Leases))
	}
}

// The metadata table deleted while a worker runs: heartbeats fail, so the worker fences
// itself (stops every shard before anyone could take it) instead of processing blindly,
// keeps running, names the table as not found, and leaves its leases and checkpoints in
// the lease table untouched.
func TestMetaTableDeletedMidRunFences(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, defaultLeaseDuration)
	p := newProducer(t, c)
	p.putRound(2)
	w := c.startWorker("w1")
	c.waitBalanced(60*time.Second, 2, 2, "w1")
	c.waitDelivered(30*time.Second, p.Sent())
	time.Sleep(time.Second)
	before, err := c.leases()
	if err != nil {
		t.Fatal(err)
	}
	ddb := enginetest.DynamoDB(t)
	if _, err := ddb.DeleteTable(t.Context(), &dynamodb.DeleteTableInput{TableName: aws.String(c.store.MetaTable())}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	fenced := waitFor(t, 2*defaultLeaseDuration, "the worker fences itself", func() (bool, string) {
		n := countLogs([]*worker{w}, func(e logEntry) bool { return strings.HasPrefix(e.Msg, "could not renew the heartbeat in time") })
		return n["w1"] > 0, "no fencing log yet"
	})
	if took := fenced.Sub(deleted); took > defaultLeaseDuration {
		t.Errorf("fenced %s after the table was deleted, later than the lease duration", took)
	}
	sentBefore := len(p.Sent())
	p.putRound(2)
	time.Sleep(5 * time.Second)
	recs := c.mustRecords()
	d := delivery.Check(p.Sent()[sentBefore:], recs)
	if processed := len(p.Sent()) - sentBefore - len(d.Lost); processed != 0 {
		t.Errorf("%d records produced after fencing were processed by a worker that cannot heartbeat", processed)
	}
	time.Sleep(defaultLeaseDuration)
	w.mustRun(t)
	if len(logsMentioning(w, "not found", c.store.MetaTable())) == 0 {
		t.Errorf("no log line names the missing table %s as not found", c.store.MetaTable())
	}
	if n := len(logsMentioning(w, "heartbeat failed")); n > 2 {
		t.Errorf(`%d "heartbeat failed" lines in %s: not throttled`, n, time.Since(deleted).Round(time.Second))
	}
	after, err := c.leases()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range after.Leases {
		if b := before.Leases[i]; b.ShardID != l.ShardID || b.Owner != l.Owner || b.Epoch != l.Epoch || b.Checkpoint != l.Checkpoint {
			t.Errorf("lease changed: %+v -> %+v", b, l)
		}
	}
	code, body := w.get(t, "/health")
	t.Logf("/health %s after the metadata table was deleted: %d %s", time.Since(deleted).Round(time.Second), code, strings.TrimSpace(body))
}

// The lease table deleted while a worker runs: the worker keeps running and names the
// table as not found. (It keeps retrying its batches; see the report for the repro.)
func TestLeaseTableDeletedMidRunIsReported(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, defaultLeaseDuration)
	p := newProducer(t, c)
	w := c.startWorker("w1")
	c.waitBalanced(60*time.Second, 2, 2, "w1")
	ddb := enginetest.DynamoDB(t)
	if _, err := ddb.DeleteTable(t.Context(), &dynamodb.DeleteTableInput{TableName: aws.String(c.store.LeaseTable())}); err != nil {
		t.Fatal(err)
	}
	p.putRound(1) // a checkpoint must be attempted
	waitFor(t, 30*time.Second, "a log line naming the lease table as not found", func() (bool, string) {
		return len(logsMentioning(w, "not found", c.store.LeaseTable()+`"`)) > 0, tail(w.LogPath(), 3)
	})
	time.Sleep(defaultLeaseDuration)
	w.mustRun(t)
	if code, _ := w.get(t, "/health"); code != http.StatusOK {
		t.Errorf("/health %d: heartbeats continue, the worker should stay up", code)
	}
}

// Metadata items that cannot be read: a worker item with a heartbeat stored as a
// string, a worker item from a future format (itemVersion 99), and a coordinator item
// with max_leases_per_worker stored as a string. Workers keep running, report each bad
// worker item by key, process every shard, and the coordinator item is rewritten with
// correct values.
func TestCorruptMetadataItems(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 6, defaultLeaseDuration)
	now := avS(time.Now().UTC().Format(time.RFC3339Nano))
	items := map[string]map[string]dtypes.AttributeValue{
		"corrupt-worker": {"incarnation": avS("x"), "heartbeat": avS("many"), "state": avS("active"), "leases_held": avN("0"), "last_seen": now, "started_at": now},
		"future-worker":  {"itemVersion": avN("99"), "incarnation": avS("x"), "heartbeat": avN("5"), "state": avS("active"), "leases_held": avN("0"), "last_seen": now, "started_at": now},
		c.store.CoordinatorKey(): {"coordinator_id": avS("ghost"), "epoch": avN("3"), "version": avN("7"),
			"max_leases_per_worker": avS("10"), "target_leases_per_worker": avN("10"), "shard_count": avN("6"), "worker_count": avN("2"),
			"live_workers": avN("2"), "cap": avN("80"), "unowned_shards": avN("0"), "recommended_workers": avN("1"),
			"lease_generation": avN("1"), "updated_at": now, "itemVersion": avN("1")},
	}
	putRawItems(t, c, c.store.MetaTable(), "worker_id", items)
	p := newProducer(t, c)
	p.putRound(3)
	ws, _ := c.startWorkers("w1", "w2")
	c.waitBalanced(90*time.Second, 6, 3, ids(ws)...)
	c.waitDelivered(30*time.Second, p.Sent())
	out, err := enginetest.DynamoDB(t).GetItem(t.Context(), &dynamodb.GetItemInput{TableName: aws.String(c.store.MetaTable()),
		Key: map[string]dtypes.AttributeValue{"worker_id": avS(c.store.CoordinatorKey())}, ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := out.Item["max_leases_per_worker"].(*dtypes.AttributeValueMemberN); !ok || v.Value != "3" {
		t.Errorf("coordinator item max_leases_per_worker = %#v, want rewritten as N 3", out.Item["max_leases_per_worker"])
	}
	for _, w := range ws {
		w.mustRun(t)
		for _, key := range []string{"corrupt-worker", "future-worker"} {
			if len(logsMentioning(w, key)) == 0 {
				t.Errorf("worker %s did not report corrupt item %s", w.ID, key)
			}
		}
		if lines := logsMentioning(w, "future-worker", "newer version"); len(lines) == 0 {
			t.Errorf("worker %s did not say future-worker was written by a newer version", w.ID)
		}
	}
}

// A coordinator item edited by hand to impossible values (max -3, target 100000,
// shard_count 0 while leases exist, worker_count 0): no worker crashes or holds more
// than its cap, and the coordinator rewrites correct values on its next pass.
func TestImpossibleCoordinatorValuesOnEngines(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 10, defaultLeaseDuration)
	ws := []*worker{c.startWorker("w1", "MAX_LEASES_CAP=4"), c.startWorker("w2", "MAX_LEASES_CAP=4")}
	c.waitConverged(60*time.Second, 10, 2, 4, 2)
	ddb := enginetest.DynamoDB(t)
	if _, err := ddb.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(c.store.MetaTable()),
		Key:                       map[string]dtypes.AttributeValue{"worker_id": avS(c.store.CoordinatorKey())},
		UpdateExpression:          aws.String("SET max_leases_per_worker = :m, target_leases_per_worker = :t, shard_count = :z, worker_count = :z"),
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":m": avN("-3"), ":t": avN("100000"), ":z": avN("0")},
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		o, err := c.ownership()
		if err == nil {
			for id, held := range o.byOwner {
				if held > 4 {
					t.Fatalf("%s holds %d leases, above its cap 4", id, held)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.waitConverged(30*time.Second, 10, 2, 4, 2)
	r, err := c.coordinator()
	if err != nil || r.TargetLeasesPerWorker != 4 || r.Cap != 4 {
		t.Errorf("coordinator after repair: %s, %v", coordString(r), err)
	}
	for _, w := range ws {
		w.mustRun(t)
		if n := len(logsMentioning(w, "panic")); n > 0 {
			t.Errorf("%s logged a panic", w.ID)
		}
	}
}

// Records of 1 MB and binary (non-UTF-8) payloads are processed without a crash, and the
// demo record log stays one valid JSON object per line.
func TestLargeAndBinaryRecords(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, defaultLeaseDuration)
	w := c.startWorker("w1")
	c.waitBalanced(60*time.Second, 1, 1, "w1")
	bigData := bytes.Repeat([]byte("0123456789"), 100_000) // 1,000,000 bytes
	payloads := [][]byte{bigData, bigData, {0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28}, {'"', '\\', '\n', 0x1b, 0xed, 0xa0, 0x80}, {}}
	payloads[4] = []byte{0}
	seqs := map[string]int{}
	for i, data := range payloads {
		out, err := c.kin.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(c.stream), PartitionKey: aws.String(fmt.Sprintf("k%d", i)), Data: data})
		if err != nil {
			t.Fatalf("put record %d (%d bytes): %v", i, len(data), err)
		}
		seqs[aws.ToString(out.SequenceNumber)] = i
	}
	var got []harness.Delivery
	waitFor(t, 60*time.Second, "every large and binary record in the record log", func() (bool, string) {
		recs, err := c.records() // fails on any line that is not valid JSON
		if err != nil {
			return false, err.Error()
		}
		got = recs
		found := 0
		for _, r := range recs {
			if _, ok := seqs[r.Seq]; ok {
				found++
			}
		}
		return found == len(payloads), fmt.Sprintf("%d of %d", found, len(payloads))
	})
	for _, r := range got {
		i, ok := seqs[r.Seq]
		if !ok {
			continue
		}
		if !utf8.ValidString(r.Data) {
			t.Errorf("record %d logged as invalid UTF-8", i)
		}
		if i < 2 && r.Data != string(bigData) {
			t.Errorf("1 MB record %d logged with %d bytes", i, len(r.Data))
		}
	}
	w.mustRun(t)
	if len(logsMentioning(w, "panic")) > 0 {
		t.Error("worker logged a panic")
	}
}

// Secrets never reach the logs or the HTTP endpoints: a worker with distinctive fake
// AWS credentials and session token, at debug level, through start, take, process and
// shutdown; /health, /ready and /metrics show no secret and no environment.
func TestNoSecretsInLogsOrEndpoints(t *testing.T) {
	t.Parallel()
	const (
		keyID   = "AKIAKDSLEAKCANARY7Q3Z"
		secret  = "kdsLeakCanarySecret/Zx9+wq8MMAbcdEFGhijk0123"
		token   = "FwoGZXIvYXdzEKDSLEAKCANARYSESSIONTOKEN0987654321zyxwvu+/="
		kubeTok = "eyJhbGciOiJSUzI1NiIsImtpZCI6IktEU0xFQUtDQU5BUlkifQ.kds-bearer-canary"
	)
	c := newCluster(t, 2, defaultLeaseDuration)
	p := newProducer(t, c)
	p.putRound(2)
	w := c.startWorker("w1", "AWS_ACCESS_KEY_ID="+keyID, "AWS_SECRET_ACCESS_KEY="+secret, "AWS_SESSION_TOKEN="+token,
		"LOG_LEVEL=debug", "KUBE_BEARER_TOKEN="+kubeTok)
	c.waitBalanced(60*time.Second, 2, 2, "w1")
	c.waitDelivered(30*time.Second, p.Sent())
	secrets := []string{keyID, secret, token, kubeTok, "AKIAKDSLEAKCANARY", "LeakCanarySecret", "LEAKCANARYSESSION"}
	for _, path := range []string{"/health", "/ready", "/metrics"} {
		_, body := w.get(t, path)
		for _, s := range append(secrets, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PATH=", "HOME=") {
			if strings.Contains(body, s) {
				t.Errorf("%s contains %q", path, s)
			}
		}
	}
	c.sigterm(w, 30*time.Second)
	logs := tail(w.LogPath(), 1<<30)
	if !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, "worker stopped") {
		t.Fatalf("the log does not cover a debug-level run to the end:\n%s", tail(w.LogPath(), 5))
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the worker log contains the secret %q", s)
		}
	}
}

// A record the processor cannot handle, under ON_PROCESSOR_FAILURE=dead-letter: after
// PROCESSOR_RETRIES retries the rest of its batch lands on the dead-letter stream with
// its data and partition key, the metrics count it, and later records flow again. The
// worker then exports every metric the chart's Grafana board and alert rules use.
func TestAPoisonRecordIsDeadLettered(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, defaultLeaseDuration)
	dlq := c.stream + "-dlq"
	enginetest.CreateStream(t, dlq, 1)
	w := c.startWorker("kds-consumer-0", "ON_PROCESSOR_FAILURE=dead-letter", "PROCESSOR_RETRIES=2",
		"DEAD_LETTER_STREAM="+dlq, "DEMO_FAIL_ON=poison")
	put := func(data, key string) {
		t.Helper()
		if _, err := c.kin.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(c.stream),
			Data: []byte(data), PartitionKey: aws.String(key)}); err != nil {
			t.Fatal(err)
		}
	}
	put("before", "k1")
	put("poison", "k-poison")
	dead := kinesisstream.New(enginetest.Kinesis(t), dlq)
	waitFor(t, 60*time.Second, "the poison on the dead-letter stream", func() (bool, string) {
		recs, err := dead.ReadShard(t.Context(), stream.Shard{ID: "shardId-000000000000"})
		var got []string
		for _, r := range recs {
			got = append(got, string(r.Data)+"/"+r.PartitionKey)
		}
		return err == nil && slices.Contains(got, "poison/k-poison"), fmt.Sprint(got, err)
	})
	put("after", "k2")
	waitFor(t, 30*time.Second, "the record after the poison processed", func() (bool, string) {
		var data []string
		for _, d := range c.mustRecords() {
			data = append(data, d.Data)
		}
		return slices.Contains(data, "after") && slices.Contains(data, "before") && !slices.Contains(data, "poison"), fmt.Sprint(data)
	})
	if got := w.metric(t, `kds_batches_abandoned_total{policy="dead-letter"}`); got != 1 {
		t.Errorf("kds_batches_abandoned_total{dead-letter} = %v, want 1", got)
	}
	if got := w.metric(t, "kds_processor_failures_total"); got != 3 {
		t.Errorf("kds_processor_failures_total = %v, want 3 (a try and 2 retries)", got)
	}
	// The worker has read, processed, failed and abandoned: every metric the chart's
	// board and alerts use is there.
	checkMonitoringMetrics(t, w)
}

// A processor stuck on a record (ON_PROCESSOR_FAILURE=retry, the default: the batch is
// retried forever) shows a growing kds_lag_seconds on its shard, not the frozen lag of
// its last read, while the idle shard beside it has a series at 0 (empty reads carry
// MillisBehindLatest too).
func TestAStuckProcessorShowsGrowingLag(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, defaultLeaseDuration)
	out, err := c.kin.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(c.stream),
		Data: []byte("poison"), PartitionKey: aws.String("k-poison")})
	if err != nil {
		t.Fatal(err)
	}
	stuck := aws.ToString(out.ShardId)
	idle := "shardId-000000000000"
	if stuck == idle {
		idle = "shardId-000000000001"
	}
	w := c.startWorker("kds-consumer-0", "DEMO_FAIL_ON=poison")
	lag := func(shard string) (float64, error) { return w.sample(`kds_lag_seconds{shard="` + shard + `"}`) }
	waitFor(t, 60*time.Second, "the stuck shard 2s behind and the idle shard read", func() (bool, string) {
		s, err1 := lag(stuck)
		i, err2 := lag(idle)
		return err1 == nil && err2 == nil && s >= 2, fmt.Sprint(s, i, err1, err2)
	})
	first, _ := lag(stuck)
	time.Sleep(3 * time.Second)
	second, err := lag(stuck)
	t.Logf("MEASURED stuck shard's lag %.1fs, 3s later %.1fs", first, second)
	if err != nil || second-first < 2.5 {
		t.Errorf("stuck shard's lag %v, then %v 3s later (%v): want it growing with the time", first, second, err)
	}
	if got := w.metric(t, `kds_lag_seconds{shard="`+idle+`"}`); got >= 1 {
		t.Errorf("idle shard's lag %v, want 0 (caught up)", got)
	}
	if got := w.metric(t, "kds_processor_failures_total"); got < 2 {
		t.Errorf("kds_processor_failures_total = %v: the processor is not retrying", got)
	}
}
