package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Each checker is shown to pass on a clean hand-made log and to fail on a crafted
// violation of its invariant.

const sec = time.Second

// st makes a stamp at t seconds; the order is t itself.
func st(t float64) Stamp {
	return Stamp{At: time.Duration(t * float64(sec)), Seq: int64(t * 1000)}
}

// cp returns the checkpoint at seq with sub-sequence number 0.
func cp(seq string) lease.ExtendedSequenceNumber {
	return lease.ExtendedSequenceNumber{SequenceNumber: seq}
}

func seq(n int) string {
	s := "000000000000000000000"
	d := []byte(s)
	for i := len(d) - 1; n > 0; i-- {
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return string(d)
}

func seqs(ns ...int) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = seq(n)
	}
	return out
}

// base is a clean log: shard A (records 1..4) split into B; w1 holds A at epoch 1,
// releases it, w2 takes it at epoch 3, ends it, then processes B.
func base() *Log {
	return &Log{
		LeaseDuration: 10 * sec, PollInterval: sec, Cap: 80,
		Position: lease.TrimHorizon, FirstStart: 10 * sec, LastFault: 20 * sec, End: 100 * sec,
		Shards: map[string]ShardInfo{"A": {ID: "A"}, "B": {ID: "B", Parents: []string{"A"}}},
		Produced: []Produced{
			{Stamp: st(1), Shard: "A", Seq: seq(1), Arrival: 1 * sec, BeforeStart: true},
			{Stamp: st(11), Shard: "A", Seq: seq(2), Arrival: 11 * sec},
			{Stamp: st(12), Shard: "A", Seq: seq(3), Arrival: 12 * sec},
			{Stamp: st(13), Shard: "A", Seq: seq(4), Arrival: 13 * sec},
			{Stamp: st(31), Shard: "B", Seq: seq(5), Arrival: 31 * sec},
		},
		Writes: []Write{
			{Stamp: st(10), Op: OpCreate, Shard: "A", Checkpoint: cp(lease.TrimHorizon)},
			{Stamp: st(10.5), Op: OpTake, Shard: "A", Owner: "w1", Counter: 1, Checkpoint: cp(lease.TrimHorizon)},
			{Stamp: st(14), Op: OpCheckpoint, Shard: "A", Owner: "w1", Counter: 1, Checkpoint: cp(seq(3))},
			{Stamp: st(15), Op: OpRelease, Shard: "A", Owner: "w1", Counter: 2, Checkpoint: lease.ExtendedSequenceNumber{}},
			{Stamp: st(16), Op: OpTake, Shard: "A", Owner: "w2", Counter: 3, Checkpoint: cp(seq(3))},
			{Stamp: st(25), Op: OpRelease, Shard: "A", Owner: "w2", Counter: 4, Checkpoint: cp(lease.ShardEnd)},
			{Stamp: st(26), Op: OpCreate, Shard: "B", Checkpoint: cp(lease.TrimHorizon)},
			{Stamp: st(27), Op: OpTake, Shard: "B", Owner: "w2", Counter: 1, Checkpoint: cp(lease.TrimHorizon)},
		},
		Deliveries: []Delivery{
			{Stamp: st(11.5), Worker: "w1", Inc: 1, Shard: "A", Epoch: 1, Seqs: seqs(1, 2)},
			{Stamp: st(12.5), Worker: "w1", Inc: 1, Shard: "A", Epoch: 1, Seqs: seqs(3)},
			{Stamp: st(17), Worker: "w2", Inc: 1, Shard: "A", Epoch: 3, Seqs: seqs(4)},
			{Stamp: st(32), Worker: "w2", Inc: 1, Shard: "B", Epoch: 1, Seqs: seqs(5)},
		},
		Samples: []Sample{
			{Stamp: st(50), Owners: map[string]string{"B": "w2"}, Open: []string{"B"},
				Workers: []WorkerSample{{ID: "w1", Inc: 1, Healthy: true}, {ID: "w2", Inc: 1, Healthy: true, Leases: []string{"B"}}}},
			{Stamp: st(51), Owners: map[string]string{"B": "w2"}, Open: []string{"B"},
				Workers: []WorkerSample{{ID: "w1", Inc: 1, Healthy: true}, {ID: "w2", Inc: 1, Healthy: true, Leases: []string{"B"}}}},
		},
	}
}

