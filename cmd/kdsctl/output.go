package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// emit writes v as JSON with -o json, and calls human otherwise.
func (e *env) emit(v any, human func(w io.Writer)) error {
	if e.json() {
		return writeJSON(e.stdout, v)
	}
	human(e.stdout)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// table prints aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(strAny(header)...)
	}
	return t
}

func strAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

// flush writes the table; the writer is a terminal or buffer, so its error is not actionable
// beyond what the next write reports.
func (t *table) flush() { _ = t.tw.Flush() }

// banner prints a message that must not be missed.
func banner(w io.Writer, lines ...string) {
	bar := strings.Repeat("!", 78)
	fmt.Fprintln(w, bar)
	for _, l := range lines {
		fmt.Fprintln(w, "!! "+l)
	}
	fmt.Fprintln(w, bar)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeJSONLine writes v as one line of compact JSON.
func writeJSONLine(w io.Writer, v any) error {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
