package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// expectation is what `kdsctl expect` waits for. workers < 0 means any.
type expectation struct {
	shards, maxLeases, workers, unowned int
}

// observation is what the coordinator item and the lease table say at one moment.
type observation struct {
	coordinator       bool
	shards, maxLeases int
	workers, live     int
	target            int
	// closing counts leases of closed shards (parents of other leases) not yet read to
	// SHARD_END: while any remain, resharding is still in progress.
	closing        int
	owned, unowned int // leases of open shards (parents of none), with and without owner
	perWorker      []workerLoad
	readErr        string
}

func observe(m lease.Meta, t lease.Table) observation {
	var o observation
	if c := m.Coordinator; c != nil {
		o.coordinator = true
		o.shards, o.maxLeases, o.workers, o.live, o.target = c.ShardCount, c.MaxLeasesPerWorker, c.WorkerCount, c.LiveWorkers, c.TargetLeasesPerWorker
	}
	idx := t.Index()
	perWorker := map[string]int{}
	for _, l := range t.Leases {
		if l.Finished() || idx.Corrupt(l.ShardID) {
			continue
		}
		if l.Owner != "" {
			perWorker[l.Owner]++
		}
		switch {
		case idx.IsOpenParent(l.ShardID):
			o.closing++
		case l.Owner != "":
			o.owned++
		default:
			o.unowned++
		}
	}
	for w, n := range perWorker {
		o.perWorker = append(o.perWorker, workerLoad{Worker: w, Leases: n})
	}
	sort.Slice(o.perWorker, func(i, j int) bool { return o.perWorker[i].Worker < o.perWorker[j].Worker })
	return o
}

// limit is the most leases a worker may hold: the max, or the target while fewer workers
// are live than desired (the coordinator then lets the live ones cover the missing one).
func (x expectation) limit(o observation) (int, string) {
	if o.live < o.workers && o.target > x.maxLeases {
		return o.target, fmt.Sprintf("<= %d (target: %d of %d workers live)", o.target, o.live, o.workers)
	}
	return x.maxLeases, fmt.Sprintf("<= %d", x.maxLeases)
}

// check is one line of expect's verdict.
type check struct {
	Name     string `json:"name"`
	Expected string `json:"expected"`
	Observed string `json:"observed"`
	OK       bool   `json:"ok"`
}

func (x expectation) checks(o observation) []check {
	if !o.coordinator {
		got := "none"
		if o.readErr != "" {
			got = o.readErr
		}
		return []check{{Name: "coordinator", Expected: "present", Observed: got, OK: false}}
	}
	num := func(name string, want, got int) check {
		return check{Name: name, Expected: fmt.Sprint(want), Observed: fmt.Sprint(got), OK: want == got}
	}
	cs := []check{
		num("shards", x.shards, o.shards),
		num("max leases", x.maxLeases, o.maxLeases),
	}
	workers := check{Name: "workers", Expected: "any", Observed: fmt.Sprintf("%d (%d live)", o.workers, o.live), OK: true}
	if x.workers >= 0 {
		workers.Expected, workers.OK = fmt.Sprint(x.workers), o.workers == x.workers
	}
	cs = append(cs, workers,
		num("closed shards not finished", 0, o.closing),
		num("owned", max(0, x.shards-x.unowned), o.owned),
		num("unowned", x.unowned, o.unowned))
	lim, limText := x.limit(o)
	most := 0
	loads := make([]string, 0, len(o.perWorker))
	for _, wl := range o.perWorker {
		most = max(most, wl.Leases)
		loads = append(loads, fmt.Sprintf("%s=%d", wl.Worker, wl.Leases))
	}
	cs = append(cs, check{Name: "leases per worker", Expected: limText, Observed: orDash(strings.Join(loads, " ")), OK: most <= lim})
	if o.readErr != "" {
		cs = append(cs, check{Name: "read", Expected: "ok", Observed: o.readErr, OK: false})
	}
	return cs
}

func allOK(cs []check) bool {
	for _, c := range cs {
		if !c.OK {
			return false
		}
	}
	return true
}

// expectResult is expect's JSON output.
type expectResult struct {
	Result  string  `json:"result"`
	Seconds float64 `json:"seconds"`
	Checks  []check `json:"checks"`
}

