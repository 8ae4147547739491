//go:build bench

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
)

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
		t.Logf("MEASURED throughput, one worker, %s: %d records, %.0f records/s from the worker's start (%.2fs), %.0f records/s from its first record processed (%.2fs)",
			name, len(recs), float64(len(recs))/total, total, float64(len(recs))/flow, flow)
		return float64(len(recs)) / total
	}
	goRate := rate(goApp, "Go demo processor")
	mlRate := rate(mlApp, "MultiLang aws-kcl (Node.js) processor", env...)
	t.Logf("MEASURED throughput MultiLang / Go (from the worker's start): %.2f", mlRate/goRate)
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
