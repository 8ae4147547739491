package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
)

// logWriter builds record logs by hand, one file per worker, the way the demo processor
// writes them.
type logWriter struct {
	t     *testing.T
	dir   string
	lines map[string][]string
	clock int64
}

func newLogWriter(t *testing.T) *logWriter {
	return &logWriter{t: t, dir: t.TempDir(), lines: map[string][]string{}, clock: 1_000_000}
}

// deliver logs that worker processed rec under epoch, one tick after the previous line.
func (w *logWriter) deliver(worker string, epoch int64, rec streamRecord) {
	w.clock++
	w.deliverAt(worker, epoch, rec, w.clock)
}

func (w *logWriter) deliverAt(worker string, epoch int64, rec streamRecord, at int64) {
	b, err := json.Marshal(recordlog.Line{Worker: worker, Shard: rec.shard, Epoch: epoch, Seq: rec.SequenceNumber,
		PK: rec.PartitionKey, Data: string(rec.Data), T: at})
	if err != nil {
		w.t.Fatal(err)
	}
	w.lines[worker] = append(w.lines[worker], string(b))
}

func (w *logWriter) write(extra ...string) string {
	for worker, lines := range w.lines {
		body := strings.Join(append(lines, extra...), "\n") + "\n"
		if err := os.WriteFile(filepath.Join(w.dir, worker+".jsonl"), []byte(body), 0o644); err != nil {
			w.t.Fatal(err)
		}
		extra = nil
	}
	return w.dir
}

func TestProduceAndVerify(t *testing.T) {
	name := enginetest.UniqueName(t, "verify")
	enginetest.CreateStream(t, name, 4)
	r := kdsctlOK(t, "--stream", name, "produce", "--count", "200", "--keys", "20", "--rate", "0", "--run", "run-a", "-o", "json")
	var ps produceStats
	mustJSON(t, r, &ps)
	if ps.Written != 200 || ps.Run != "run-a" || ps.Keys != 20 || ps.Unsent != 0 {
		t.Errorf("produce summary %+v", ps)
	}
	// A second, small run, and a record that is not produce's: verify keeps runs apart
	// and ignores foreign data.
	if r := kdsctl(t, "--stream", name, "produce", "--count", "10", "--keys", "5", "--rate", "0", "--run", "run-b"); r.code != 0 {
		t.Fatalf("produce run-b: exit %d", r.code)
	}
	_, err := enginetest.Kinesis(t).PutRecord(t.Context(), &kinesis.PutRecordInput{
		StreamName: aws.String(name), PartitionKey: aws.String("x"), Data: []byte("not json")})
	if err != nil {
		t.Fatal(err)
	}

	recs, perKey := streamPayloads(t, name, "run-a")
	if len(recs) != 211 {
		t.Fatalf("stream holds %d records, want 211", len(recs))
	}
	// Each key's records are in one shard, in the order produce numbered them.
	want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for key, ns := range perKey {
		if !slices.Equal(ns, want) {
			t.Errorf("key %s: stream order %v", key, ns)
		}
	}
	if len(perKey) != 20 {
		t.Errorf("%d keys in the stream, want 20", len(perKey))
	}
	runA := func(key string, n int) streamRecord {
		for _, rec := range recs {
			var p payload
			if json.Unmarshal(rec.Data, &p) == nil && p.Run == "run-a" && p.Key == key && p.N == n {
				return rec
			}
		}
		t.Fatalf("record %s/%d not in the stream", key, n)
		return streamRecord{}
	}
	lost := map[string]bool{}
	for _, rec := range []streamRecord{runA("pk-0001", 3), runA("pk-0002", 9), runA("pk-0017", 0)} {
		lost[rec.SequenceNumber] = true
	}
	late := runA("pk-0005", 4).SequenceNumber

	// Worker w0 processes run-a (but for the lost three) and run-b, in stream order, except
	// that pk-0005's n=4 comes after its n=5..9.
	w := newLogWriter(t)
	for _, rec := range recs {
		switch {
		case lost[rec.SequenceNumber], rec.PartitionKey == "x":
		case rec.SequenceNumber == late:
			w.deliverAt("w0", 1, rec, 1<<40)
		default:
			w.deliver("w0", 1, rec)
		}
	}
	// Two replays by w1 after the lease moved (epoch 2), one same-epoch repeat by w0, one
	// stale delivery by w0 after w1 had it at epoch 2.
	w.deliver("w1", 2, runA("pk-0010", 1))
	w.deliver("w1", 2, runA("pk-0011", 1))
	w.deliver("w0", 1, runA("pk-0012", 7))
	w.deliver("w1", 2, runA("pk-0013", 2))
	w.deliver("w0", 1, runA("pk-0013", 2))
	dir := w.write(`{"worker":"w0","shard":"shardId-0000`) // a line cut off by a crash

	r = kdsctl(t, "--stream", name, "verify", "--records-dir", dir, "-o", "json")
	if r.code != 1 {
		t.Errorf("verify with loss and disorder: exit %d, want 1", r.code)
	}
	var rep verifyReport
	mustJSON(t, r, &rep)
	wantA := runReport{Run: "run-a", Produced: 200, Processed: 197, Lost: 3, Duplicates: 5,
		DupOlderEpoch: 3, DupSameEpoch: 1, DupStaleEpoch: 1, OutOfOrder: 1}
	wantB := runReport{Run: "run-b", Produced: 10, Processed: 10}
	if len(rep.Runs) != 2 || rep.Runs[0] != wantA || rep.Runs[1] != wantB {
		t.Errorf("runs:\n got %+v\nwant %+v", rep.Runs, []runReport{wantA, wantB})
	}
	if rep.StreamRecords != 211 || rep.Foreign != 1 || rep.BadLines != 1 || rep.Unknown != 0 || rep.OK {
		t.Errorf("report %+v", rep)
	}
	if len(rep.WorstKeys) == 0 || rep.WorstKeys[0].Key != "pk-0013" || rep.WorstKeys[0].Duplicates != 2 {
		t.Errorf("worst keys %+v, want pk-0013 (2 duplicates) first", rep.WorstKeys)
	}
	if !strings.Contains(r.stderr, "3 lost") || !strings.Contains(r.stderr, "1 out of order") {
		t.Errorf("failure reasons missing from stderr")
	}

	// The human report says the same.
	r = kdsctl(t, "--stream", name, "verify", "--records-dir", dir)
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL") || !strings.Contains(r.stdout, "worst keys") {
		t.Errorf("human verify: exit %d", r.code)
	}

	// Everything processed, with duplicates: a pass unless --max-duplicates says otherwise.
	w = newLogWriter(t)
	for _, rec := range recs {
		w.deliver("w0", 1, rec)
	}
	w.deliver("w1", 2, runA("pk-0010", 1))
	w.deliver("w1", 2, runA("pk-0011", 1))
	dir = w.write()
	for _, tt := range []struct {
		args []string
		code int
	}{
		{nil, 0},
		{[]string{"--max-duplicates", "2"}, 0},
		{[]string{"--max-duplicates", "1"}, 1},
		{[]string{"--max-duplicates", "1", "--run", "run-b"}, 0},
		{[]string{"--run", "run-zzz"}, 1},
	} {
		args := append([]string{"--stream", name, "verify", "--records-dir", dir}, tt.args...)
		if r := kdsctl(t, args...); r.code != tt.code {
			t.Errorf("verify %v: exit %d, want %d", tt.args, r.code, tt.code)
		}
	}
	// RECORD_LOG_DIR is the default directory; a missing one is an error, not a pass.
	t.Setenv("RECORD_LOG_DIR", filepath.Join(dir, "missing"))
	if r := kdsctl(t, "--stream", name, "verify"); r.code != 1 || !strings.Contains(r.stderr, "missing") {
		t.Errorf("verify without record logs: exit %d, want 1", r.code)
	}
}

