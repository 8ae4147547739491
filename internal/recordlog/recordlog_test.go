package recordlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// writeLog writes one batch as worker w1 into dir and returns the file.
func writeLog(t *testing.T, dir, shard string, epoch int64, recs []stream.Record) []byte {
	t.Helper()
	w, err := Open(dir, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(shard, epoch, recs); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "w1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The on-disk format is what existing logs and tests hold: field names and order fixed.
func TestLineFormat(t *testing.T) {
	dir := t.TempDir()
	recs := []stream.Record{{SequenceNumber: "49590338271490256608559692538361571095921575989136588898", PartitionKey: "pk-1", Data: []byte(`{"run":"r","key":"k","n":0}`)}}
	data := writeLog(t, dir, "shardId-000000000003", 7, recs)
	logs, err := ReadDir(dir)
	if err != nil || len(logs.Lines) != 1 {
		t.Fatalf("read back: %v, %+v", err, logs)
	}
	want := `{"worker":"w1","shard":"shardId-000000000003","epoch":7,"seq":"49590338271490256608559692538361571095921575989136588898","pk":"pk-1","data":"{\"run\":\"r\",\"key\":\"k\",\"n\":0}","t":` +
		strconv.FormatInt(logs.Lines[0].T, 10) + "}\n"
	if string(data) != want {
		t.Errorf("line\n got %s\nwant %s", data, want)
	}
}

// A KPL user record's line has its sub-sequence number after the sequence number.
func TestLineFormatUserRecord(t *testing.T) {
	dir := t.TempDir()
	recs := []stream.Record{{SequenceNumber: "5", SubSequenceNumber: 3, Aggregated: true, PartitionKey: "pk-1", Data: []byte("x")}}
	data := writeLog(t, dir, "s", 7, recs)
	logs, err := ReadDir(dir)
	if err != nil || len(logs.Lines) != 1 || logs.Lines[0].Sub != 3 {
		t.Fatalf("read back: %v, %+v", err, logs)
	}
	want := `{"worker":"w1","shard":"s","epoch":7,"seq":"5","sub":3,"pk":"pk-1","data":"x","t":` + strconv.FormatInt(logs.Lines[0].T, 10) + "}\n"
	if string(data) != want {
		t.Errorf("line\n got %s\nwant %s", data, want)
	}
}

// Records of any size and any bytes leave every record log line valid JSON.
func TestRecordLogStaysValidJSONForLargeAndBinaryRecords(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 1<<20)
	binary := []byte{0xff, 0xfe, 0x00, '"', '\\', '\n', 0x80, 0xc3, 0x28, 0x1b}
	recs := []stream.Record{
		{SequenceNumber: "1", PartitionKey: "big", Data: big},
		{SequenceNumber: "2", PartitionKey: "bin\x00\xff", Data: binary},
		{SequenceNumber: "3", PartitionKey: "empty", Data: nil},
	}
	data := writeLog(t, t.TempDir(), "shardId-000000000000", 1, recs)
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3", len(lines))
	}
	for i, l := range lines {
		var got Line
		if !json.Valid(l) || json.Unmarshal(l, &got) != nil {
			t.Fatalf("line %d is not valid JSON (%d bytes)", i+1, len(l))
		}
		if !utf8.ValidString(got.Data) || got.Seq != recs[i].SequenceNumber {
			t.Errorf("line %d: seq %q, data valid UTF-8 %v", i+1, got.Seq, utf8.ValidString(got.Data))
		}
	}
	var first Line
	_ = json.Unmarshal(lines[0], &first)
	if len(first.Data) != 1<<20 {
		t.Errorf("1 MiB record logged with %d bytes of data", len(first.Data))
	}
}

