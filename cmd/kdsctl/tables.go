package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// metaView is the metadata table as kdsctl shows it (and its JSON output).
type metaView struct {
	Table       string           `json:"table"`
	Workers     []workerView     `json:"workers"`
	Coordinator *coordinatorView `json:"coordinator"`
	Warnings    []string         `json:"warnings,omitempty"`
	Corrupt     []string         `json:"corrupt,omitempty"`
}

type workerView struct {
	WorkerID    string `json:"worker_id"`
	Incarnation string `json:"incarnation"`
	State       string `json:"state"`
	Heartbeat   int64  `json:"heartbeat"`
	LeasesHeld  int    `json:"leases_held"`
	LastSeen    string `json:"last_seen,omitempty"`
	StartedAt   string `json:"started_at,omitempty"`

	lastSeen, startedAt time.Time
}

type coordinatorView struct {
	CoordinatorID         string `json:"coordinator_id"`
	ShardCount            int    `json:"shard_count"`
	WorkerCount           int    `json:"worker_count"`
	LiveWorkers           int    `json:"live_workers"`
	MaxLeasesPerWorker    int    `json:"max_leases_per_worker"`
	TargetLeasesPerWorker int    `json:"target_leases_per_worker"`
	Cap                   int    `json:"cap"`
	UnownedShards         int    `json:"unowned_shards"`
	RecommendedWorkers    int    `json:"recommended_workers"`
	Epoch                 int64  `json:"epoch"`
	Version               int64  `json:"version"`
	LeaseGeneration       int64  `json:"lease_generation"`
	// The membership view: the workers the coordinator judged dead, the leases the live
	// ones hold, those asked to recheck their leases, and the closed shards waiting for a
	// worker.
	DeadWorkers    []string `json:"dead_workers"`
	OwnedLeases    int      `json:"owned_leases"`
	RecheckWorkers []string `json:"recheck_workers"`
	WaitingParents int      `json:"waiting_parents"`
	UpdatedAt      string   `json:"updated_at,omitempty"`

	updatedAt time.Time
}

func newMetaView(table string, m lease.Meta) metaView {
	v := metaView{Table: table, Workers: []workerView{}}
	for _, w := range m.Workers {
		v.Workers = append(v.Workers, workerView{
			WorkerID: w.WorkerID, Incarnation: w.Incarnation, State: string(w.State), Heartbeat: w.Heartbeat,
			LeasesHeld: w.LeasesHeld, LastSeen: timeJSON(w.LastSeen), StartedAt: timeJSON(w.StartedAt),
			lastSeen: w.LastSeen, startedAt: w.StartedAt,
		})
	}
	// The store sorts already; sorting here keeps the output's promise independent of it.
	sort.Slice(v.Workers, func(i, j int) bool { return v.Workers[i].WorkerID < v.Workers[j].WorkerID })
	if c := m.Coordinator; c != nil {
		v.Coordinator = &coordinatorView{
			CoordinatorID: c.CoordinatorID, ShardCount: c.ShardCount, WorkerCount: c.WorkerCount,
			LiveWorkers: c.LiveWorkers, MaxLeasesPerWorker: c.MaxLeasesPerWorker,
			TargetLeasesPerWorker: c.TargetLeasesPerWorker, Cap: c.Cap, UnownedShards: c.UnownedShards,
			RecommendedWorkers: c.RecommendedWorkers, Epoch: c.Epoch, Version: c.Version,
			LeaseGeneration: c.LeaseGeneration, UpdatedAt: timeJSON(c.UpdatedAt), updatedAt: c.UpdatedAt,
			DeadWorkers: []string{}, OwnedLeases: c.OwnedLeases, RecheckWorkers: append([]string{}, c.RecheckWorkers...),
			WaitingParents: c.WaitingParents,
		}
		for _, d := range c.DeadWorkers {
			v.Coordinator.DeadWorkers = append(v.Coordinator.DeadWorkers, d.WorkerID)
		}
		if c.UnownedShards > 0 {
			v.Warnings = append(v.Warnings, unownedWarning(c))
		}
	}
	for _, ci := range m.Corrupt {
		v.Corrupt = append(v.Corrupt, ci.String())
	}
	return v
}

func listOrNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

func unownedWarning(c *lease.CoordinatorRecord) string {
	return fmt.Sprintf("%d of %d shards are UNOWNED: %d workers x cap %d leases cannot cover them; run %d workers (or raise the cap)",
		c.UnownedShards, c.ShardCount, c.WorkerCount, c.Cap, c.RecommendedWorkers)
}

