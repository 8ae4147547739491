package e2e

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
)

// TestCorruptLeaseItemsAreSkipped proves that malformed items in the lease table (a
// missing leaseCounter, a leaseCounter stored as a string, a leaseOwner stored as a
// number, an itemVersion from a future format) do not stop the workers: both stay up,
// each corrupt item is reported in an error log line naming its key, and every real
// shard is processed.
func TestCorruptLeaseItemsAreSkipped(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 6, defaultLeaseDuration)
	corrupt := map[string]map[string]dtypes.AttributeValue{
		"corrupt-missing-counter":  {"leaseOwner": avS("ghost"), "checkpoint": avS("TRIM_HORIZON")},
		"corrupt-counter-string":   {"leaseCounter": avS("7"), "checkpoint": avS("TRIM_HORIZON")},
		"corrupt-owner-number":     {"leaseOwner": avN("42"), "leaseCounter": avN("3"), "checkpoint": avS("TRIM_HORIZON")},
		"corrupt-future-version99": {"itemVersion": avN("99"), "leaseCounter": avN("0"), "checkpoint": avS("TRIM_HORIZON")},
	}
	putRawItems(t, c, c.store.LeaseTable(), "leaseKey", corrupt)
	p := newProducer(t, c)
	p.putRound(3)

	ws, _ := c.startWorkers("w1", "w2")
	waitFor(t, 60*time.Second, "a processed record from every one of the 6 shards", func() (bool, string) {
		recs, err := c.records()
		if err != nil {
			return false, err.Error()
		}
		first := firstPerShard(recs, nil)
		return len(first) == 6, fmt.Sprintf("%d of 6 shards processed", len(first))
	})
	c.waitDelivered(30*time.Second, p.Sent())
	c.waitBalanced(30*time.Second, 6, 3, ids(ws)...)

	for _, w := range ws {
		if w.Exited() {
			t.Errorf("worker %s exited: %s", w.ID, w.State())
		}
		reported := map[string]bool{}
		for _, e := range logEntries(w.LogPath()) {
			if e.Level != "ERROR" {
				continue
			}
			for key := range corrupt {
				if strings.Contains(fmt.Sprint(e.Attrs), key) {
					reported[key] = true
				}
			}
		}
		// Every worker read the lease table to take its leases.
		for key := range corrupt {
			if !reported[key] {
				t.Errorf("worker %s logged no error naming corrupt item %s", w.ID, key)
			}
		}
	}
}

