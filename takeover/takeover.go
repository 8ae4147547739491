// Package takeover is the start-up check of a worker that takes over a lease table from
// another lease manager, the KCL's: before the worker takes any lease, no worker outside
// this application may still be renewing leases in the table.
//
// A KCL worker renews each lease it holds by incrementing its leaseCounter every few
// seconds (a third of its failover time by default). This project's workers never do: a
// worker's heartbeat is its record in the metadata table, and a lease's counter moves only
// when the lease changes hands. So the check reads the lease table twice, a window apart,
// and looks at the leases held, on the second read, by owners that have no record in the
// metadata table (owners that are not this application's workers): if the counter of any
// of them moved, a foreign fleet is alive. Leases held by this application's workers are
// never judged, so a running fleet of ours, a rolling restart or a worker joining a fleet
// that already took the table over does not trip the check; and when no lease is held by
// a foreign owner the check returns at once, without waiting for the window.
//
// The check is a step before consumer.Worker.Run, not a part of it: the worker binary
// runs it (KCL_CHECK), library users call Check.Run themselves.
package takeover

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// LeaseReader reads the lease table; consumer.LeaseStore is one.
type LeaseReader interface {
	ListLeases(ctx context.Context) (lease.Table, error)
}

// MetaReader reads the metadata table; consumer.MetaStore is one.
type MetaReader interface {
	ReadMeta(ctx context.Context) (lease.Meta, error)
}

// ErrStillRenewing is matched (errors.Is) by the error of a check that saw foreign
// workers renew leases.
var ErrStillRenewing = errors.New("foreign workers are still renewing leases")

// Renewal is a lease whose counter moved during the window while a foreign owner held it.
type Renewal struct {
	ShardID string
	Owner   string
	// From and To are the lease's counter at the first and second read; From is -1 when
	// the lease did not exist at the first read.
	From, To int64
}

// StillRenewingError is the error of a check that saw foreign workers renew leases.
type StillRenewingError struct {
	Table    string
	Window   time.Duration
	Renewals []Renewal // sorted by owner, then shard
}

// Is makes the error match ErrStillRenewing.
func (e *StillRenewingError) Is(target error) bool { return target == ErrStillRenewing }

// Owners returns the foreign owners that renewed, sorted.
func (e *StillRenewingError) Owners() []string {
	owners := map[string]bool{}
	for _, r := range e.Renewals {
		owners[r.Owner] = true
	}
	return slices.Sorted(maps.Keys(owners))
}

// Most owners and leases per owner an error message names.
const (
	maxOwnersShown = 5
	maxLeasesShown = 3
)

func (e *StillRenewingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "KCL workers (or other lease managers) are still renewing leases in %s: %d lease counters moved in %s while held by owners "+
		"that are not workers of this application (", e.Table, len(e.Renewals), e.Window)
	owners := e.Owners()
	for i, owner := range owners[:min(len(owners), maxOwnersShown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		var leases []string
		for _, r := range e.Renewals {
			if r.Owner == owner {
				leases = append(leases, r.describe())
			}
		}
		fmt.Fprintf(&b, "owner %s: %s", owner, strings.Join(leases[:min(len(leases), maxLeasesShown)], ", "))
		if len(leases) > maxLeasesShown {
			fmt.Fprintf(&b, " and %d more", len(leases)-maxLeasesShown)
		}
	}
	if len(owners) > maxOwnersShown {
		fmt.Fprintf(&b, "; and %d more owners", len(owners)-maxOwnersShown)
	}
	b.WriteString("): stop the KCL fleet first")
	return b.String()
}

func (r Renewal) describe() string {
	if r.From < 0 {
		return fmt.Sprintf("%s (new, counter %d)", r.ShardID, r.To)
	}
	return fmt.Sprintf("%s (counter %d -> %d)", r.ShardID, r.From, r.To)
}

// Check is the start-up check. Leases, Meta and Window are required.
type Check struct {
	Leases LeaseReader
	Meta   MetaReader
	// Table names the lease table in messages.
	Table string
	// Window is how long apart the two reads of the lease table are: longer than the
	// foreign workers' renewal interval (the KCL's: a third of its failover time, 10 s
	// by default), so that a live one renews at least once in it.
	Window time.Duration
	// Wait: instead of returning a StillRenewingError, log it and check again, until
	// the counters stop moving or ctx ends.
	Wait bool
	// CallTimeout bounds each read (default 30 s).
	CallTimeout time.Duration
	Clock       clock.Clock  // default the real clock
	Logger      *slog.Logger // default slog.Default()
}

