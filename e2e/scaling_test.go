package e2e

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/harness"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// TestJoinRebalancesWithoutDuplicates proves scale-out: two workers joining three
// balanced ones on 30 shards end at 6/6/6/6/6 with max 6, and while records flow the
// moves are planned hand-overs: not a record lost, not one processed twice.
func TestJoinRebalancesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	c, p, first := balancedWithRecords(t, "w1", "w2", "w3")

	joiners, joined := c.startWorkers("w4", "w5")
	all := append(first, joiners...)
	balanced := c.waitBalanced(60*time.Second, 30, 6, ids(all)...)
	t.Logf("MEASURED join of 2 workers -> 6/6/6/6/6 and max 6: %s", since(joined, balanced))

	p.putRound(1)
	sent, d, recs := c.drain(p, 2*time.Second, 60*time.Second)
	if len(d.Duplicated) > 0 {
		t.Errorf("%d records processed more than once while workers joined, want 0: %v", len(d.Duplicated), d.Duplicated)
	}
	var byNew int
	for _, r := range recs {
		if r.Worker == "w4" || r.Worker == "w5" {
			byNew++
		}
	}
	if byNew == 0 {
		t.Error("the joined workers processed no record")
	}
	t.Logf("%d records produced, 0 lost, 0 duplicates; %d processed by the joined workers", len(sent), byNew)
}

// TestReshardParentsBeforeChildren proves resharding 30 -> 60 shards (UNIFORM_SCALING)
// under load: the coordinator publishes 60 shards and max 20; every parent lease reaches
// SHARD_END; no child shard's record is processed before the last record of each of its
// parents; not a record is lost; and each partition key's records are processed in the
// order they were produced, across the parent -> child boundary.
func TestReshardParentsBeforeChildren(t *testing.T) {
	t.Parallel()
	c, p, ws := balancedWithRecords(t, "w1", "w2", "w3")
	time.Sleep(time.Second)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resharded := time.Now()
	c.reshardTo(ctx, 60)
	p.bindKeys() // keys for the children whose hash range starts a new range

	shards, err := kinesisstream.New(c.kin, c.stream).ListShards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var parents []string
	parentsOf := map[string][]string{}
	for _, s := range shards {
		if s.Closed {
			parents = append(parents, s.ID)
		} else if ps := s.Parents(); len(ps) > 0 {
			parentsOf[s.ID] = ps
		}
	}
	if len(parents) != 30 || len(parentsOf) != 60 {
		t.Fatalf("after the reshard: %d closed shards and %d open shards with parents, want 30 and 60", len(parents), len(parentsOf))
	}

	published := waitFor(t, 60*time.Second, "the coordinator to publish 60 shards and max 20", func() (bool, string) {
		r, err := c.coordinator()
		if err != nil {
			return false, err.Error()
		}
		return r != nil && r.ShardCount == 60 && r.MaxLeasesPerWorker == 20, coordString(r)
	})
	t.Logf("MEASURED reshard 30 -> 60 -> coordinator publishes 60 shards, max 20: %s", since(resharded, published))
	ended := waitFor(t, 60*time.Second, "every parent lease at SHARD_END", func() (bool, string) {
		tab, err := c.leases()
		if err != nil {
			return false, err.Error()
		}
		cp := map[string]string{}
		for _, l := range tab.Leases {
			cp[l.ShardID] = l.Checkpoint
		}
		var open []string
		for _, id := range parents {
			if cp[id] != lease.ShardEnd {
				open = append(open, id)
			}
		}
		return len(open) == 0, fmt.Sprintf("%d parents not finished: %v", len(open), open)
	})
	t.Logf("MEASURED reshard -> every parent lease at SHARD_END: %s", since(resharded, ended))
	balanced := c.waitBalanced(60*time.Second, 60, 20, ids(ws)...)
	t.Logf("MEASURED reshard -> 20/20/20 on the children: %s", since(resharded, balanced))

	p.putRound(1)
	sent, d, recs := c.drain(p, 2*time.Second, 90*time.Second)

	// Parents before children: a child's first record after each parent's last.
	first, last := map[string]int64{}, map[string]int64{}
	for _, r := range recs {
		if t0, ok := first[r.Shard]; !ok || r.T < t0 {
			first[r.Shard] = r.T
		}
		last[r.Shard] = max(last[r.Shard], r.T)
	}
	checked := 0
	for child, ps := range parentsOf {
		ft, ok := first[child]
		if !ok {
			continue
		}
		checked++
		for _, pid := range ps {
			if lt, ok := last[pid]; ok && ft <= lt {
				t.Errorf("child %s processed its first record %s before parent %s processed its last",
					child, time.Duration(lt-ft), pid)
			}
		}
	}
	if checked < 30 {
		t.Errorf("only %d child shards had records; the parent/child order check proves little", checked)
	}

	// Per key, the data sequence numbers never go down in processing order.
	byKey := map[string][]harness.Delivery{}
	for _, r := range recs {
		byKey[r.PK] = append(byKey[r.PK], r)
	}
	crossed := 0
	for pk, rs := range byKey {
		sort.SliceStable(rs, func(i, j int) bool {
			if rs[i].T != rs[j].T {
				return rs[i].T < rs[j].T
			}
			a, _ := seqNum(rs[i].Seq)
			b, _ := seqNum(rs[j].Seq)
			return a.Cmp(b) < 0
		})
		prev := -1
		for i, r := range rs {
			n, err := strconv.Atoi(strings.TrimPrefix(r.Data, pk+":"))
			if err != nil {
				t.Fatalf("record data %q of key %s: %v", r.Data, pk, err)
			}
			if n < prev {
				t.Errorf("key %s: record %d processed after record %d (%s/%s after %s/%s)", pk, n, prev, r.Shard, r.Seq, rs[i-1].Shard, rs[i-1].Seq)
			}
			if i > 0 && r.Shard != rs[i-1].Shard {
				crossed++
			}
			prev = n
		}
	}
	if crossed == 0 {
		t.Error("no partition key moved from a parent to a child; the order check proves little")
	}
	t.Logf("%d records produced, 0 lost, %d processed twice; %d children checked after their parents, %d keys crossed parent -> child",
		len(sent), len(d.Duplicated), checked, crossed)
}

// reshardTo scales c's stream to n open shards (UNIFORM_SCALING) and waits until it is
// ACTIVE with n open shards.
func (c *cluster) reshardTo(ctx context.Context, n int32) {
	c.t.Helper()
	if _, err := c.kin.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(c.stream),
		TargetShardCount: aws.Int32(n), ScalingType: ktypes.ScalingTypeUniformScaling}); err != nil {
		c.t.Fatalf("UpdateShardCount to %d: %v", n, err)
	}
	waitFor(c.t, 30*time.Second, fmt.Sprintf("the stream to be ACTIVE with %d open shards", n), func() (bool, string) {
		out, err := c.kin.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(c.stream)})
		if err != nil {
			return false, err.Error()
		}
		d := out.StreamDescriptionSummary
		return d.StreamStatus == ktypes.StreamStatusActive && aws.ToInt32(d.OpenShardCount) == n,
			fmt.Sprintf("%s, %d open shards", d.StreamStatus, aws.ToInt32(d.OpenShardCount))
	})
}
