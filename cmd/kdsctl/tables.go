package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

func metadata(ctx context.Context, e env) error {
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	m, err := st.ReadMeta(ctx)
	if err != nil {
		return err
	}
	printMeta(e.out, st.MetaTable(), m)
	return nil
}

func printMeta(out io.Writer, table string, m lease.Meta) {
	fmt.Fprintf(out, "Metadata table %s\n\n", table)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tSTATE\tLEASES\tHEARTBEAT\tLAST SEEN\tSTARTED")
	for _, w := range m.Workers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", w.WorkerID, w.State, w.LeasesHeld, w.Heartbeat,
			ago(w.LastSeen), w.StartedAt.Format(time.RFC3339))
	}
	tw.Flush()
	fmt.Fprintln(out)
	c := m.Coordinator
	if c == nil {
		fmt.Fprintln(out, "Coordinator: none yet (no worker has claimed the role)")
	} else {
		id := c.CoordinatorID
		if id == "" {
			id = "(none: resigned, waiting for a claim)"
		}
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "Coordinator\t%s\n", id)
		fmt.Fprintf(tw, "  max_leases_per_worker\t%d\n", c.MaxLeasesPerWorker)
		fmt.Fprintf(tw, "  target_leases_per_worker\t%d\n", c.TargetLeasesPerWorker)
		fmt.Fprintf(tw, "  shard_count\t%d\n", c.ShardCount)
		fmt.Fprintf(tw, "  worker_count\t%d\n", c.WorkerCount)
		fmt.Fprintf(tw, "  live_workers\t%d\n", c.LiveWorkers)
		fmt.Fprintf(tw, "  cap\t%d\n", c.Cap)
		fmt.Fprintf(tw, "  epoch / version\t%d / %d\n", c.Epoch, c.Version)
		fmt.Fprintf(tw, "  updated\t%s (%s)\n", c.UpdatedAt.Format(time.RFC3339), ago(c.UpdatedAt))
		tw.Flush()
		if c.UnownedShards > 0 {
			fmt.Fprintf(out, "\nWARNING: %d shards are UNOWNED: the cap of %d leases per worker is too low for %d shards; %d workers are needed.\n",
				c.UnownedShards, c.Cap, c.ShardCount, c.RecommendedWorkers)
		}
	}
	for _, ci := range m.Corrupt {
		fmt.Fprintf(out, "WARNING: corrupt item %s\n", ci)
	}
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}

func leases(ctx context.Context, e env) error {
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	t, err := st.ListLeases(ctx)
	if err != nil {
		return err
	}
	printLeases(e.out, t, true)
	return nil
}

// leaseState names what a lease is doing.
func leaseState(l lease.Lease, byID map[string]lease.Lease) string {
	switch {
	case l.Finished():
		return "finished"
	case l.Owner != "":
		return "active"
	}
	for _, p := range l.ParentShardIDs {
		if pl, ok := byID[p]; ok && !pl.Finished() {
			return "waiting for parent"
		}
	}
	return "unowned"
}

func printLeases(out io.Writer, t lease.Table, rows bool) {
	byID := make(map[string]lease.Lease, len(t.Leases))
	for _, l := range t.Leases {
		byID[l.ShardID] = l
	}
	perWorker := map[string]int{}
	states := map[string]int{}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if rows {
		fmt.Fprintln(tw, "SHARD\tOWNER\tSTATE\tEPOCH\tCHECKPOINT\tPARENTS")
	}
	for _, l := range t.Leases {
		st := leaseState(l, byID)
		states[st]++
		if l.Owner != "" {
			perWorker[l.Owner]++
		}
		if rows {
			owner := l.Owner
			if owner == "" {
				owner = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", l.ShardID, owner, st, l.Counter, short(l.Checkpoint), strings.Join(l.ParentShardIDs, ","))
		}
	}
	tw.Flush()
	if rows {
		fmt.Fprintln(out)
	}
	workers := make([]string, 0, len(perWorker))
	for w := range perWorker {
		workers = append(workers, w)
	}
	sort.Strings(workers)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tLEASES")
	for _, w := range workers {
		fmt.Fprintf(tw, "%s\t%d\n", w, perWorker[w])
	}
	tw.Flush()
	fmt.Fprintf(out, "\n%d leases: %d active, %d unowned, %d waiting for parent, %d finished\n",
		len(t.Leases), states["active"], states["unowned"], states["waiting for parent"], states["finished"])
	for _, ci := range t.Corrupt {
		fmt.Fprintf(out, "WARNING: corrupt lease item %s\n", ci)
	}
}

// short abbreviates long sequence numbers for tables.
func short(cp string) string {
	if len(cp) > 20 {
		return "…" + cp[len(cp)-12:]
	}
	return cp
}

func monitor(ctx context.Context, e env, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	interval := fs.Duration("interval", 10*time.Second, "refresh interval")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *interval < 500*time.Millisecond {
		return fmt.Errorf("%w: --interval %s: want at least 500ms", errUsage, *interval)
	}
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	for {
		var b strings.Builder
		fmt.Fprintf(&b, "kds-lease-manager monitor: app %s, stream %s, every %s (Ctrl+C to stop) %s\n\n",
			e.app, e.stream, *interval, time.Now().Format(time.TimeOnly))
		if m, err := st.ReadMeta(ctx); err != nil {
			fmt.Fprintf(&b, "cannot read the metadata table: %v\n", err)
		} else {
			printMeta(&b, st.MetaTable(), m)
		}
		fmt.Fprintln(&b)
		if t, err := st.ListLeases(ctx); err != nil {
			fmt.Fprintf(&b, "cannot read the lease table: %v\n", err)
		} else {
			printLeases(&b, t, false)
		}
		// Clear the screen and home the cursor, then draw the frame at once.
		fmt.Fprint(e.out, "\x1b[H\x1b[2J"+b.String())
		select {
		case <-ctx.Done():
			fmt.Fprintln(e.out)
			return nil
		case <-time.After(*interval):
		}
	}
}
