package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/kds-lease-manager/kds-lease-manager/internal/delivery"
	"github.com/kds-lease-manager/kds-lease-manager/internal/recordlog"
)

// verifyReport is verify's result (and its JSON output).
type verifyReport struct {
	Stream     string `json:"stream"`
	RecordsDir string `json:"records_dir"`
	// StreamRecords counts every record read from the stream; Foreign those that are not
	// produce's payloads (and are ignored).
	StreamRecords int `json:"stream_records"`
	Foreign       int `json:"foreign"`
	// LogLines counts the record log lines, BadLines those that are not records (a line
	// cut off by a killed worker among them), and Unknown the processed records that are
	// not in the stream (an older stream of the same name).
	LogLines  int         `json:"log_lines"`
	BadLines  int         `json:"bad_lines"`
	Unknown   int         `json:"unknown"`
	Runs      []runReport `json:"runs"`
	WorstKeys []keyReport `json:"worst_keys"`
	OK        bool        `json:"ok"`
}

// runReport and keyReport are the checker's, JSON names and all.
type (
	runReport = delivery.Run
	keyReport = delivery.Key
)

// analyze checks the deliveries against the stream's records that carry produce's
// payload (by shard and sequence number: a payload the producer wrote twice is two
// records) and reports per run. With only set, other runs are left out.
func analyze(stream []streamRecord, logs []recordlog.Line, only string, worst int) verifyReport {
	r := verifyReport{StreamRecords: len(stream), LogLines: len(logs), Runs: []runReport{}, WorstKeys: []keyReport{}}
	var recs []delivery.Record
	for _, s := range stream {
		// A KPL aggregate carries several records, each delivered on its own.
		got := delivery.FromStreamRecords(s.shard, s.Record)
		if len(got) == 0 {
			r.Foreign++
			continue
		}
		for _, rec := range got {
			if only == "" || rec.Run == only {
				recs = append(recs, rec)
			}
		}
	}
	c := delivery.Check(recs, logs)
	for _, d := range c.Unknown {
		var p payload
		if json.Unmarshal([]byte(d.Data), &p) == nil && (only == "" || p.Run == only) {
			r.Unknown++
		}
	}
	r.Runs = append(r.Runs, c.Runs...)
	r.WorstKeys = append(r.WorstKeys, c.Keys[:min(len(c.Keys), max(worst, 0))]...)
	return r
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
