// Package delivery proves delivery from the record logs: it matches what workers
// processed (internal/recordlog) with what was written to the stream, and reports lost
// records, duplicates (and the epochs they came under), per-key order across parent and
// child shards, records processed with other content than written, and workers that
// processed a shard under an epoch after a newer epoch of it had begun.
//
// `kdsctl verify` and the chaos harness (internal/harness) report from the one Check; the
// harness adds what needs more than the logs (the lease table, the events it caused).
package delivery

import (
	"cmp"
	"encoding/json"
	"slices"

	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
	"github.com/kds-lease-manager/kds-lease-manager/kpl"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Payload is the data `kdsctl produce` writes into every record. N counts from 0 per key
// in the order produced, so that loss, duplicates and order can be told per key.
type Payload struct {
	Run string `json:"run"`
	Key string `json:"key"`
	N   int    `json:"n"`
}

// ParsePayload reads a record's data as produce's payload; ok is false for other data
// (not JSON, or without a run or key).
func ParsePayload(data []byte) (p Payload, ok bool) {
	if json.Unmarshal(data, &p) != nil || p.Run == "" || p.Key == "" {
		return Payload{}, false
	}
	return p, true
}

// Record is a record written to the stream: a Kinesis record, or one user record of a
// KPL aggregate (Sub its sub-sequence number).
type Record struct {
	Shard, Seq string
	Sub        int64
	// Run, Key and N are the producer's payload. Records without a Key are checked for
	// loss and duplicates, not for order.
	Run, Key string
	N        int
	// PK and Data, when PK is set, are the content written: every delivery must match.
	PK, Data string
}

// FromStream returns the record of shard read from the stream if it carries produce's
// payload (ok false otherwise). Its content is not set, so it is not compared.
func FromStream(shard string, r stream.Record) (Record, bool) {
	p, ok := ParsePayload(r.Data)
	if !ok {
		return Record{}, false
	}
	return Record{Shard: shard, Seq: r.SequenceNumber, Sub: r.SubSequenceNumber, Run: p.Run, Key: p.Key, N: p.N}, true
}

// FromStreamRecords returns the records of shard carried by one Kinesis record read from
// the stream, as a worker delivers them: the user records of a KPL aggregate (package
// kpl; a record that only looks aggregated is one record), each if it carries produce's
// payload.
func FromStreamRecords(shard string, r stream.Record) []Record {
	users, err := kpl.Deaggregate(r)
	if err != nil {
		users = []stream.Record{r}
	}
	var out []Record
	for _, u := range users {
		if rec, ok := FromStream(shard, u); ok {
			out = append(out, rec)
		}
	}
	return out
}

// Ref names a record by shard, sequence number and sub-sequence number.
type Ref struct {
	Shard, Seq string
	Sub        int64
}

func (r Record) ref() Ref { return Ref{r.Shard, r.Seq, r.Sub} }

// Run counts one run's records (and is `kdsctl verify -o json`'s "runs" entry).
type Run struct {
	Run string `json:"run"`
	// Produced counts the run's records, Processed those processed at least once, Lost
	// those never processed.
	Produced  int `json:"produced"`
	Processed int `json:"processed"`
	Lost      int `json:"lost"`
	// Duplicates counts extra deliveries, each classified against the delivery before it:
	// DupOlderEpoch when that one was under an older lease epoch (the lease changed hands and
	// the new owner replayed from the checkpoint: expected), DupSameEpoch when under the same
	// epoch (one lease delivered twice), DupStaleEpoch when under a newer epoch (an owner that
	// had lost the lease still processed).
	Duplicates    int `json:"duplicates"`
	DupOlderEpoch int `json:"dup_older_epoch"`
	DupSameEpoch  int `json:"dup_same_epoch"`
	DupStaleEpoch int `json:"dup_stale_epoch"`
	// OutOfOrder counts records first processed after a later record (higher n) of the
	// same key had been processed.
	OutOfOrder int `json:"out_of_order"`
	// StreamDuplicates counts records the producer wrote twice (same key and n).
	StreamDuplicates int `json:"stream_duplicates"`
}

// Key counts the problems of one key of a run (`kdsctl verify`'s "worst_keys" entry).
type Key struct {
	Run        string `json:"run"`
	Key        string `json:"key"`
	Lost       int    `json:"lost"`
	Duplicates int    `json:"duplicates"`
	OutOfOrder int    `json:"out_of_order"`
}

func (k Key) problems() int { return k.Lost + k.Duplicates + k.OutOfOrder }

// Disorder is a record first processed after a record of its key with a higher n.
type Disorder struct {
	Run, Key string
	N        int
	Line     recordlog.Line // the record's first delivery
	AfterN   int            // the highest n of the key processed before it
	After    recordlog.Line // that record's first delivery
}

// Mismatch is a record processed with other content than written.
type Mismatch struct {
	Record Record
	Line   recordlog.Line
}

// Span is the time one worker processed one shard under one epoch.
type Span struct {
	Shard, Worker string
	Epoch         int64
	First, Last   int64 // Unix nanoseconds
}

// Overlap is an owner that still processed a shard after a newer epoch of it had begun:
// Older.Last >= Newer.First.
type Overlap struct{ Older, Newer Span }

// SharedEpoch is a line of a shard under an epoch another worker had processed it under.
type SharedEpoch struct {
	Line  recordlog.Line
	Other string // the worker that processed the shard under the epoch first
}

// Report is what the record logs prove about the records written.
type Report struct {
	// Runs counts per run, by run name.
	Runs []Run
	// Keys are the keys with a problem, most problems first.
	Keys []Key
	// Lost are the records never processed, by run, then in the order given.
	Lost []Record
	// Duplicated counts the deliveries of every record processed more than once, written
	// records or not.
	Duplicated map[Ref]int
	// OutOfOrder lists the disorders per key; OrderedKeys counts the keys checked.
	OutOfOrder  []Disorder
	OrderedKeys int
	// Mismatched are the records (with content) processed with other content.
	Mismatched []Mismatch
	// Unknown are the lines of no record given (another run, or an older stream).
	Unknown []recordlog.Line
	// Overlaps and SharedEpochs break "one worker per shard at a time": Spans counts the
	// (shard, worker, epoch) intervals checked, over SpanShards shards.
	Overlaps     []Overlap
	SharedEpochs []SharedEpoch
	Spans        int
	SpanShards   int
}

// Check matches the record logs' lines with the records written, by shard, sequence
// number and sub-sequence number (a payload the producer wrote twice is two records). Processing order is the
// lines' Before: time, then place in the logs.
func Check(records []Record, lines []recordlog.Line) *Report {
	r := &Report{Runs: []Run{}, Keys: []Key{}, Duplicated: map[Ref]int{}}
	byRef := make(map[Ref]int, len(records)) // -> index in records
	for i, rec := range records {
		byRef[rec.ref()] = i
	}
	deliveries := make([][]recordlog.Line, len(records))
	times := map[Ref]int{}
	for _, l := range lines {
		ref := Ref{l.Shard, l.Seq, l.Sub}
		times[ref]++
		if i, ok := byRef[ref]; ok {
			deliveries[i] = append(deliveries[i], l)
		} else {
			r.Unknown = append(r.Unknown, l)
		}
	}
	for ref, n := range times {
		if n > 1 {
			r.Duplicated[ref] = n
		}
	}
	byRun := map[string][]int{}
	for i, rec := range records {
		byRun[rec.Run] = append(byRun[rec.Run], i)
	}
	runs := make([]string, 0, len(byRun))
	for run := range byRun {
		runs = append(runs, run)
	}
	slices.Sort(runs)
	for _, run := range runs {
		r.checkRun(run, records, byRun[run], deliveries)
	}
	slices.SortFunc(r.Keys, func(a, b Key) int {
		return cmp.Or(cmp.Compare(b.problems(), a.problems()), cmp.Compare(a.Run, b.Run), cmp.Compare(a.Key, b.Key))
	})
	slices.SortFunc(r.OutOfOrder, func(a, b Disorder) int {
		return cmp.Or(cmp.Compare(a.Run, b.Run), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Line.Order, b.Line.Order))
	})
	r.checkExclusive(lines)
	return r
}