// w1DeliversA appends a delivery of record n of shard A by w1 (incarnation 1) at epoch
// 1 and time at, and returns it for a case to change.
func w1DeliversA(l *Log, at float64, n int) *Delivery {
	l.Deliveries = append(l.Deliveries, Delivery{Stamp: st(at), Worker: "w1", Inc: 1, Shard: "A", Epoch: 1, Seqs: seqs(n)})
	return &l.Deliveries[len(l.Deliveries)-1]
}

func samples(from, to int, f func(t int) Sample) []Sample {
	var out []Sample
	for t := from; t <= to; t++ {
		s := f(t)
		s.Stamp = st(float64(t))
		out = append(out, s)
	}
	return out
}

func TestCheckersPassOnCleanLog(t *testing.T) {
	l := base()
	for _, c := range Checkers {
		if vs := c.Check(l); len(vs) > 0 {
			t.Errorf("%s: clean log reported %v", c.Kind, vs)
		}
	}
}

type checkerCase struct {
	name   string
	edit   func(l *Log)
	kind   string // the kind expected; "" for a case that must pass
	substr string
}

func runCases(t *testing.T, check func(*Log) []Violation, cases []checkerCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := base()
			c.edit(l)
			vs := check(l)
			if c.kind == "" {
				if len(vs) > 0 {
					t.Fatalf("want no violation, got %v", vs)
				}
				return
			}
			if len(vs) == 0 {
				t.Fatalf("want a %s violation, got none", c.kind)
			}
			for _, v := range vs {
				if v.Kind != c.kind {
					t.Errorf("kind %q, want %q: %v", v.Kind, c.kind, v)
				}
				if !strings.Contains(v.Msg, c.substr) {
					t.Errorf("message %q lacks %q", v.Msg, c.substr)
				}
			}
		})
	}
}

func TestCheckExclusive(t *testing.T) {
	runCases(t, CheckExclusive, []checkerCase{
		{"stale owner delivers after the new take", func(l *Log) {
			w1DeliversA(l, 16.5, 4)
		}, KindExclusive, "after w2 took the lease at counter 3"},
		{"stale delivery while paused", func(l *Log) {
			w1DeliversA(l, 16.5, 4).Paused = true
		}, KindExclusivePause, "took the lease"},
		{"paused, but the call came after the new take", func(l *Log) {
			d := w1DeliversA(l, 16.5, 4)
			d.Paused, d.Call = true, st(16.4)
		}, KindExclusive, "after w2 took the lease at counter 3"},
		{"epochs interleave without a recorded take", func(l *Log) {
			l.Writes = l.Writes[:4] // drop w2's take: only the deliveries show the overlap
			w1DeliversA(l, 18, 4)
		}, KindExclusive, "after w2#1 delivered at epoch 3"},
		{"old epoch delivered just before the take is fine", func(l *Log) {
			w1DeliversA(l, 15.9, 4)
		}, "", ""},
	})
}

func TestCheckAtLeastOnce(t *testing.T) {
	runCases(t, CheckAtLeastOnce, []checkerCase{
		{"record never delivered", func(l *Log) {
			l.Deliveries = l.Deliveries[1:]
		}, KindAtLeastOnce, "2 required records never delivered"},
		{"LATEST does not require records before the start", func(l *Log) {
			l.Position = lease.Latest
			l.Deliveries = l.Deliveries[1:]
			w1DeliversA(l, 12.1, 2)
		}, "", ""},
		{"LATEST requires records after start plus a poll", func(l *Log) {
			l.Position = lease.Latest
			l.Deliveries = l.Deliveries[2:]
		}, KindAtLeastOnce, "first 2 (arrived t=11s)"},
		{"recorded start moves the requirement", func(l *Log) {
			l.Position = lease.Latest
			rs := 12500 * time.Millisecond
			l.RecordedStart = &rs
			l.Deliveries = l.Deliveries[2:]
		}, "", ""},
		{"AT_TIMESTAMP requires from the timestamp", func(l *Log) {
			l.Position = lease.AtTimestamp
			l.InitialTimestamp = 11 * sec
			l.Deliveries = l.Deliveries[1:]
		}, KindAtLeastOnce, "first 2"},
		{"records of a trimmed shard are not required", func(l *Log) {
			l.Deliveries = l.Deliveries[:3]
			l.Trims = []Trim{{Stamp: st(60), Shard: "B"}}
		}, "", ""},
	})
}

