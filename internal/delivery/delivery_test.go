package delivery

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
	"github.com/kds-lease-manager/kds-lease-manager/kpl"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

func rec(shard, seq, key string, n int) Record {
	return Record{Shard: shard, Seq: seq, Run: "r", Key: key, N: n}
}

// at is a delivery of r by worker under epoch at time t.
func at(r Record, worker string, epoch, t int64) recordlog.Line {
	return recordlog.Line{Worker: worker, Shard: r.Shard, Seq: r.Seq, Epoch: epoch, T: t}
}

func ordered(lines ...recordlog.Line) []recordlog.Line {
	for i := range lines {
		lines[i].Order = i
	}
	return lines
}

func TestCheckRuns(t *testing.T) {
	a0, a1, a2 := rec("s1", "1", "a", 0), rec("s1", "2", "a", 1), rec("s1", "3", "a", 2)
	c2 := rec("s2", "9", "a", 2) // after a split, a's n=2 is in the child shard
	tests := []struct {
		name    string
		records []Record
		lines   []recordlog.Line
		want    Run
		keys    []Key
	}{
		{"all once", []Record{a0, a1, a2}, ordered(at(a0, "w", 1, 1), at(a1, "w", 1, 2), at(a2, "w", 1, 3)),
			Run{Run: "r", Produced: 3, Processed: 3}, nil},
		{"replay after the lease moved is a duplicate, not disorder", []Record{a0, a1, a2},
			ordered(at(a0, "w", 1, 1), at(a1, "w", 1, 2), at(a2, "w", 1, 3), at(a1, "v", 2, 4), at(a2, "v", 2, 5)),
			Run{Run: "r", Produced: 3, Processed: 3, Duplicates: 2, DupOlderEpoch: 2}, []Key{{Run: "r", Key: "a", Duplicates: 2}}},
		{"same epoch twice", []Record{a0}, ordered(at(a0, "w", 1, 1), at(a0, "w", 1, 2)),
			Run{Run: "r", Produced: 1, Processed: 1, Duplicates: 1, DupSameEpoch: 1}, []Key{{Run: "r", Key: "a", Duplicates: 1}}},
		{"stale owner", []Record{a0}, ordered(at(a0, "v", 3, 1), at(a0, "w", 2, 2)),
			Run{Run: "r", Produced: 1, Processed: 1, Duplicates: 1, DupStaleEpoch: 1}, []Key{{Run: "r", Key: "a", Duplicates: 1}}},
		{"lost", []Record{a0, a1, a2}, ordered(at(a0, "w", 1, 1), at(a2, "w", 1, 3)),
			Run{Run: "r", Produced: 3, Processed: 2, Lost: 1}, []Key{{Run: "r", Key: "a", Lost: 1}}},
		{"child before parent", []Record{a0, a1, c2}, ordered(at(a0, "w", 1, 1), at(c2, "w", 1, 2), at(a1, "w", 1, 3)),
			Run{Run: "r", Produced: 3, Processed: 3, OutOfOrder: 1}, []Key{{Run: "r", Key: "a", OutOfOrder: 1}}},
		{"ties keep log order", []Record{a0, a1}, ordered(at(a0, "w", 1, 5), at(a1, "w", 1, 5)),
			Run{Run: "r", Produced: 2, Processed: 2}, nil},
		{"lines out of time order", []Record{a0, a1}, ordered(at(a1, "w", 1, 6), at(a0, "w", 1, 5)),
			Run{Run: "r", Produced: 2, Processed: 2}, nil},
		{"producer wrote twice", []Record{a0, rec("s1", "5", "a", 0)}, ordered(at(a0, "w", 1, 1)),
			Run{Run: "r", Produced: 2, Processed: 1, Lost: 1, StreamDuplicates: 1}, []Key{{Run: "r", Key: "a", Lost: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Check(tt.records, tt.lines)
			if len(got.Runs) != 1 || got.Runs[0] != tt.want {
				t.Errorf("runs %+v\nwant %+v", got.Runs, tt.want)
			}
			if len(got.Keys) != len(tt.keys) || (len(tt.keys) > 0 && !reflect.DeepEqual(got.Keys, tt.keys)) {
				t.Errorf("keys %+v, want %+v", got.Keys, tt.keys)
			}
			if len(got.Lost) != tt.want.Lost || len(got.OutOfOrder) != tt.want.OutOfOrder {
				t.Errorf("lost %v, out of order %v", got.Lost, got.OutOfOrder)
			}
		})
	}
}

func TestCheckDetails(t *testing.T) {
	a0, a1 := rec("p", "1", "a", 0), rec("c", "7", "a", 1)
	b0 := Record{Shard: "p", Seq: "2", Run: "q", Key: "b", N: 0}
	e2e := Record{Shard: "p", Seq: "3", PK: "pk-1", Data: "pk-1:0"} // content known, no payload
	other := recordlog.Line{Worker: "w1", Shard: "x", Seq: "1", T: 1}
	lines := ordered(
		at(a1, "w2", 1, 0), at(a0, "w1", 1, 5), at(a0, "w3", 2, 9), // a's n=0 after n=1; then a replay
		recordlog.Line{Worker: "w1", Shard: "p", Seq: "3", PK: "pk-1", Data: "pk-1:0", T: 6},
		recordlog.Line{Worker: "w3", Shard: "p", Seq: "3", PK: "pk-1", Data: "changed", T: 10},
		other, other,
	)
	c := Check([]Record{a0, a1, b0, e2e}, lines)
	if len(c.Runs) != 3 || c.Runs[0].Run != "" || c.Runs[1].Run != "q" || c.Runs[2].Run != "r" {
		t.Fatalf("runs %+v, want \"\", q, r", c.Runs)
	}
	if !reflect.DeepEqual(c.Lost, []Record{b0}) {
		t.Errorf("lost %+v", c.Lost)
	}
	wantDup := map[Ref]int{{"p", "1", 0}: 2, {"p", "3", 0}: 2, {"x", "1", 0}: 2}
	if !reflect.DeepEqual(c.Duplicated, wantDup) {
		t.Errorf("duplicated %v, want %v", c.Duplicated, wantDup)
	}
	if len(c.OutOfOrder) != 1 {
		t.Fatalf("out of order %+v", c.OutOfOrder)
	}
	if o := c.OutOfOrder[0]; o.Key != "a" || o.N != 0 || o.Line.Worker != "w1" || o.AfterN != 1 || o.After.Worker != "w2" || o.After.Shard != "c" {
		t.Errorf("disorder %+v", o)
	}
	if c.OrderedKeys != 1 { // b was lost; the e2e record has no key
		t.Errorf("%d keys checked for order, want 1", c.OrderedKeys)
	}
	if len(c.Mismatched) != 1 || c.Mismatched[0].Line.Data != "changed" {
		t.Errorf("mismatched %+v", c.Mismatched)
	}
	if len(c.Unknown) != 2 || c.Unknown[0].Shard != "x" || c.Unknown[1].Order != 6 {
		t.Errorf("unknown %+v", c.Unknown)
	}
	// Worst first, then by run and key.
	wantKeys := []Key{{Run: "r", Key: "a", Duplicates: 1, OutOfOrder: 1}, {Run: "", Key: "", Duplicates: 1}, {Run: "q", Key: "b", Lost: 1}}
	if !reflect.DeepEqual(c.Keys, wantKeys) {
		t.Errorf("keys %+v\nwant %+v", c.Keys, wantKeys)
	}
}

func TestCheckExclusive(t *testing.T) {
	l := func(worker, shard string, epoch, t int64) recordlog.Line {
		return recordlog.Line{Worker: worker, Shard: shard, Seq: "1", Epoch: epoch, T: t}
	}
	good := []recordlog.Line{l("w1", "a", 1, 0), l("w1", "a", 1, 100), l("w2", "a", 2, 300), l("w1", "b", 1, 150)}
	tests := []struct {
		name            string
		lines           []recordlog.Line
		shared, overlap int
	}{
		{"one worker at a time", good, 0, 0},
		{"old epoch still processing", append(good[:4:4], l("w1", "a", 1, 400)), 0, 1},
		{"two workers, one epoch", append(good[:4:4], l("w3", "a", 2, 500)), 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Check(nil, tt.lines)
			if len(c.SharedEpochs) != tt.shared || len(c.Overlaps) != tt.overlap || c.SpanShards != 2 || c.Spans != 3 {
				t.Fatalf("shared %+v, overlaps %+v, %d spans over %d shards", c.SharedEpochs, c.Overlaps, c.Spans, c.SpanShards)
			}
			if tt.overlap > 0 {
				o := c.Overlaps[0]
				if o.Older.Worker != "w1" || o.Older.Epoch != 1 || o.Older.Last != 400 || o.Newer.Epoch != 2 || o.Newer.First != 300 {
					t.Errorf("overlap %+v", o)
				}
			}
			if tt.shared > 0 && (c.SharedEpochs[0].Other != "w2" || c.SharedEpochs[0].Line.Worker != "w3") {
				t.Errorf("shared %+v", c.SharedEpochs[0])
			}
		})
	}
}