func before(a, b recordlog.Line) int {
	switch {
	case a.Before(b):
		return -1
	case b.Before(a):
		return 1
	}
	return 0
}

type first struct {
	n    int
	line recordlog.Line
}

// checkRun counts one run; idx are its records, in the order given.
func (r *Report) checkRun(run string, records []Record, idx []int, deliveries [][]recordlog.Line) {
	rr := Run{Run: run, Produced: len(idx)}
	perKey := map[string]*Key{} // only keys with a problem
	keyOf := func(k string) *Key {
		if perKey[k] == nil {
			perKey[k] = &Key{Run: run, Key: k}
		}
		return perKey[k]
	}
	written := map[string]map[int]bool{}
	firsts := map[string][]first{}
	for _, i := range idx {
		rec, ds := records[i], deliveries[i]
		if written[rec.Key] == nil {
			written[rec.Key] = map[int]bool{}
		}
		if written[rec.Key][rec.N] {
			rr.StreamDuplicates++
		}
		written[rec.Key][rec.N] = true
		if len(ds) == 0 {
			rr.Lost++
			keyOf(rec.Key).Lost++
			r.Lost = append(r.Lost, rec)
			continue
		}
		rr.Processed++
		slices.SortStableFunc(ds, before)
		for j := 1; j < len(ds); j++ {
			rr.Duplicates++
			keyOf(rec.Key).Duplicates++
			switch prev, cur := ds[j-1].Epoch, ds[j].Epoch; {
			case prev < cur:
				rr.DupOlderEpoch++
			case prev == cur:
				rr.DupSameEpoch++
			default:
				rr.DupStaleEpoch++
			}
		}
		if rec.PK != "" {
			for _, d := range ds {
				if d.PK != rec.PK || d.Data != rec.Data {
					r.Mismatched = append(r.Mismatched, Mismatch{Record: rec, Line: d})
					break
				}
			}
		}
		if rec.Key != "" {
			firsts[rec.Key] = append(firsts[rec.Key], first{n: rec.N, line: ds[0]})
		}
	}
	r.OrderedKeys += len(firsts)
	for key, fs := range firsts {
		// Only first deliveries count: going back to the checkpoint after a lease moved
		// (a replay) is how at-least-once delivery works.
		slices.SortStableFunc(fs, func(a, b first) int { return before(a.line, b.line) })
		maxN, at := -1, recordlog.Line{}
		for _, f := range fs {
			if f.n < maxN {
				rr.OutOfOrder++
				keyOf(key).OutOfOrder++
				r.OutOfOrder = append(r.OutOfOrder, Disorder{Run: run, Key: key, N: f.n, Line: f.line, AfterN: maxN, After: at})
			}
			if f.n > maxN {
				maxN, at = f.n, f.line
			}
		}
	}
	r.Runs = append(r.Runs, rr)
	for _, k := range perKey {
		r.Keys = append(r.Keys, *k)
	}
}