// TestStartupErrorsAreClear proves that the usual deployment mistakes stop the worker
// at once with a message that says what is wrong: missing tables with table creation
// turned off, and invalid settings, a missing lease table to adopt among them (exit status
// 2, naming the variable). A stream that
// does not exist is waited for instead (TestMissingStreamIsWaitedFor).
func TestStartupErrorsAreClear(t *testing.T) {
	t.Parallel()
	t.Run("missing tables", func(t *testing.T) {
		c := newCluster(t, 1, defaultLeaseDuration)
		stderr, took := c.runFailing(30*time.Second, "CREATE_TABLES=false")
		if took > 15*time.Second {
			t.Errorf("took %s to give up, want seconds", took)
		}
		named := strings.Contains(stderr, `"`+c.store.LeaseTable()+`"`) || strings.Contains(stderr, `"`+c.store.MetaTable()+`"`)
		if !named || !strings.Contains(stderr, "not found") {
			t.Errorf("stderr does not name the missing table %s or %s as not found:\n%s", c.store.LeaseTable(), c.store.MetaTable(), stderr)
		}
	})
	for _, tc := range []struct{ env, value string }{
		{"LEASE_DURATION", "abc"},
		{"MAX_LEASES_CAP", "0"},
		{"INITIAL_POSITION", "EARLIEST"},
		{"LEASE_TABLE", "no-such-kcl-app"}, // a table to adopt must exist: it is never created
	} {
		t.Run("invalid "+tc.env, func(t *testing.T) {
			c := newCluster(t, 0, defaultLeaseDuration)
			w, _ := c.runWorker("w1", 10*time.Second, tc.env+"="+tc.value)
			stderr := w.Output()
			if w.ExitCode() != 2 {
				t.Errorf("%s=%s: exit %s, want status 2", tc.env, tc.value, w.State())
			}
			if !strings.Contains(stderr, tc.env) {
				t.Errorf("%s=%s: stderr does not name %s:\n%s", tc.env, tc.value, tc.env, stderr)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// avS and avN are DynamoDB string and number values.
func avS(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }
func avN(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberN{Value: v} }

// putRawItems creates c's tables and writes items into table as they are, past the
// store's checks and encoding, each under its key in attribute keyAttr.
func putRawItems(t *testing.T, c *cluster, table, keyAttr string, items map[string]map[string]dtypes.AttributeValue) {
	t.Helper()
	if err := c.store.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	ddb := enginetest.DynamoDB(t)
	for key, item := range items {
		item[keyAttr] = avS(key)
		if _, err := ddb.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
			t.Fatalf("put item %s: %v", key, err)
		}
	}
}

// TestKCLTableTakeover takes over a KCL application's lease table with real worker
// processes: while a (simulated) KCL fleet renews its leases the worker refuses to start,
// naming the owners; with WAIT_FOR_KCL_SHUTDOWN it waits, and once the renewals stop it
// continues every shard from the KCL's checkpoint (nothing at or before it is processed,
// everything after it is), then leaves the items in the KCL's shape.
func TestKCLTableTakeover(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, defaultLeaseDuration)
	ctx := t.Context()
	ddb := enginetest.DynamoDB(t)
	kclTable := enginetest.UniqueName(t, "kcl")
	createRawLeaseTable(t, ddb, kclTable)

	p := newProducer(t, c)
	p.putRound(10)
	perShard := map[string][]harness.Sent{}
	for _, s := range p.Sent() {
		perShard[s.Shard] = append(perShard[s.Shard], s)
	}
	owners := map[string]string{}
	var want []harness.Sent // after the KCL's checkpoints
	for shard, sent := range perShard {
		slices.SortFunc(sent, func(a, b harness.Sent) int { x, _ := seqNum(a.Seq); y, _ := seqNum(b.Seq); return x.Cmp(y) })
		if len(sent) < 10 {
			t.Fatalf("shard %s has %d records, want 10", shard, len(sent))
		}
		owners[shard] = "kcl-worker-" + shard[len(shard)-1:]
		want = append(want, sent[5:]...)
		putKCLLease(t, ddb, kclTable, shard, owners[shard], sent[4].Seq)
	}

	// The KCL fleet renews every 500 ms until stopped.
	renewCtx, stopRenewing := context.WithCancel(ctx)
	var renewing sync.WaitGroup
	renewing.Go(func() {
		for renewCtx.Err() == nil {
			for shard, owner := range owners {
				_, _ = ddb.UpdateItem(renewCtx, &dynamodb.UpdateItemInput{TableName: aws.String(kclTable),
					Key:                       map[string]dtypes.AttributeValue{"leaseKey": avS(shard)},
					UpdateExpression:          aws.String("SET leaseCounter = leaseCounter + :one"),
					ConditionExpression:       aws.String("leaseOwner = :o"),
					ExpressionAttributeValues: map[string]dtypes.AttributeValue{":one": avN("1"), ":o": avS(owner)}})
			}
			select {
			case <-renewCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	defer func() { stopRenewing(); renewing.Wait() }()

	stderr, _ := c.runFailing(30*time.Second, "LEASE_TABLE="+kclTable, "KCL_CHECK_WINDOW=2s")
	for _, w := range append(sortedValues(owners), "still renewing leases in "+kclTable, "WAIT_FOR_KCL_SHUTDOWN=true") {
		if !strings.Contains(stderr, w) {
			t.Errorf("the refusal does not say %q:\n%s", w, lastLine(stderr))
		}
	}

	w := c.startWorker("w2", "LEASE_TABLE="+kclTable, "KCL_CHECK_WINDOW=2s", "WAIT_FOR_KCL_SHUTDOWN=true")
	waitFor(t, 30*time.Second, "the worker waiting for the KCL fleet", func() (bool, string) {
		n := countLogs([]*worker{w}, msgIs("KCL workers are still renewing leases; waiting for them to stop"))[w.ID]
		return n >= 2, fmt.Sprintf("%d rounds logged", n)
	})
	if recs := c.mustRecords(); len(recs) > 0 {
		t.Fatalf("%d records processed while the KCL fleet was renewing", len(recs))
	}
	stopRenewing()
	renewing.Wait()
	stopped := time.Now()

	_, recs := c.waitDelivered(60*time.Second, want)
	first := time.Unix(0, slices.MinFunc(recs, func(a, b harness.Delivery) int { return cmp.Compare(a.T, b.T) }).T)
	t.Logf("first record processed %s after the KCL fleet stopped renewing (check window 2s, lease duration %s); all %d after %s",
		since(stopped, first), defaultLeaseDuration, len(want), since(stopped, time.Now()))
	for _, r := range recs {
		for _, s := range perShard[r.Shard][:5] {
			if r.Seq == s.Seq {
				t.Errorf("record %s of shard %s, at or before the KCL's checkpoint, was processed", r.Seq, r.Shard)
			}
		}
	}
	c.sigterm(w, 30*time.Second)

	for shard, sent := range perShard {
		out, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(kclTable),
			Key: map[string]dtypes.AttributeValue{"leaseKey": avS(shard)}, ConsistentRead: aws.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		item := out.Item
		checks := map[string]string{"checkpoint": sent[len(sent)-1].Seq, "checkpointSubSequenceNumber": "0",
			"ownerSwitchesSinceCheckpoint": "0", "throughputKBps": "3.5", "startingHashKey": "0", "endingHashKey": "99"}
		for attr, v := range checks {
			if got := attrString(item[attr]); got != v {
				t.Errorf("lease %s: %s = %q, want %q", shard, attr, got, v)
			}
		}
		if _, ok := item["leaseOwner"]; ok {
			t.Errorf("lease %s still has an owner after a graceful shutdown: %v", shard, attrString(item["leaseOwner"]))
		}
	}
}

func createRawLeaseTable(t *testing.T, ddb *dynamodb.Client, table string) {
	t.Helper()
	ctx := t.Context()
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table),
		BillingMode:          dtypes.BillingModePayPerRequest,
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("leaseKey"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: dtypes.KeyTypeHash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	if err := dynamodb.NewTableExistsWaiter(ddb).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// putKCLLease writes a lease as a KCL worker holds it, checkpointed at seq.
func putKCLLease(t *testing.T, ddb *dynamodb.Client, table, shard, owner, seq string) {
	t.Helper()
	_, err := ddb.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]dtypes.AttributeValue{
		"leaseKey": avS(shard), "leaseOwner": avS(owner), "leaseCounter": avN("100"),
		"checkpoint": avS(seq), "checkpointSubSequenceNumber": avN("0"), "ownerSwitchesSinceCheckpoint": avN("1"),
		"startingHashKey": avS("0"), "endingHashKey": avS("99"), "throughputKBps": avN("3.5"),
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func attrString(v dtypes.AttributeValue) string {
	switch v := v.(type) {
	case *dtypes.AttributeValueMemberS:
		return v.Value
	case *dtypes.AttributeValueMemberN:
		return v.Value
	}
	return fmt.Sprint(v)
}

func sortedValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}
