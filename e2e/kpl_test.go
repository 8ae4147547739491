package e2e

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/kpl"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// TestKPLAggregatesAcrossKill9InsideAnAggregate proves KPL de-aggregation on the real
// engines: records aggregated by the npm package aws-kinesis-agg are put on a 2-shard
// stream and delivered one user record each (with explicit hash keys and with partition
// keys only). The worker checkpoints every user record (DEMO_CHECKPOINT=record) and is
// killed with kill -9 right after checkpointing a user record in the middle of an
// aggregate; the next owner resumes at the aggregate's next user record. `kdsctl verify`
// counts every user record: 0 lost and 0 duplicated. An aggregate put on a shard whose
// hash key range does not hold its user records' keys is discarded, as the KCL does.
func TestKPLAggregatesAcrossKill9InsideAnAggregate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	aggDir, err := localengines.InstallKPLAgg(ctx, localengines.DefaultDir())
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 2, 3*time.Second)
	shards, err := kinesisstream.New(c.kin, c.stream).ListShards(ctx)
	if err != nil || len(shards) != 2 {
		t.Fatalf("list shards: %v, %v", shards, err)
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].ID < shards[j].ID })
	ranges := make([]kpl.HashKeyRange, 2)
	for i, s := range shards {
		if ranges[i], err = kpl.ParseHashKeyRange(s.StartingHashKey, s.EndingHashKey); err != nil {
			t.Fatalf("shard %s: %v", s.ID, err)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	inRange := func(r kpl.HashKeyRange) string {
		// Start + span * u / 2^64 for a random u: anywhere in the range.
		span := new(big.Int).Sub(r.End, r.Start)
		off := new(big.Int).Mul(span, new(big.Int).SetUint64(rnd.Uint64()))
		return new(big.Int).Add(r.Start, off.Rsh(off, 64)).String()
	}
	// pkIn returns a partition key whose MD5 is in r: routed there without a hash key.
	pkIn := func(r kpl.HashKeyRange, prefix string) string {
		for i := 0; ; i++ {
			pk := fmt.Sprintf("%s-%d", prefix, i)
			sum := md5.Sum([]byte(pk))
			if r.Contains(new(big.Int).SetBytes(sum[:])) {
				return pk
			}
		}
	}
	run := fmt.Sprintf("kpl-%08x", rnd.Uint32())
	nextN := map[string]int{}
	// group makes n user records of run's key for shard, with explicit hash keys in the
	// shard's range or (withEHK false) partition keys that hash into it.
	group := func(run string, shard, n int, withEHK bool, ehkShard int) []kpl.UserRecord {
		key := fmt.Sprintf("%s-shard%d", run, shard)
		us := make([]kpl.UserRecord, n)
		for i := range us {
			data, _ := json.Marshal(delivery.Payload{Run: run, Key: key, N: nextN[key]})
			nextN[key]++
			us[i] = kpl.UserRecord{PartitionKey: pkIn(ranges[shard], key), Data: data}
			if withEHK {
				us[i].PartitionKey = fmt.Sprintf("%s-%d", key, i%3)
				us[i].ExplicitHashKey = inRange(ranges[ehkShard])
			}
		}
		return us
	}
	type put struct {
		name  string
		shard int
		users []kpl.UserRecord
	}
	stray := run + "-stray"
	first := []put{
		{"A1", 0, group(run, 0, 10, true, 0)},
		{"stray", 0, group(stray, 0, 3, true, 1)}, // keys of shard 1, put on shard 0
		{"A2", 0, group(run, 0, 10, false, 0)},
		{"A3", 0, group(run, 0, 10, true, 0)},
		{"A4", 0, group(run, 0, 10, true, 0)},
		{"B1", 1, group(run, 1, 5, true, 1)},
	}
	later := []put{
		{"A5", 0, group(run, 0, 10, true, 0)},
		{"B2", 1, group(run, 1, 5, false, 1)},
	}
	seqs := map[string]string{}
	putAll := func(puts []put) {
		groups := make([][]kpl.UserRecord, len(puts))
		for i, p := range puts {
			groups[i] = p.users
		}
		encoded, err := localengines.AggregateWithNode(ctx, aggDir, groups)
		if err != nil {
			t.Fatal(err)
		}
		if len(encoded) != len(puts) {
			t.Fatalf("aws-kinesis-agg made %d Kinesis records of %d groups", len(encoded), len(puts))
		}
		for _, e := range encoded {
			p := puts[e.Group]
			if !kpl.IsAggregated(e.Data) {
				t.Fatalf("%s: aws-kinesis-agg's record lacks the KPL prefix", p.name)
			}
			// The put's own hash key places the aggregate on its shard.
			out, err := c.kin.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(c.stream), PartitionKey: aws.String(e.PartitionKey),
				ExplicitHashKey: aws.String(inRange(ranges[p.shard])), Data: e.Data})
			if err != nil {
				t.Fatalf("put %s: %v", p.name, err)
			}
			if got := aws.ToString(out.ShardId); got != shards[p.shard].ID {
				t.Fatalf("%s went to %s, want %s", p.name, got, shards[p.shard].ID)
			}
			seqs[p.name] = aws.ToString(out.SequenceNumber)
		}
	}
	putAll(first)

	// w1 checkpoints every user record and takes 400ms per record: B1 (5 records) is done
	// long before A2's middle, where w1 is killed right after a checkpoint.
	w1 := c.startWorker("w1", "DEMO_CHECKPOINT=record", "DEMO_RECORD_DELAY=400ms")
	// Polled tightly so that the kill lands in the pause after the checkpoint, before
	// the next user record is processed.
	var killedAt lease.Lease
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l, err := c.store.GetLease(ctx, shards[0].ID)
		if err == nil && l.Checkpoint == seqs["A2"] && l.CheckpointSubSequence >= 3 && l.CheckpointSubSequence <= 7 {
			c.kill9(w1)
			killedAt = l
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("w1 never checkpointed inside aggregate A2: lease %+v, %v", l, err)
		}
	}
	t.Logf("MEASURED kill -9 of w1 after its checkpoint at user record %d of the 10 of aggregate A2 (%s)", killedAt.CheckpointSubSequence, killedAt.ExtendedSequenceNumber())

	c.startWorker("w2", "DEMO_CHECKPOINT=record")
	putAll(later)

	produced := 0
	for _, ps := range [][]put{first, later} {
		for _, p := range ps {
			if p.name != "stray" {
				produced += len(p.users)
			}
		}
	}
	var v *harness.VerifySummary
	waitFor(t, 90*time.Second, fmt.Sprintf("kdsctl verify: all %d user records of run %s processed", produced, run), func() (bool, string) {
		v, err = verifyRun(ctx, c, run)
		if v == nil {
			return false, fmt.Sprint(err)
		}
		return v.Processed == produced, fmt.Sprintf("%+v", *v)
	})
	time.Sleep(2 * time.Second) // anything delivered twice would be logged by now
	v, err = verifyRun(ctx, c, run)
	if err != nil || v.Produced != produced || v.Processed != produced || v.Lost != 0 || v.Duplicates != 0 || v.OutOfOrder != 0 {
		t.Fatalf("kdsctl verify --run %s: %+v, %v; want %d produced and processed, 0 lost, 0 duplicated, 0 out of order", run, v, err, produced)
	}
	t.Logf("MEASURED kdsctl verify: %d user records in %d aggregates from aws-kinesis-agg, %d processed, %d lost, %d duplicated, %d out of order (kill -9 inside an aggregate)",
		v.Produced, len(first)+len(later)-1, v.Processed, v.Lost, v.Duplicates, v.OutOfOrder)

	// The next owner started at the user record after the checkpoint.
	recs := c.mustRecords()
	var w1Last, w2First *harness.Delivery
	for i, r := range recs {
		if r.Shard != shards[0].ID || r.Seq != seqs["A2"] {
			continue
		}
		if r.Worker == "w1" && (w1Last == nil || r.Sub > w1Last.Sub) {
			w1Last = &recs[i]
		}
		if r.Worker == "w2" && (w2First == nil || r.Sub < w2First.Sub) {
			w2First = &recs[i]
		}
	}
	if w1Last == nil || w2First == nil || w1Last.Sub != killedAt.CheckpointSubSequence || w2First.Sub != killedAt.CheckpointSubSequence+1 {
		t.Fatalf("aggregate A2: w1's last user record %+v, w2's first %+v; want %d and %d", w1Last, w2First,
			killedAt.CheckpointSubSequence, killedAt.CheckpointSubSequence+1)
	}
	t.Logf("MEASURED aggregate A2: w1 processed user records 0..%d, w2 resumed at %d", w1Last.Sub, w2First.Sub)

	// The stray aggregate: discarded whole, as the KCL does, with a warning.
	sv, _ := verifyRun(ctx, c, stray)
	if sv == nil || sv.Produced != 3 || sv.Processed != 0 {
		t.Errorf("stray aggregate: %+v, want its 3 user records produced and none processed", sv)
	}
	warned := countLogs([]*worker{w1}, func(e logEntry) bool { return strings.Contains(e.Msg, "outside the shard's range") })
	if warned["w1"] == 0 {
		t.Errorf("w1 logged no warning for the stray aggregate")
	}
}

// verifyRun runs `kdsctl -o json verify --run run`.
func verifyRun(ctx context.Context, c *cluster, run string) (*harness.VerifySummary, error) {
	out, _, err := c.CtlOutput(ctx, "-o", "json", "verify", "--run", run)
	var r struct {
		Runs []harness.VerifySummary `json:"runs"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil || len(r.Runs) != 1 {
		return nil, fmt.Errorf("kdsctl verify: %v: %q (%v)", jerr, out, err)
	}
	return &r.Runs[0], nil
}