// checkExclusive finds, per shard, epochs processed by more than one worker, and older
// epochs processed after a newer one began.
func (r *Report) checkExclusive(lines []recordlog.Line) {
	spans := map[string]map[int64]*Span{}
	for _, l := range lines {
		byEpoch := spans[l.Shard]
		if byEpoch == nil {
			byEpoch = map[int64]*Span{}
			spans[l.Shard] = byEpoch
		}
		sp := byEpoch[l.Epoch]
		switch {
		case sp == nil:
			byEpoch[l.Epoch] = &Span{Shard: l.Shard, Worker: l.Worker, Epoch: l.Epoch, First: l.T, Last: l.T}
		case sp.Worker != l.Worker:
			r.SharedEpochs = append(r.SharedEpochs, SharedEpoch{Line: l, Other: sp.Worker})
		default:
			sp.First, sp.Last = min(sp.First, l.T), max(sp.Last, l.T)
		}
	}
	shards := make([]string, 0, len(spans))
	for s := range spans {
		shards = append(shards, s)
	}
	slices.Sort(shards)
	r.SpanShards = len(shards)
	for _, shard := range shards {
		list := make([]*Span, 0, len(spans[shard]))
		for _, sp := range spans[shard] {
			list = append(list, sp)
		}
		slices.SortFunc(list, func(a, b *Span) int { return cmp.Compare(a.Epoch, b.Epoch) })
		r.Spans += len(list)
		var latest *Span // the older span that processed last
		for _, sp := range list {
			if latest != nil && latest.Last >= sp.First {
				r.Overlaps = append(r.Overlaps, Overlap{Older: *latest, Newer: *sp})
			}
			if latest == nil || sp.Last > latest.Last {
				latest = sp
			}
		}
	}
}