// Whatever is appended reads back the same, across workers, batches and restarts.
func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 1<<20) // longer than any read buffer
	binary := []byte{0xff, 0xfe, 0x00, '"', '\\', '\n', 0x80, 0xc3, 0x28, 0x1b, '<', '&'}
	batches := []struct {
		worker, shard string
		epoch         int64
		recs          []stream.Record
	}{
		{"w1", "s0", 1, []stream.Record{{SequenceNumber: "1", PartitionKey: "a", Data: []byte("one")}, {SequenceNumber: "2", PartitionKey: "b"}}},
		{"w0", "s1", 2, []stream.Record{{SequenceNumber: "10", PartitionKey: "big", Data: big}}},
		{"w1", "s0", 1, []stream.Record{{SequenceNumber: "3", PartitionKey: "bin\x00", Data: binary}}},
		{"w1", "s0", 4, []stream.Record{{SequenceNumber: "3", PartitionKey: "again", Data: []byte("replay")}}}, // reopened
	}
	dir := t.TempDir()
	writers := map[string]*Writer{}
	for i, b := range batches {
		if i == len(batches)-1 { // a restarted worker appends to its file
			if err := writers[b.worker].Close(); err != nil {
				t.Fatal(err)
			}
			writers[b.worker] = nil
		}
		if writers[b.worker] == nil {
			w, err := Open(filepath.Join(dir, "sub"), b.worker)
			if err != nil {
				t.Fatal(err)
			}
			writers[b.worker] = w
		}
		if err := writers[b.worker].Append(b.shard, b.epoch, b.recs); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range writers {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	logs, err := ReadDir(filepath.Join(dir, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if logs.Err() != nil || logs.Torn != 0 {
		t.Fatalf("bad %v, torn %d", logs.Err(), logs.Torn)
	}
	// Files in name order (w0 before w1), lines in file order.
	var want []Line
	for _, worker := range []string{"w0", "w1"} {
		for _, b := range batches {
			if b.worker != worker {
				continue
			}
			for _, r := range b.recs {
				want = append(want, Line{Worker: worker, Shard: b.shard, Epoch: b.epoch, Seq: r.SequenceNumber, PK: strings.ToValidUTF8(r.PartitionKey, "\uFFFD"), Data: string(r.Data)})
			}
		}
	}
	if len(logs.Lines) != len(want) {
		t.Fatalf("%d lines, want %d", len(logs.Lines), len(want))
	}
	for i, got := range logs.Lines {
		w := want[i]
		if got.Order != i || got.T == 0 {
			t.Errorf("line %d: order %d, t %d", i, got.Order, got.T)
		}
		if !utf8.ValidString(w.Data) {
			w.Data = strings.ToValidUTF8(w.Data, "\uFFFD") // JSON carries valid UTF-8 only
			if !utf8.ValidString(got.Data) {
				t.Errorf("line %d: data not valid UTF-8", i)
			}
			got.Data = w.Data
		}
		got.T, got.Order = 0, 0
		if got != w {
			t.Errorf("line %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
}

func TestReadMalformed(t *testing.T) {
	good := `{"worker":"w","shard":"s","epoch":1,"seq":"1","pk":"k","data":"d","t":5}`
	good2 := `{"worker":"w","shard":"s","epoch":1,"seq":"2","pk":"k","data":"d","t":6}`
	tests := []struct {
		name     string
		body     string
		lines    int
		torn     int
		badLines []int  // line numbers of the bad lines
		badText  string // in the first bad line's error
	}{
		{"empty file", "", 0, 0, nil, ""},
		{"all good", good + "\n" + good2 + "\n", 2, 0, nil, ""},
		{"torn last line is skipped", good + "\n" + `{"worker":"w","sha`, 1, 1, nil, ""},
		{"torn complete line is skipped too", good + "\n" + good2, 1, 1, nil, ""},
		{"only a torn line", `{"wor`, 0, 1, nil, ""},
		{"torn line then a restart's lines", good + "\n" + `{"worker":"w","sha` + good2 + "\n" + good2 + "\n", 2, 0, []int{2}, "invalid character"},
		{"not JSON", good + "\nhello\n" + good2 + "\n", 2, 0, []int{2}, `"hello"`},
		{"empty line", "\n" + good + "\n", 1, 0, []int{1}, "unexpected end of JSON input"},
		{"no shard", `{"worker":"w","epoch":1,"seq":"1"}` + "\n", 0, 0, []int{1}, "no shard or sequence number"},
		{"no seq", `{"worker":"w","shard":"s","epoch":1}` + "\n", 0, 0, []int{1}, "no shard or sequence number"},
		{"wrong type", `{"worker":"w","shard":"s","epoch":"one","seq":"1"}` + "\n" + good + "\n", 1, 0, []int{1}, "epoch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Logs
			if err := l.Read(strings.NewReader(tt.body), "w.jsonl"); err != nil {
				t.Fatal(err)
			}
			if len(l.Lines) != tt.lines || l.Torn != tt.torn || len(l.Bad) != len(tt.badLines) {
				t.Fatalf("%d lines, %d torn, bad %v; want %d, %d, %v", len(l.Lines), l.Torn, l.Bad, tt.lines, tt.torn, tt.badLines)
			}
			for i, b := range l.Bad {
				if b.File != "w.jsonl" || b.Line != tt.badLines[i] {
					t.Errorf("bad line %d: %s line %d, want line %d", i, b.File, b.Line, tt.badLines[i])
				}
			}
			err := l.Err()
			if (err != nil) != (len(tt.badLines) > 0) {
				t.Fatalf("Err() = %v", err)
			}
			if err != nil {
				msg := err.Error()
				if !strings.Contains(msg, "w.jsonl line ") || !strings.Contains(msg, tt.badText) {
					t.Errorf("error %q, want the file, line and %q", msg, tt.badText)
				}
				var le *LineError
				if !errors.As(err, &le) {
					t.Errorf("error %v is not a *LineError", err)
				}
			}
		})
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.jsonl", `{"shard":"s","seq":"2","t":1}`+"\n")
	write("a.jsonl", `{"shard":"s","seq":"1","t":1}`+"\nbad\n")
	write("c.jsonl", `{"shard":"s","seq":"3"`)
	write("notes.txt", "not a record log\n")
	l, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Lines) != 2 || l.Lines[0].Seq != "1" || l.Lines[1].Seq != "2" || l.Lines[1].Order != 1 || l.Torn != 1 || len(l.Bad) != 1 {
		t.Fatalf("%+v", l)
	}
	if l.Bad[0].File != filepath.Join(dir, "a.jsonl") || l.Bad[0].Line != 2 {
		t.Errorf("bad line at %s:%d", l.Bad[0].File, l.Bad[0].Line)
	}
	// Ties of T keep the order read.
	if !l.Lines[0].Before(l.Lines[1]) || l.Lines[1].Before(l.Lines[0]) {
		t.Errorf("Before does not break ties by order")
	}
	// A directory the workers have not created yet holds no lines.
	if l, err := ReadDir(filepath.Join(dir, "missing")); err != nil || len(l.Lines) != 0 {
		t.Errorf("missing dir: %v, %+v", err, l)
	}
}

func TestNoDirNoLog(t *testing.T) {
	w, err := Open("", "w1")
	if w != nil || err != nil {
		t.Fatalf("Open(\"\") = %v, %v", w, err)
	}
	if err := w.Append("s", 1, []stream.Record{{SequenceNumber: "1"}}); err != nil {
		t.Error(err)
	}
	if err := w.Close(); err != nil {
		t.Error(err)
	}
}

// A worker killed while writing leaves a last line without its newline. When it restarts
// with the same id, the torn line is cut off before appending, so the log stays one whole
// line per record (the torn batch was not checkpointed: it is delivered again).
func TestRestartAfterATornLineKeepsTheLogWhole(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  string
		want int // whole lines kept from the earlier run
	}{
		{"torn after whole lines", "{\"worker\":\"w1\",\"shard\":\"s0\",\"epoch\":1,\"seq\":\"1\",\"pk\":\"a\",\"data\":\"\",\"t\":1}\n{\"worker\":\"w1\",\"sh", 1},
		{"torn first line", "{\"worker\":\"w1\",\"sh", 0},
		{"torn line longer than a read", "{\"worker\":\"w1\",\"shard\":\"s0\",\"epoch\":1,\"seq\":\"1\",\"pk\":\"a\",\"data\":\"\",\"t\":1}\n{\"data\":\"" + strings.Repeat("x", 200<<10), 1},
		{"whole log", "{\"worker\":\"w1\",\"shard\":\"s0\",\"epoch\":1,\"seq\":\"1\",\"pk\":\"a\",\"data\":\"\",\"t\":1}\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "w1"+Ext), []byte(tc.old), 0o644); err != nil {
				t.Fatal(err)
			}
			w, err := Open(dir, "w1")
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Append("s0", 2, []stream.Record{{SequenceNumber: "2", PartitionKey: "b"}}); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			logs, err := ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := logs.Err(); err != nil || logs.Torn != 0 {
				t.Fatalf("log after restart: err %v, torn %d; want every line whole", err, logs.Torn)
			}
			if got := len(logs.Lines); got != tc.want+1 {
				t.Fatalf("%d lines, want %d kept and the new one", got, tc.want)
			}
			if last := logs.Lines[len(logs.Lines)-1]; last.Seq != "2" || last.Epoch != 2 {
				t.Fatalf("last line %+v, want the restarted run's record", last)
			}
		})
	}
}
