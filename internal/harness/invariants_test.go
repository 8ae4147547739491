package harness

import (
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func dlv(worker, shard string, epoch int64, seq string, ms int) Delivery {
	return Delivery{Worker: worker, Shard: shard, Epoch: epoch, Seq: seq, T: at(ms).UnixNano()}
}

func sample(ms int, ls ...lease.Lease) Sample { return Sample{At: at(ms), Leases: ls} }

func ls(shard, owner string, counter int64, cp string) lease.Lease {
	return lease.Lease{ShardID: shard, Owner: owner, Epoch: counter, Checkpoint: cp}
}

func wantResult(t *testing.T, r Result, fail bool, substr string) {
	t.Helper()
	if fail && r.OK() {
		t.Fatalf("%s: passed, want a violation", r.Name)
	}
	if !fail && !r.OK() {
		t.Fatalf("%s: failed: %v", r.Name, r.Violations)
	}
	if fail && !strings.Contains(strings.Join(r.Violations, "\n"), substr) {
		t.Errorf("%s: violations %v, want one mentioning %q", r.Name, r.Violations, substr)
	}
}

func TestCompareCheckpoints(t *testing.T) {
	ordered := []string{lease.TrimHorizon, "9", "10", "49590338271490256608559692538361571095921575989136588898", lease.ShardEnd}
	for i := range ordered {
		for j := range ordered {
			got := CompareCheckpoints(ordered[i], ordered[j])
			if (i < j && got >= 0) || (i > j && got <= 0) || (i == j && got != 0) {
				t.Errorf("CompareCheckpoints(%s, %s) = %d", ordered[i], ordered[j], got)
			}
		}
	}
}

func TestCheckLost(t *testing.T) {
	produced := []Produced{{Shard: "a", Seq: "1", Key: "k", N: 0}, {Shard: "a", Seq: "2", Key: "k", N: 1}, {Shard: "b", Seq: "5", Key: "j", N: 0}}
	all := []Delivery{dlv("w", "a", 1, "1", 0), dlv("w", "a", 1, "2", 1), dlv("w", "b", 1, "5", 1)}
	final := []lease.Lease{ls("a", "w", 1, "2"), ls("b", "", 2, lease.ShardEnd)}
	wantResult(t, CheckLost(produced, all, final), false, "")
	wantResult(t, CheckLost(produced, all[:2], final), true, "never processed")
	wantResult(t, CheckLost(produced, all, []lease.Lease{ls("a", "w", 1, "1"), final[1]}), true, "behind its last record")
	wantResult(t, CheckLost(produced, all, final[:1]), true, "no lease")
}

func TestCheckOrder(t *testing.T) {
	produced := []Produced{{Shard: "p", Seq: "1", Key: "k", N: 0}, {Shard: "c", Seq: "7", Key: "k", N: 1}}
	inOrder := []Delivery{dlv("w1", "p", 1, "1", 0), dlv("w2", "c", 1, "7", 5), dlv("w3", "p", 2, "1", 9)} // a replay later is fine
	wantResult(t, CheckOrder(produced, inOrder), false, "")
	// The child's record was processed before its parent's: order across shards broke.
	wantResult(t, CheckOrder(produced, []Delivery{dlv("w2", "c", 1, "7", 0), dlv("w1", "p", 1, "1", 5)}), true, "first processed after n=1")
}

func TestCheckCheckpoints(t *testing.T) {
	good := []Sample{sample(0, ls("a", "w1", 1, lease.TrimHorizon)), sample(200, ls("a", "w1", 1, "5")),
		sample(400, ls("a", "w2", 2, "5")), sample(600, ls("a", "w2", 2, "100")), sample(800, ls("a", "w2", 2, lease.ShardEnd))}
	wantResult(t, CheckCheckpoints(good), false, "")
	back := []Sample{sample(0, ls("a", "w1", 1, "100")), sample(200, ls("a", "w2", 2, "99"))} // 100 > 99 numerically, not textually
	wantResult(t, CheckCheckpoints(back), true, "checkpoint 99")
	afterEnd := []Sample{sample(0, ls("a", "w1", 1, lease.ShardEnd)), sample(200, ls("a", "w1", 1, "5"))}
	wantResult(t, CheckCheckpoints(afterEnd), true, "after SHARD_END")
	counter := []Sample{sample(0, ls("a", "w1", 3, "5")), sample(200, ls("a", "w1", 2, "5"))}
	wantResult(t, CheckCheckpoints(counter), true, "counter 2 after 3")
}

func TestCheckFencing(t *testing.T) {
	deliveries := []Delivery{dlv("w1", "a", 1, "5", 0), dlv("w1", "a", 1, "6", 100), dlv("w2", "a", 2, "7", 500)}
	good := []Sample{sample(0, ls("a", "w1", 1, "5")), sample(200, ls("a", "w2", 2, "6")), sample(600, ls("a", "w2", 2, "7"))}
	wantResult(t, CheckFencing(good, deliveries), false, "")
	// The lease was at epoch 2 already, then w1 (epoch 1) got its checkpoint 6 in.
	stale := []Sample{sample(0, ls("a", "w2", 2, "5")), sample(200, ls("a", "w2", 2, "6"))}
	wantResult(t, CheckFencing(stale, deliveries), true, "processed under epochs [1] only")
	oldCounter := []Sample{sample(0, ls("a", "w2", 2, "5")), sample(200, ls("a", "w1", 1, "6"))}
	wantResult(t, CheckFencing(oldCounter, deliveries), true, "epoch 1 after owner \"w2\" epoch 2")
	unprocessed := []Sample{sample(0, ls("a", "w1", 1, "5")), sample(200, ls("a", "w1", 1, "8"))}
	wantResult(t, CheckFencing(unprocessed, deliveries), true, "nobody processed")
}

func TestCheckExclusive(t *testing.T) {
	good := []Delivery{dlv("w1", "a", 1, "1", 0), dlv("w1", "a", 1, "2", 100), dlv("w2", "a", 2, "2", 300), dlv("w1", "b", 1, "1", 150)}
	wantResult(t, CheckExclusive(good), false, "")
	zombie := append(good, dlv("w1", "a", 1, "3", 400)) // epoch 1 still processing after epoch 2 began
	wantResult(t, CheckExclusive(zombie), true, "w1 (epoch 1) processed until")
	shared := append(good, dlv("w3", "a", 2, "4", 500))
	wantResult(t, CheckExclusive(shared), true, "processed by both")
}

func TestCheckDuplicates(t *testing.T) {
	deliveries := []Delivery{dlv("w1", "a", 1, "5", 0), dlv("w1", "a", 1, "6", 100), dlv("w2", "a", 2, "6", 3000)}
	samples := []Sample{sample(50, ls("a", "w1", 1, "5")), sample(2900, ls("a", "w2", 2, "5"))}
	kill := Event{Kind: EventKill, Worker: "w1", From: at(200), To: at(200)}
	r, causes := CheckDuplicates(deliveries, samples, []Event{kill})
	wantResult(t, r, false, "")
	if len(causes) != 1 || causes[0].Count != 1 || causes[0].Event.Kind != EventKill {
		t.Errorf("causes %+v, want the kill with 1 duplicate", causes)
	}
	term := Event{Kind: EventTerm, Worker: "w1", From: at(200), To: at(300)}
	r, _ = CheckDuplicates(deliveries, samples, []Event{term})
	wantResult(t, r, true, "after a planned move")
	other := Event{Kind: EventKill, Worker: "w9", From: at(200), To: at(200)}
	r, _ = CheckDuplicates(deliveries, samples, []Event{other})
	wantResult(t, r, true, "no crash, cut-off or fault")
	// Replaying a record the lease table already showed as checkpointed is more than
	// "the records since the last checkpoint".
	checkpointed := []Sample{sample(50, ls("a", "w1", 1, "5")), sample(2900, ls("a", "w2", 2, "6"))}
	r, _ = CheckDuplicates(deliveries, checkpointed, []Event{kill})
	wantResult(t, r, true, "although checkpoint 6")
}

func TestCheckIAM(t *testing.T) {
	pol, err := LoadPolicy("../../docs/iam-policy.json", map[string]string{
		"${AWS_REGION}": "us-east-1", "${ACCOUNT_ID}": LocalAccount, "kds-consumer-app": "app1", "test-stream": "s1"})
	if err != nil {
		t.Fatal(err)
	}
	ok := map[string]map[Access]int64{"w": {
		{Action: "kinesis:GetRecords", Service: "kinesis"}:                        3,
		{Action: "kinesis:ListShards", Service: "kinesis", Resource: "s1"}:        1,
		{Action: "dynamodb:UpdateItem", Service: "dynamodb", Resource: "app1"}:    2,
		{Action: "dynamodb:Scan", Service: "dynamodb", Resource: "app1_meta"}:     2,
		{Action: "dynamodb:CreateTable", Service: "dynamodb", Resource: "app1"}:   1,
		{Action: "dynamodb:DescribeTable", Service: "dynamodb", Resource: "app1"}: 1,
	}}
	wantResult(t, CheckIAM(pol, ok, "us-east-1", LocalAccount), false, "")
	for _, bad := range []Access{
		{Action: "kinesis:PutRecords", Service: "kinesis", Resource: "s1"},
		{Action: "kinesis:ListShards", Service: "kinesis", Resource: "other-stream"},
		{Action: "dynamodb:GetItem", Service: "dynamodb", Resource: "app1_other"},
		{Action: "dynamodb:DeleteTable", Service: "dynamodb", Resource: "app1"},
	} {
		r := CheckIAM(pol, map[string]map[Access]int64{"w": {bad: 1}}, "us-east-1", LocalAccount)
		wantResult(t, r, true, bad.Action)
	}
}