const defaultCallTimeout = 30 * time.Second

// Run runs the check. It returns nil when no lease is held by a foreign owner, or when
// no foreign owner's lease counter moved in a window; a *StillRenewingError when some did
// (unless Wait); ctx's error when ctx ended; or the error of a read.
func (c Check) Run(ctx context.Context) error {
	if c.Leases == nil || c.Meta == nil {
		return errors.New("takeover: Check needs Leases and Meta")
	}
	if c.Window <= 0 {
		return fmt.Errorf("takeover: Check.Window is %s, want a positive duration longer than the KCL's lease renewal interval", c.Window)
	}
	c.Clock = cmp.Or[clock.Clock](c.Clock, clock.Real{})
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.CallTimeout = cmp.Or(c.CallTimeout, defaultCallTimeout)
	log := c.Logger.With("lease_table", c.Table)

	first, ours, err := c.read(ctx)
	if err != nil {
		return err
	}
	if len(foreignHeld(first, ours)) == 0 {
		log.Debug("no lease is held by an owner outside this application's workers: no KCL worker to wait for")
		return nil
	}
	for round := 1; ; round++ {
		log.Info("checking that no KCL worker still renews leases before taking any", "window", c.Window, "round", round,
			"foreign_leases", len(foreignHeld(first, ours)))
		if err := clock.Sleep(ctx, c.Clock, c.Window); err != nil {
			return fmt.Errorf("takeover: waiting for KCL workers to stop renewing leases in %s: %w", c.Table, err)
		}
		second, ours2, err := c.read(ctx)
		if err != nil {
			return err
		}
		maps.Copy(ours, ours2) // a worker of ours that registered during the window
		renewals := moved(first, second, ours)
		if len(renewals) == 0 {
			log.Info("no KCL worker renewed a lease during the window: taking over the lease table", "window", c.Window, "round", round)
			return nil
		}
		stillErr := &StillRenewingError{Table: c.Table, Window: c.Window, Renewals: renewals}
		if !c.Wait {
			return stillErr
		}
		log.Warn("KCL workers are still renewing leases; waiting for them to stop", "round", round,
			"owners", stillErr.Owners(), "moved", len(renewals))
		first = second
	}
}

// read reads the lease table, then the metadata table (so that a worker of ours that
// took a lease before the first read has its record in the second), each within
// CallTimeout. ours holds the ids of this application's workers (and undecodable
// records' keys, which are ours too).
func (c Check) read(ctx context.Context) (map[string]lease.Lease, map[string]bool, error) {
	lctx, cancel := context.WithTimeout(ctx, c.CallTimeout)
	t, err := c.Leases.ListLeases(lctx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("takeover: reading lease table %s: %w", c.Table, err)
	}
	mctx, cancel := context.WithTimeout(ctx, c.CallTimeout)
	m, err := c.Meta.ReadMeta(mctx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("takeover: reading the metadata table: %w", err)
	}
	ours := make(map[string]bool, len(m.Workers)+len(m.Corrupt))
	for _, w := range m.Workers {
		ours[w.WorkerID] = true
	}
	for _, ci := range m.Corrupt {
		ours[ci.Key] = true
	}
	leases := make(map[string]lease.Lease, len(t.Leases))
	for _, l := range t.Leases {
		leases[l.ShardID] = l
	}
	return leases, ours, nil
}

// foreignHeld returns the leases held by owners not in ours.
func foreignHeld(leases map[string]lease.Lease, ours map[string]bool) []lease.Lease {
	var out []lease.Lease
	for _, l := range leases {
		if l.Owner != "" && !ours[l.Owner] {
			out = append(out, l)
		}
	}
	return out
}

// moved returns the leases held by a foreign owner at the second read whose counter is
// not what the first read saw, sorted by owner and shard. A lease freed in between is
// not one: a fleet that is shutting down releases its leases.
func moved(first, second map[string]lease.Lease, ours map[string]bool) []Renewal {
	var out []Renewal
	for _, l := range foreignHeld(second, ours) {
		before, ok := first[l.ShardID]
		switch {
		case !ok:
			out = append(out, Renewal{ShardID: l.ShardID, Owner: l.Owner, From: -1, To: l.Epoch})
		case before.Epoch != l.Epoch:
			out = append(out, Renewal{ShardID: l.ShardID, Owner: l.Owner, From: before.Epoch, To: l.Epoch})
		}
	}
	slices.SortFunc(out, func(a, b Renewal) int {
		return cmp.Or(strings.Compare(a.Owner, b.Owner), strings.Compare(a.ShardID, b.ShardID))
	})
	return out
}
