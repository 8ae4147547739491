package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
)

// verifyReport is verify's result (and its JSON output).
type verifyReport struct {
	Stream     string `json:"stream"`
	RecordsDir string `json:"records_dir"`
	// StreamRecords counts every record read from the stream; Foreign those that are not
	// produce's payloads (and are ignored).
	StreamRecords int `json:"stream_records"`
	Foreign       int `json:"foreign"`
	// LogLines counts the record log lines, BadLines those that did not parse, and Unknown
	// the processed records that are not in the stream (an older stream of the same name).
	LogLines  int         `json:"log_lines"`
	BadLines  int         `json:"bad_lines"`
	Unknown   int         `json:"unknown"`
	Runs      []runReport `json:"runs"`
	WorstKeys []keyReport `json:"worst_keys"`
	OK        bool        `json:"ok"`
}

type runReport struct {
	Run string `json:"run"`
	// Produced counts the run's records in the stream, Processed those processed at least
	// once, Lost those never processed.
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

type keyReport struct {
	Run        string `json:"run"`
	Key        string `json:"key"`
	Lost       int    `json:"lost"`
	Duplicates int    `json:"duplicates"`
	OutOfOrder int    `json:"out_of_order"`
}

func (k keyReport) problems() int { return k.Lost + k.Duplicates + k.OutOfOrder }

// produced is a record of a run as found in the stream.
type produced struct {
	payload
	deliveries []delivery
}

// analyze matches the deliveries to the stream's records by shard and sequence number
// (the producer may have written a payload twice; those are distinct records) and
// reports per run. With only set, other runs are left out.
func analyze(stream []streamRecord, logs []delivery, only string, worst int) verifyReport {
	r := verifyReport{StreamRecords: len(stream), LogLines: len(logs), Runs: []runReport{}, WorstKeys: []keyReport{}}
	bySeq := map[string]*produced{}
	byRun := map[string][]*produced{}
	for _, s := range stream {
		var p payload
		if json.Unmarshal(s.Data, &p) != nil || p.Run == "" || p.Key == "" {
			r.Foreign++
			continue
		}
		if only != "" && p.Run != only {
			continue
		}
		rec := &produced{payload: p}
		bySeq[s.shard+"/"+s.SequenceNumber] = rec
		byRun[p.Run] = append(byRun[p.Run], rec)
	}
	for _, d := range logs {
		if rec, ok := bySeq[d.Shard+"/"+d.Sequence]; ok {
			rec.deliveries = append(rec.deliveries, d)
			continue
		}
		var p payload
		if json.Unmarshal([]byte(d.Data), &p) == nil && (only == "" || p.Run == only) {
			r.Unknown++
		}
	}
	var keys []keyReport
	for run, recs := range byRun {
		rr, kr := analyzeRun(run, recs)
		r.Runs = append(r.Runs, rr)
		keys = append(keys, kr...)
	}
	sort.Slice(r.Runs, func(i, j int) bool { return r.Runs[i].Run < r.Runs[j].Run })
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.problems() != b.problems() {
			return a.problems() > b.problems()
		}
		return a.Run+"\x00"+a.Key < b.Run+"\x00"+b.Key
	})
	r.WorstKeys = append(r.WorstKeys, keys[:min(len(keys), max(worst, 0))]...)
	return r
}

// analyzeRun reports one run, and every key of it that had a problem.
func analyzeRun(run string, recs []*produced) (runReport, []keyReport) {
	rr := runReport{Run: run, Produced: len(recs)}
	// Only keys with a problem get a report.
	perKey := map[string]*keyReport{}
	keyOf := func(k string) *keyReport {
		if perKey[k] == nil {
			perKey[k] = &keyReport{Run: run, Key: k}
		}
		return perKey[k]
	}
	seen := map[string]map[int]bool{}
	firsts := map[string][]firstDelivery{}
	for _, rec := range recs {
		if seen[rec.Key] == nil {
			seen[rec.Key] = map[int]bool{}
		}
		if seen[rec.Key][rec.N] {
			rr.StreamDuplicates++
		}
		seen[rec.Key][rec.N] = true
		if len(rec.deliveries) == 0 {
			rr.Lost++
			keyOf(rec.Key).Lost++
			continue
		}
		rr.Processed++
		ds := rec.deliveries
		sort.Slice(ds, func(i, j int) bool { return before(ds[i], ds[j]) })
		for i := 1; i < len(ds); i++ {
			rr.Duplicates++
			keyOf(rec.Key).Duplicates++
			switch prev, cur := ds[i-1].Epoch, ds[i].Epoch; {
			case prev < cur:
				rr.DupOlderEpoch++
			case prev == cur:
				rr.DupSameEpoch++
			default:
				rr.DupStaleEpoch++
			}
		}
		firsts[rec.Key] = append(firsts[rec.Key], firstDelivery{n: rec.N, d: ds[0]})
	}
	for key, fs := range firsts {
		if ooo := outOfOrder(fs); ooo > 0 {
			rr.OutOfOrder += ooo
			keyOf(key).OutOfOrder += ooo
		}
	}
	keys := make([]keyReport, 0, len(perKey))
	for _, kr := range perKey {
		keys = append(keys, *kr)
	}
	return rr, keys
}