func (r expectResult) print(w io.Writer) {
	fmt.Fprintf(w, "%s after %.1fs\n", r.Result, r.Seconds)
	t := newTable(w, "CHECK", "EXPECTED", "OBSERVED", "RESULT")
	for _, c := range r.Checks {
		mark := "ok"
		if !c.OK {
			mark = "MISMATCH"
		}
		t.row(c.Name, c.Expected, c.Observed, mark)
	}
	t.flush()
}

func expect(ctx context.Context, e *env, args []string) error {
	fs := e.flags("expect")
	var x expectation
	fs.IntVar(&x.shards, "shards", 0, "expected open shard count (required)")
	fs.IntVar(&x.maxLeases, "max-leases", 0, "expected max_leases_per_worker (required)")
	fs.IntVar(&x.workers, "workers", 0, "expected worker count (desired); default: any")
	fs.IntVar(&x.unowned, "unowned", 0, "leases expected to stay unowned (shards beyond workers x cap)")
	timeout := fs.Duration("timeout", 120*time.Second, "give up and FAIL after this long")
	interval := fs.Duration("interval", time.Second, "poll interval")
	if err := e.parseNone(fs, args); err != nil {
		return err
	}
	set := flagsSet(fs)
	if !set["workers"] {
		x.workers = -1
	}
	switch {
	case !set["shards"] || !set["max-leases"]:
		return usageError("expect: --shards and --max-leases are required")
	case x.shards < 0 || x.maxLeases < 0 || x.workers < -1 || x.unowned < 0:
		return usageError("expect: counts must not be negative")
	case *timeout <= 0 || *interval <= 0:
		return usageError("expect: --timeout and --interval must be positive")
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := x.wait(ctx, st, *timeout, *interval, e.progress())
	if err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	if err := e.emit(res, res.print); err != nil {
		return err
	}
	if res.Result != "PASS" {
		return fmt.Errorf("expect: FAIL: not converged within %s", *timeout)
	}
	return nil
}

// wait polls until every check passes (PASS) or the timeout ends (FAIL, with the last
// observation). Read errors, such as tables the workers have not created yet, are
// retried until the timeout. Only the caller's cancellation is an error.
func (x expectation) wait(ctx context.Context, st *dynamostore.Store, timeout, interval time.Duration, p io.Writer) (expectResult, error) {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		o, err := x.poll(ctx, st)
		if ctx.Err() != nil {
			return expectResult{}, fmt.Errorf("expect: %w", ctx.Err())
		}
		if err != nil && !transient(err) {
			return expectResult{}, fmt.Errorf("expect: %w", err)
		}
		cs := x.checks(o)
		if allOK(cs) {
			return expectResult{Result: "PASS", Checks: cs}, nil
		}
		if s := summarize(cs); s != last {
			fmt.Fprintln(p, "waiting:", s)
			last = s
		}
		wait := min(interval, time.Until(deadline))
		if wait <= 0 {
			return expectResult{Result: "FAIL", Checks: cs}, nil
		}
		if !sleepCtx(ctx, wait) {
			return expectResult{}, fmt.Errorf("expect: %w", ctx.Err())
		}
	}
}

func (x expectation) poll(ctx context.Context, st *dynamostore.Store) (observation, error) {
	m, err := st.ReadMeta(ctx)
	if err != nil {
		return observation{readErr: err.Error()}, err
	}
	t, err := st.ListLeases(ctx)
	o := observe(m, t)
	if err != nil {
		o.readErr = err.Error()
	}
	return o, err
}

// transient reports whether a read error may go away while expect waits: the workers
// create the tables when they start, and a (re)starting local engine refuses connections.
// Anything else, such as missing credentials, fails at once rather than at the timeout.
func transient(err error) bool {
	return errors.Is(err, dynamostore.ErrTableNotFound) || errors.Is(err, dynamostore.ErrThrottled) ||
		errors.Is(err, syscall.ECONNREFUSED)
}

// summarize is the one-line progress report of the mismatches.
func summarize(cs []check) string {
	var parts []string
	for _, c := range cs {
		if !c.OK {
			parts = append(parts, fmt.Sprintf("%s %s (want %s)", c.Name, c.Observed, c.Expected))
		}
	}
	return strings.Join(parts, ", ")
}
