package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
)

// A record the processor cannot handle, under ON_PROCESSOR_FAILURE=dead-letter: after
// PROCESSOR_RETRIES retries the rest of its batch lands on the dead-letter stream with
// its data and partition key, the metrics count it, and later records flow again.
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
	waitFor(t, 60*time.Second, "the poison on the dead-letter stream", func() (bool, string) {
		got := readStream(t, dlq)
		return slices.Contains(got, "poison/k-poison"), fmt.Sprint(got)
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
}

// readStream returns "data/partition key" of every record of the stream's first shard.
func readStream(t *testing.T, name string) []string {
	t.Helper()
	kin := enginetest.Kinesis(t)
	it, err := kin.GetShardIterator(t.Context(), &kinesis.GetShardIteratorInput{StreamName: aws.String(name),
		ShardId: aws.String("shardId-000000000000"), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	out, err := kin.GetRecords(t.Context(), &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range out.Records {
		got = append(got, string(r.Data)+"/"+aws.ToString(r.PartitionKey))
	}
	return got
}
