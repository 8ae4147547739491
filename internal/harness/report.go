package harness

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// Print writes the report as tables: settings, the event timeline, what was injected,
// the requests each worker made, and the invariants with their verdicts.
func (r *Report) Print(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "== chaos run %s ==\n", r.Run)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "stream\t%s (%d -> %d -> %d shards)\n", o.Stream, o.Shards, 2*o.Shards, o.Shards)
	fmt.Fprintf(tw, "application\t%s\n", o.App)
	fmt.Fprintf(tw, "chaos duration\t%s (records produced throughout, %g/s over %d keys)\n", o.Duration, o.Rate, o.Keys)
	fmt.Fprintf(tw, "LEASE_DURATION\t%s (shortened from the default 10s so the run fits)\n", o.LeaseDuration)
	fmt.Fprintf(tw, "elapsed\t%s\n", r.Elapsed.Round(time.Second))
	fmt.Fprintf(tw, "records\t%d produced, %d processed (record log lines)\n", r.Produced, r.Deliveries)
	fmt.Fprintf(tw, "lease table samples\t%d (every 200ms; %d failed reads)\n", r.Samples, r.SampleErrs)
	tw.Flush()

	fmt.Fprintln(w, "\n-- events --")
	tw = newTable(w, "AT\tUNTIL\tEVENT\tCLASS")
	for _, e := range r.Events {
		class := "planned"
		if e.Kind.Unplanned() {
			class = "unplanned"
		}
		until := ""
		if e.To.After(e.From) {
			until = fmt.Sprintf("%.1fs", e.To.Sub(r.Started).Seconds())
		}
		fmt.Fprintf(tw, "%.1fs\t%s\t%s\t%s\n", e.From.Sub(r.Started).Seconds(), until, e, class)
	}
	tw.Flush()

	fmt.Fprintln(w, "\n-- injected at the workers' edges --")
	tw = newTable(w, "WORKER\tFAULT\tCALL\tCOUNT")
	total := 0
	for _, id := range sortedKeys(r.Injected) {
		inj := r.Injected[id]
		keys := make([]Injection, 0, len(inj))
		for k := range inj {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].Kind != keys[j].Kind {
				return keys[i].Kind < keys[j].Kind
			}
			return keys[i].Call.String() < keys[j].Call.String()
		})
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", id, k.Kind, k.Call, inj[k])
			total++
		}
	}
	tw.Flush()
	if total == 0 {
		fmt.Fprintln(w, "(nothing)")
	}

	fmt.Fprintln(w, "\n-- requests seen per worker edge (faulted ones included) --")
	calls := map[localengines.Call]bool{}
	for _, s := range r.Stats {
		for c := range s.Calls {
			calls[c] = true
		}
	}
	callList := make([]localengines.Call, 0, len(calls))
	for c := range calls {
		callList = append(callList, c)
	}
	sort.Slice(callList, func(i, j int) bool { return callList[i].String() < callList[j].String() })
	ids := sortedKeys(r.Stats)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "CALL\t%s\tTOTAL\t\n", strings.Join(ids, "\t"))
	for _, c := range callList {
		var sum int64
		fmt.Fprintf(tw, "%s\t", c)
		for _, id := range ids {
			n := r.Stats[id].Calls[c]
			sum += n
			fmt.Fprintf(tw, "%d\t", n)
		}
		fmt.Fprintf(tw, "%d\t\n", sum)
	}
	tw.Flush()

	if v := r.Verify; v != nil {
		fmt.Fprintf(w, "\n-- kdsctl verify --\nproduced %d, processed %d, lost %d, duplicates %d (older epoch %d, same epoch %d, stale epoch %d), out of order %d\n",
			v.Produced, v.Processed, v.Lost, v.Duplicates, v.DupOlderEpoch, v.DupSameEpoch, v.DupStaleEpoch, v.OutOfOrder)
	}
	if r.VerifyErr != "" {
		fmt.Fprintf(w, "kdsctl verify failed: %s\n", r.VerifyErr)
	}

	fmt.Fprintln(w, "\n-- duplicates by the event that moved the shard --")
	if len(r.Causes) == 0 {
		fmt.Fprintln(w, "(none attributed)")
	} else {
		tw = newTable(w, "EVENT\tAT\tDUPLICATES")
		for _, c := range r.Causes {
			fmt.Fprintf(tw, "%s\t%.1fs\t%d\n", c.Event, c.Event.From.Sub(r.Started).Seconds(), c.Count)
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\n-- invariants --")
	tw = newTable(w, "INVARIANT\tVERDICT\tEVIDENCE")
	for _, res := range r.Results {
		verdict := "PASS"
		if !res.OK() {
			verdict = fmt.Sprintf("FAIL (%d)", len(res.Violations))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", res.Name, verdict, res.Checked)
	}
	tw.Flush()
	for _, res := range r.Results {
		for _, v := range res.Violations {
			fmt.Fprintf(w, "  %s: %s\n", res.Name, v)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "run error: %s\n", e)
	}
	if r.OK() {
		fmt.Fprintln(w, "\nPASS")
	} else {
		fmt.Fprintln(w, "\nFAIL")
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// newTable returns a tab writer on w for a table, its header row written.
func newTable(w io.Writer, header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}