func TestFromStream(t *testing.T) {
	tests := []struct {
		data string
		ok   bool
		want Record
	}{
		{`{"run":"r1","key":"pk-0001","n":7}`, true, Record{Shard: "s", Seq: "9", Run: "r1", Key: "pk-0001", N: 7}},
		{`{"run":"r1","key":"pk-0001"}`, true, Record{Shard: "s", Seq: "9", Run: "r1", Key: "pk-0001"}},
		{`{"key":"pk-0001","n":7}`, false, Record{}},
		{`{"run":"r1","n":7}`, false, Record{}},
		{`not json`, false, Record{}},
		{``, false, Record{}},
	}
	for _, tt := range tests {
		got, ok := FromStream("s", stream.Record{SequenceNumber: "9", PartitionKey: "pk", Data: []byte(tt.data)})
		if ok != tt.ok || got != tt.want {
			t.Errorf("FromStream(%q) = %+v, %v; want %+v, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

// The user records of a KPL aggregate are records of their own: each must be delivered,
// matched by its sub-sequence number.
func TestCheckKPLUserRecords(t *testing.T) {
	users := make([]kpl.UserRecord, 3)
	for i := range users {
		users[i] = kpl.UserRecord{PartitionKey: "k", Data: fmt.Appendf(nil, `{"run":"r","key":"k","n":%d}`, i)}
	}
	kinesisRec := stream.Record{SequenceNumber: "7", Data: kpl.Aggregate(users)}
	recs := FromStreamRecords("s", kinesisRec)
	if len(recs) != 3 || recs[2].Sub != 2 || recs[2].N != 2 || recs[2].Seq != "7" {
		t.Fatalf("FromStreamRecords = %+v", recs)
	}
	if got := FromStreamRecords("s", stream.Record{SequenceNumber: "8", Data: []byte("not a payload")}); len(got) != 0 {
		t.Fatalf("foreign record gave %+v", got)
	}
	line := func(sub int64, epoch, t int64) recordlog.Line {
		return recordlog.Line{Worker: "w", Shard: "s", Seq: "7", Sub: sub, Epoch: epoch, T: t}
	}
	c := Check(recs, ordered(line(0, 1, 1), line(1, 1, 2), line(1, 2, 3)))
	if c.Runs[0].Lost != 1 || c.Runs[0].Processed != 2 || c.Runs[0].Duplicates != 1 || c.Runs[0].DupOlderEpoch != 1 {
		t.Errorf("run %+v, want 2 processed, user record 2 lost, user record 1 twice", c.Runs[0])
	}
	if !reflect.DeepEqual(c.Duplicated, map[Ref]int{{"s", "7", 1}: 2}) || c.Lost[0].Sub != 2 {
		t.Errorf("duplicated %v, lost %+v", c.Duplicated, c.Lost)
	}
}