func TestAnalyze(t *testing.T) {
	rec := func(shard, seq, key string, n int) streamRecord {
		r := streamRecord{shard: shard}
		r.SequenceNumber, r.PartitionKey = seq, key
		r.Data, _ = json.Marshal(payload{Run: "r", Key: key, N: n})
		return r
	}
	dl := func(r streamRecord, epoch, at int64) recordlog.Line {
		return recordlog.Line{Shard: r.shard, Seq: r.SequenceNumber, Epoch: epoch, T: at, Data: string(r.Data)}
	}
	a0, a1, a2 := rec("s1", "1", "a", 0), rec("s1", "2", "a", 1), rec("s1", "3", "a", 2)
	// After a split, a's n=2 is in the child shard: processing it before n=1 is disorder.
	c2 := rec("s2", "9", "a", 2)
	tests := []struct {
		name   string
		stream []streamRecord
		logs   []recordlog.Line
		want   runReport
	}{
		{"all once", []streamRecord{a0, a1, a2}, []recordlog.Line{dl(a0, 1, 1), dl(a1, 1, 2), dl(a2, 1, 3)},
			runReport{Run: "r", Produced: 3, Processed: 3}},
		{"replay after lease moved is not disorder", []streamRecord{a0, a1, a2},
			[]recordlog.Line{dl(a0, 1, 1), dl(a1, 1, 2), dl(a2, 1, 3), dl(a1, 2, 4), dl(a2, 2, 5)},
			runReport{Run: "r", Produced: 3, Processed: 3, Duplicates: 2, DupOlderEpoch: 2}},
		{"lost", []streamRecord{a0, a1, a2}, []recordlog.Line{dl(a0, 1, 1), dl(a2, 1, 3)},
			runReport{Run: "r", Produced: 3, Processed: 2, Lost: 1}},
		{"child before parent", []streamRecord{a0, a1, c2}, []recordlog.Line{dl(a0, 1, 1), dl(c2, 1, 2), dl(a1, 1, 3)},
			runReport{Run: "r", Produced: 3, Processed: 3, OutOfOrder: 1}},
		{"ties keep log order", []streamRecord{a0, a1}, []recordlog.Line{dl(a0, 1, 5), dl(a1, 1, 5)},
			runReport{Run: "r", Produced: 2, Processed: 2}},
		{"stale owner", []streamRecord{a0}, []recordlog.Line{dl(a0, 3, 1), dl(a0, 2, 2)},
			runReport{Run: "r", Produced: 1, Processed: 1, Duplicates: 1, DupStaleEpoch: 1}},
		{"producer wrote twice", []streamRecord{a0, rec("s1", "5", "a", 0)}, []recordlog.Line{dl(a0, 1, 1)},
			runReport{Run: "r", Produced: 2, Processed: 1, Lost: 1, StreamDuplicates: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.logs {
				tt.logs[i].Order = i
			}
			got := analyze(tt.stream, tt.logs, "", 10)
			if len(got.Runs) != 1 || got.Runs[0] != tt.want {
				t.Errorf("got %+v\nwant %+v", got.Runs, tt.want)
			}
		})
	}
}
