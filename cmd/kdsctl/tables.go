package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/dashboard"
	"github.com/kds-lease-manager/kds-lease-manager/internal/tableview"
)

// The views kdsctl prints, shared with the dashboard.
type (
	metaView     = tableview.Meta
	leaseView    = tableview.Leases
	workerLoad   = tableview.WorkerLoad
	leaseSummary = tableview.LeaseSummary
)

func listOrNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// printMeta writes the workers, the coordinator item and the warnings.
func printMeta(w io.Writer, v metaView) {
	fmt.Fprintf(w, "Metadata table %s\n\n", v.Table)
	t := newTable(w, "WORKER", "STATE", "LEASES", "HEARTBEAT", "LAST SEEN", "STARTED")
	for _, wk := range v.Workers {
		started := "-"
		if !wk.StartedAtTime.IsZero() {
			started = wk.StartedAtTime.Format(time.RFC3339)
		}
		t.row(wk.WorkerID, wk.State, wk.LeasesHeld, wk.Heartbeat, ago(wk.LastSeenTime), started)
	}
	t.flush()
	if len(v.Workers) == 0 {
		fmt.Fprintln(w, "(no workers)")
	}
	fmt.Fprintln(w)
	c := v.Coordinator
	if c == nil {
		fmt.Fprintln(w, "Coordinator: none yet (no worker has claimed the role)")
	} else {
		id := c.CoordinatorID
		if id == "" {
			id = "(none: resigned, waiting for a claim)"
		}
		t = newTable(w)
		t.row("Coordinator", id)
		t.row("  shard count (open)", c.ShardCount)
		t.row("  worker count (desired)", c.WorkerCount)
		t.row("  live workers", c.LiveWorkers)
		t.row("  max leases per worker", fmt.Sprintf("%d (cap %d)", c.MaxLeasesPerWorker, c.Cap))
		t.row("  target leases per worker", c.TargetLeasesPerWorker)
		t.row("  unowned shards", c.UnownedShards)
		t.row("  leases held by live workers", c.OwnedLeases)
		t.row("  dead workers", listOrNone(c.DeadWorkers))
		if len(c.RecheckWorkers) > 0 {
			t.row("  asked to recheck their leases", strings.Join(c.RecheckWorkers, ", "))
		}
		if c.WaitingParents > 0 {
			t.row("  closed shards waiting for a worker", fmt.Sprintf("%d (workers trade open shards for them)", c.WaitingParents))
		}
		t.row("  epoch / version", fmt.Sprintf("%d / %d", c.Epoch, c.Version))
		t.row("  updated", fmt.Sprintf("%s (%s)", c.UpdatedAt, ago(c.UpdatedAtTime)))
		t.flush()
	}
	if len(v.Warnings) > 0 {
		fmt.Fprintln(w)
		banner(w, append([]string{"WARNING"}, v.Warnings...)...)
	}
	for _, ci := range v.Corrupt {
		fmt.Fprintf(w, "WARNING: corrupt item %s\n", ci)
	}
}