func (v metaView) print(w io.Writer) {
	fmt.Fprintf(w, "Metadata table %s\n\n", v.Table)
	t := newTable(w, "WORKER", "STATE", "LEASES", "HEARTBEAT", "LAST SEEN", "STARTED")
	for _, wk := range v.Workers {
		started := "-"
		if !wk.startedAt.IsZero() {
			started = wk.startedAt.Format(time.RFC3339)
		}
		t.row(wk.WorkerID, wk.State, wk.LeasesHeld, wk.Heartbeat, ago(wk.lastSeen), started)
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
		t.row("  updated", fmt.Sprintf("%s (%s)", c.UpdatedAt, ago(c.updatedAt)))
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
	v := newMetaView(st.MetaTable(), m)
	if e.json() {
		// Scripts read stdout; the warning must still reach whoever runs them.
		for _, warn := range v.Warnings {
			fmt.Fprintln(e.stderr, "WARNING:", warn)
		}
	}
	return e.emit(v, v.print)
}

// Lease states.
const (
	stateActive   = "active"
	stateWaiting  = "waiting for parent"
	stateFinished = "finished"
	stateUnowned  = "unowned"
)

// leaseView is the lease table as kdsctl shows it (and its JSON output).
type leaseView struct {
	Table   string       `json:"table"`
	Leases  []leaseRow   `json:"leases"`
	Workers []workerLoad `json:"workers"`
	Summary leaseSummary `json:"summary"`
	Corrupt []string     `json:"corrupt,omitempty"`
}

type leaseRow struct {
	Shard      string   `json:"shard"`
	Owner      string   `json:"owner"`
	State      string   `json:"state"`
	Epoch      int64    `json:"epoch"`
	Checkpoint string   `json:"checkpoint"`
	Parents    []string `json:"parents"`
	// MillisBehindLatest is the owner's lag at its last checkpoint; nil when unknown.
	MillisBehindLatest *int64 `json:"millis_behind_latest"`
}

type workerLoad struct {
	Worker string `json:"worker"`
	Leases int    `json:"leases"`
}

type leaseSummary struct {
	Total    int `json:"total"`
	Active   int `json:"active"`
	Unowned  int `json:"unowned"`
	Waiting  int `json:"waiting_for_parent"`
	Finished int `json:"finished"`
}

// leaseState names what a lease is doing. A parent without a lease counts as finished
// (it aged out of the stream) and a corrupt one as unfinished, as the workers decide.
func leaseState(l lease.Lease, idx lease.Index) string {
	switch {
	case l.Finished():
		return stateFinished
	case l.Owner != "":
		return stateActive
	case !idx.ParentsFinished(l):
		return stateWaiting
	}
	return stateUnowned
}

func newLeaseView(table string, t lease.Table) leaseView {
	idx := t.Index()
	v := leaseView{Table: table, Leases: []leaseRow{}, Workers: []workerLoad{}}
	perWorker, byState := map[string]int{}, map[string]int{}
	for _, l := range t.Leases {
		st := leaseState(l, idx)
		byState[st]++
		if l.Owner != "" && st != stateFinished {
			perWorker[l.Owner]++
		}
		row := leaseRow{Shard: l.ShardID, Owner: l.Owner, State: st, Epoch: l.Epoch,
			Checkpoint: l.Checkpoint, Parents: l.ParentShardIDs}
		if lagKnown(l) {
			row.MillisBehindLatest = &l.MillisBehindLatest
		}
		if row.Parents == nil {
			row.Parents = []string{}
		}
		v.Leases = append(v.Leases, row)
	}
	sort.Slice(v.Leases, func(i, j int) bool { return v.Leases[i].Shard < v.Leases[j].Shard })
	for w, n := range perWorker {
		v.Workers = append(v.Workers, workerLoad{Worker: w, Leases: n})
	}
	sort.Slice(v.Workers, func(i, j int) bool { return v.Workers[i].Worker < v.Workers[j].Worker })
	v.Summary = leaseSummary{Total: len(t.Leases), Active: byState[stateActive], Unowned: byState[stateUnowned],
		Waiting: byState[stateWaiting], Finished: byState[stateFinished]}
	for _, ci := range t.Corrupt {
		v.Corrupt = append(v.Corrupt, ci.String())
	}
	return v
}

// print writes the lease rows (unless summaryOnly), the leases per worker and the totals.
func (v leaseView) print(w io.Writer, summaryOnly bool) {
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
	return e.emit(v, func(w io.Writer) { v.print(w, false) })
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
	return newLeaseView(st.LeaseTable(), t), nil
}

// lagKnown reports whether l.MillisBehindLatest means something: the lease item carries
// it from the last checkpoint, and it is 0 before the first one (the checkpoint is still a
// starting position then) as well as meaningless once the shard is finished.
func lagKnown(l lease.Lease) bool {
	switch l.Checkpoint {
	case lease.TrimHorizon, lease.Latest, lease.AtTimestamp, lease.ShardEnd, "":
		return false
	}
	return true
}

// monitorFrame is one refresh of monitor's JSON output.
type monitorFrame struct {
	Time     string     `json:"time"`
	Metadata *metaView  `json:"metadata,omitempty"`
	Leases   *leaseView `json:"leases,omitempty"`
	Errors   []string   `json:"errors,omitempty"`
}

func monitor(ctx context.Context, e *env, args []string) error {
	fs := e.flags("monitor")
	interval := fs.Duration("interval", 10*time.Second, "refresh interval")
	if err := e.parseNone(fs, args); err != nil {
		return err
	}
	if *interval < 500*time.Millisecond {
		return usageError("monitor: --interval %s: want at least 500ms", *interval)
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for {
		// A frame read during Ctrl+C only shows the cancellation's errors: skip it.
		if f := e.monitorFrame(ctx, st); ctx.Err() == nil {
			if err := e.drawFrame(f, *interval); err != nil {
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
	if m, err := st.ReadMeta(ctx); err != nil {
		f.Errors = append(f.Errors, fmt.Sprintf("cannot read the metadata table: %v", err))
	} else {
		v := newMetaView(st.MetaTable(), m)
		f.Metadata = &v
	}
	if t, err := st.ListLeases(ctx); err != nil {
		f.Errors = append(f.Errors, fmt.Sprintf("cannot read the lease table: %v", err))
	} else {
		v := newLeaseView(st.LeaseTable(), t)
		f.Leases = &v
	}
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
		f.Metadata.print(&b)
		fmt.Fprintln(&b)
	}
	if f.Leases != nil {
		f.Leases.print(&b, true)
	}
	// Clear the screen and home the cursor, then draw the frame at once.
	_, err := fmt.Fprint(e.stdout, "\x1b[H\x1b[2J"+b.String())
	return err
}