func TestCheckCheckpoints(t *testing.T) {
	runCases(t, CheckCheckpoints, []checkerCase{
		{"checkpoint moves back", func(l *Log) {
			l.Writes = append(l.Writes, Write{Stamp: st(18), Op: OpCheckpoint, Shard: "A", Owner: "w2", Counter: 3, Checkpoint: cp(seq(2))})
		}, KindCheckpointBack, "wrote 2 after 3"},
		{"sequence number after SHARD_END", func(l *Log) {
			l.Writes = append(l.Writes, Write{Stamp: st(30), Op: OpCheckpoint, Shard: "A", Owner: "w1", Counter: 1, Checkpoint: cp(seq(4))})
		}, KindCheckpointBack, "after SHARD_END"},
		{"back to TRIM_HORIZON", func(l *Log) {
			l.Writes = append(l.Writes, Write{Stamp: st(18), Op: OpRelease, Shard: "A", Owner: "w2", Counter: 4, Checkpoint: cp(lease.TrimHorizon)})
		}, KindCheckpointBack, "TRIM_HORIZON"},
		{"numeric, not textual, order", func(l *Log) {
			l.Writes = append(l.Writes,
				Write{Stamp: st(18), Op: OpCheckpoint, Shard: "A", Owner: "w2", Counter: 3, Checkpoint: cp("9")},
				Write{Stamp: st(19), Op: OpCheckpoint, Shard: "A", Owner: "w2", Counter: 3, Checkpoint: cp("10")})
			l.Writes[2].Checkpoint = cp("3")
		}, "", ""},
	})
}

func TestCheckOrder(t *testing.T) {
	runCases(t, CheckOrder, []checkerCase{
		{"record repeated within a tenure", func(l *Log) {
			l.Deliveries[1].Seqs = seqs(2, 3)
		}, KindOrder, "delivered 2 after 2"},
		{"out of order within a batch", func(l *Log) {
			l.Deliveries[0].Seqs = seqs(2, 1)
		}, KindOrder, "delivered 1 after 2"},
		{"a failed call is retried", func(l *Log) {
			w1DeliversA(l, 12.2, 3).Failed = true
		}, "", ""},
		{"a new tenure may repeat", func(l *Log) {
			l.Deliveries[2].Seqs = seqs(3, 4)
		}, "", ""},
		{"a new incarnation may repeat", func(l *Log) {
			w1DeliversA(l, 12.7, 3).Inc = 2
		}, "", ""},
	})
}

func TestCheckChildAfterParents(t *testing.T) {
	runCases(t, CheckChildAfterParents, []checkerCase{
		{"child delivered before the parent ended", func(l *Log) {
			l.Deliveries[3].Stamp = st(24)
		}, KindChildFirst, "before parent A ended (only at t=25s)"},
		{"parent never ended", func(l *Log) {
			l.Writes[5].Checkpoint = lease.ExtendedSequenceNumber{}
		}, KindChildFirst, "(never)"},
		{"a trimmed parent ended when trimmed", func(l *Log) {
			l.Writes[5].Checkpoint = lease.ExtendedSequenceNumber{}
			l.Trims = []Trim{{Stamp: st(30), Shard: "A"}}
		}, "", ""},
	})
}

func TestCheckInitialPosition(t *testing.T) {
	runCases(t, CheckInitialPosition, []checkerCase{
		{"TRIM_HORIZON delivers everything", func(l *Log) {}, "", ""},
		{"LATEST delivered a record put before the start", func(l *Log) {
			l.Position = lease.Latest
		}, KindBeforeStart, "record 1"},
		{"LATEST clean", func(l *Log) {
			l.Position = lease.Latest
			l.Deliveries[0].Seqs = seqs(2)
		}, "", ""},
		{"AT_TIMESTAMP delivered before the timestamp", func(l *Log) {
			l.Position = lease.AtTimestamp
			l.InitialTimestamp = 12 * sec
			l.Deliveries[0].Seqs = seqs(2)
		}, KindBeforeStart, "record 2"},
	})
}