func metadata(ctx context.Context, e *env, args []string) error {
	if err := e.parseNone(e.flags("metadata"), args); err != nil {
		return err
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	m, err := st.ReadMeta(ctx)
	if err != nil {
		return err
	}
	v := tableview.NewMeta(st.MetaTable(), m)
	if e.json() {
		// Scripts read stdout; the warning must still reach whoever runs them.
		for _, warn := range v.Warnings {
			fmt.Fprintln(e.stderr, "WARNING:", warn)
		}
	}
	return e.emit(v, func(w io.Writer) { printMeta(w, v) })
}

// printLeases writes the lease rows (unless summaryOnly), the leases per worker and the
// totals.
func printLeases(w io.Writer, v leaseView, summaryOnly bool) {
	if !summaryOnly {
		fmt.Fprintf(w, "Lease table %s\n\n", v.Table)
		t := newTable(w, "SHARD", "OWNER", "STATE", "EPOCH", "CHECKPOINT", "PARENTS", "LAG")
		for _, l := range v.Leases {
			t.row(l.Shard, orDash(l.Owner), l.State, l.Epoch, short(l.Checkpoint), orDash(strings.Join(l.Parents, ",")), lag(l.MillisBehindLatest))
		}
		t.flush()
		fmt.Fprintln(w)
	}
	t := newTable(w, "WORKER", "LEASES")
	for _, wl := range v.Workers {
		t.row(wl.Worker, wl.Leases)
	}
	t.flush()
	s := v.Summary
	fmt.Fprintf(w, "\n%d leases: %d active, %d unowned, %d waiting for parent, %d finished\n",
		s.Total, s.Active, s.Unowned, s.Waiting, s.Finished)
	for _, ci := range v.Corrupt {
		fmt.Fprintf(w, "WARNING: corrupt lease item %s\n", ci)
	}
}

func lag(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return (time.Duration(*ms) * time.Millisecond).String()
}

// short abbreviates long sequence numbers for tables.
func short(cp string) string {
	if len(cp) > 20 {
		return "…" + cp[len(cp)-12:]
	}
	return cp
}

func leases(ctx context.Context, e *env, args []string) error {
	if err := e.parseNone(e.flags("leases"), args); err != nil {
		return err
	}
	v, err := e.readLeases(ctx)
	if err != nil {
		return err
	}
	return e.emit(v, func(w io.Writer) { printLeases(w, v, false) })
}

func (e *env) readLeases(ctx context.Context) (leaseView, error) {
	st, err := e.store(ctx)
	if err != nil {
		return leaseView{}, err
	}
	t, err := st.ListLeases(ctx)
	if err != nil {
		return leaseView{}, err
	}
	return tableview.NewLeases(st.LeaseTable(), t), nil
}

// monitorFrame is one refresh of monitor's JSON output.
type monitorFrame struct {
	Time     string     `json:"time"`
	Metadata *metaView  `json:"metadata,omitempty"`
	Leases   *leaseView `json:"leases,omitempty"`
	Errors   []string   `json:"errors,omitempty"`
}

// parseInterval parses the flags of a command that reads the tables repeatedly: its own
// (registered by more) and --interval, at least 500ms.
func (e *env) parseInterval(name string, def time.Duration, help string, args []string, more func(*flag.FlagSet)) (time.Duration, error) {
	fs := e.flags(name)
	interval := fs.Duration("interval", def, help)
	if more != nil {
		more(fs)
	}
	if err := e.parseNone(fs, args); err != nil {
		return 0, err
	}
	if *interval < 500*time.Millisecond {
		return 0, usageError("%s: --interval %s: want at least 500ms", name, *interval)
	}
	return *interval, nil
}

func monitor(ctx context.Context, e *env, args []string) error {
	interval, err := e.parseInterval("monitor", 10*time.Second, "refresh interval", args, nil)
	if err != nil {
		return err
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		// A frame read during Ctrl+C only shows the cancellation's errors: skip it.
		if f := e.monitorFrame(ctx, st); ctx.Err() == nil {
			if err := e.drawFrame(f, interval); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if !e.json() {
				fmt.Fprintln(e.stdout) // leave the prompt below the last frame
			}
			return nil
		case <-ticker.C:
		}
	}
}

func (e *env) monitorFrame(ctx context.Context, st *dynamostore.Store) monitorFrame {
	f := monitorFrame{Time: time.Now().UTC().Format(time.RFC3339)}
	f.Metadata, f.Leases, f.Errors = dashboard.ReadTables(ctx, st, 0)
	return f
}

func (e *env) drawFrame(f monitorFrame, interval time.Duration) error {
	if e.json() {
		// One compact document per line, so a script can read the frames as they come.
		return writeJSONLine(e.stdout, f)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kds-lease-manager monitor: app %s, stream %s, every %s (Ctrl+C to stop) %s\n\n",
		e.app, e.stream, interval, time.Now().Format(time.TimeOnly))
	for _, msg := range f.Errors {
		fmt.Fprintln(&b, msg)
	}
	if f.Metadata != nil {
		printMeta(&b, *f.Metadata)
		fmt.Fprintln(&b)
	}
	if f.Leases != nil {
		printLeases(&b, *f.Leases, true)
	}
	// Clear the screen and home the cursor, then draw the frame at once.
	_, err := fmt.Fprint(e.stdout, "\x1b[H\x1b[2J"+b.String())
	return err
}

// dashboardCmd serves the live dashboard until Ctrl+C. One poller reads the tables for
// every viewer, also while nobody views the page, so that the event feed is complete.
func dashboardCmd(ctx context.Context, e *env, args []string) error {
	var addr *string
	interval, err := e.parseInterval("dashboard", time.Second, "shortest time between two reads of the tables (bigger tables are read less often)", args,
		func(fs *flag.FlagSet) {
			addr = fs.String("addr", "127.0.0.1:8090", "address to serve the page on (port 0: any free port)")
		})
	if err != nil {
		return err
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	d, err := dashboard.New(dashboard.Config{Source: st, Title: fmt.Sprintf("app %s, stream %s", e.app, e.stream),
		Interval: interval, Always: true, Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen on %s: %w", *addr, err)
	}
	fmt.Fprintf(e.progress(), "dashboard of app %s on http://%s/ (Ctrl+C to stop)\n", e.app, ln.Addr())
	return d.Serve(ctx, ln)
}