type firstDelivery struct {
	n int
	d delivery
}

// outOfOrder counts the records of one key that were first processed after a record with
// a higher n. Replays (later deliveries) do not count: going back to the checkpoint after
// a lease moved is how at-least-once delivery works.
func outOfOrder(fs []firstDelivery) int {
	sort.Slice(fs, func(i, j int) bool { return before(fs[i].d, fs[j].d) })
	ooo, maxN := 0, -1
	for _, f := range fs {
		if f.n < maxN {
			ooo++
		}
		maxN = max(maxN, f.n)
	}
	return ooo
}

// before orders deliveries by processing time, then by their place in the logs.
func before(a, b delivery) bool {
	if a.At != b.At {
		return a.At < b.At
	}
	return a.order < b.order
}

// failures lists why the verification fails: loss, disorder, or more duplicates than
// maxDup (when maxDup >= 0).
func (r verifyReport) failures(maxDup int) []string {
	var f []string
	for _, rr := range r.Runs {
		if rr.Lost > 0 {
			f = append(f, fmt.Sprintf("run %s: %d lost", rr.Run, rr.Lost))
		}
		if rr.OutOfOrder > 0 {
			f = append(f, fmt.Sprintf("run %s: %d out of order", rr.Run, rr.OutOfOrder))
		}
		if maxDup >= 0 && rr.Duplicates > maxDup {
			f = append(f, fmt.Sprintf("run %s: %d duplicates (more than %d)", rr.Run, rr.Duplicates, maxDup))
		}
	}
	return f
}

func (r verifyReport) print(w io.Writer) {
	fmt.Fprintf(w, "stream %s: %d records (%d not from produce); record logs %s: %d lines (%d unreadable, %d not in the stream)\n\n",
		r.Stream, r.StreamRecords, r.Foreign, r.RecordsDir, r.LogLines, r.BadLines, r.Unknown)
	t := newTable(w, "RUN", "PRODUCED", "PROCESSED", "LOST", "DUPLICATES", "(OLDER EPOCH", "SAME EPOCH", "STALE EPOCH)", "OUT OF ORDER")
	for _, rr := range r.Runs {
		t.row(rr.Run, rr.Produced, rr.Processed, rr.Lost, rr.Duplicates, rr.DupOlderEpoch, rr.DupSameEpoch, rr.DupStaleEpoch, rr.OutOfOrder)
	}
	t.flush()
	if len(r.Runs) == 0 {
		fmt.Fprintln(w, "(no records written by produce in the stream)")
	}
	for _, rr := range r.Runs {
		if rr.StreamDuplicates > 0 {
			fmt.Fprintf(w, "note: run %s: the producer wrote %d records twice (counted as separate records)\n", rr.Run, rr.StreamDuplicates)
		}
	}
	if len(r.WorstKeys) > 0 {
		fmt.Fprintln(w, "\nworst keys:")
		t = newTable(w, "RUN", "KEY", "LOST", "DUPLICATES", "OUT OF ORDER")
		for _, k := range r.WorstKeys {
			t.row(k.Run, k.Key, k.Lost, k.Duplicates, k.OutOfOrder)
		}
		t.flush()
	}
	if r.OK {
		fmt.Fprintln(w, "\nPASS")
	} else {
		fmt.Fprintln(w, "\nFAIL")
	}
}