func TestCheckConvergence(t *testing.T) {
	healthy := func(leases ...string) []WorkerSample {
		return []WorkerSample{{ID: "w1", Inc: 1, Healthy: true, Leases: leases}, {ID: "w2", Inc: 1, Healthy: true}}
	}
	runCases(t, CheckConvergence, []checkerCase{
		{"open shard unheld after the bound", func(l *Log) {
			l.Samples = samples(40, 90, func(int) Sample {
				return Sample{Open: []string{"B", "C"}, Owners: map[string]string{"B": "w1"}, Workers: healthy("B")}
			})
		}, KindConvergence, "held by no live worker for 11 samples from t=1m20s"},
		{"held only by an unhealthy worker", func(l *Log) {
			l.Samples = samples(40, 90, func(int) Sample {
				return Sample{Open: []string{"B"}, Owners: map[string]string{"B": "w1"},
					Workers: []WorkerSample{{ID: "w1", Inc: 1, Healthy: false, Leases: []string{"B"}}, {ID: "w2", Inc: 1, Healthy: true}}}
			})
		}, KindConvergence, "owner w1"},
		{"unheld only within the bound", func(l *Log) {
			l.Samples = samples(30, 60, func(t int) Sample {
				if t < 50 {
					return Sample{Open: []string{"B"}, Workers: healthy()}
				}
				return Sample{Open: []string{"B"}, Owners: map[string]string{"B": "w1"}, Workers: healthy("B")}
			})
		}, "", ""},
		{"a one-sample hand-off is fine", func(l *Log) {
			l.Samples = samples(50, 60, func(t int) Sample {
				if t == 55 {
					return Sample{Open: []string{"B"}, Workers: healthy()}
				}
				return Sample{Open: []string{"B"}, Owners: map[string]string{"B": "w1"}, Workers: healthy("B")}
			})
		}, "", ""},
		{"at the cap, a closed shard waits while open shards are held", func(l *Log) {
			l.Cap = 1
			l.Samples = samples(40, 90, func(int) Sample {
				return Sample{Open: []string{"B", "C", "D"}, Ready: []string{"P"}, Workers: []WorkerSample{
					{ID: "w1", Inc: 1, Healthy: true, Leases: []string{"B"}}, {ID: "w2", Inc: 1, Healthy: true, Leases: []string{"C"}}}}
			})
		}, KindConvergence, "closed shard ready to read (its children wait) held by no live worker"},
		{"at the cap, open shards wait while closed ones are held", func(l *Log) {
			l.Cap = 1
			l.Samples = samples(40, 90, func(int) Sample {
				return Sample{Open: []string{"B", "C"}, Ready: []string{"P", "Q", "R"}, Workers: []WorkerSample{
					{ID: "w1", Inc: 1, Healthy: true, Leases: []string{"P"}}, {ID: "w2", Inc: 1, Healthy: true, Leases: []string{"Q"}}}}
			})
		}, "", ""},
	})
}

func TestCheckOrphans(t *testing.T) {
	runCases(t, CheckOrphans, []checkerCase{
		{"owned in the table, not held", func(l *Log) {
			l.Samples = samples(20, 90, func(int) Sample {
				return Sample{Open: []string{"B"}, Owners: map[string]string{"B": "w1"},
					Workers: []WorkerSample{{ID: "w1", Inc: 2, Healthy: true}}}
			})
		}, KindOrphan, "owned by healthy worker w1"},
		{"not counted while the owner is unhealthy", func(l *Log) {
			l.Samples = samples(20, 60, func(t int) Sample {
				return Sample{Open: []string{"B"}, Owners: map[string]string{"B": "w1"},
					Workers: []WorkerSample{{ID: "w1", Inc: 2, Healthy: t%20 != 0}}}
			})
		}, "", ""},
		{"held again within the bound", func(l *Log) {
			l.Samples = samples(20, 60, func(t int) Sample {
				var leases []string
				if t > 45 {
					leases = []string{"B"}
				}
				return Sample{Open: []string{"B"}, Owners: map[string]string{"B": "w1"},
					Workers: []WorkerSample{{ID: "w1", Inc: 2, Healthy: true, Leases: leases}}}
			})
		}, "", ""},
	})
}

func TestCmpCheckpoint(t *testing.T) {
	order := []lease.ExtendedSequenceNumber{cp(lease.TrimHorizon), cp("9"), cp("10"), {SequenceNumber: "10", SubSequenceNumber: 1},
		{SequenceNumber: "10", SubSequenceNumber: 12}, cp("000000000000000000011"), cp(lease.ShardEnd)}
	for i := range order {
		for j := range order {
			got := cmpCheckpoint(order[i], order[j])
			if (i < j) != (got < 0) || (i == j) != (got == 0) {
				t.Errorf("cmpCheckpoint(%v, %v) = %d", order[i], order[j], got)
			}
		}
	}
}
