package dashboard

import (
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/tableview"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Event kinds.
const (
	KindTake        = "take"        // a free lease taken, or one taken from a live worker
	KindRelease     = "release"     // a lease given up by its owner
	KindFailover    = "failover"    // a lease taken from a dead worker
	KindExpiry      = "expiry"      // a worker's heartbeat expired: the coordinator judged it dead
	KindWorker      = "worker"      // a worker joined, restarted, shut down cleanly or was removed
	KindReshard     = "reshard"     // new child shards appeared
	KindNewLeases   = "new-leases"  // leases created for shards without parents
	KindFinished    = "finished"    // shards read to their end
	KindDeleted     = "deleted"     // leases removed from the table
	KindCoordinator = "coordinator" // the coordinator item changed: holder, max leases, counts
	KindAlarm       = "alarm"       // the unowned-shards alarm was raised or cleared
)

// Event is one change seen between two successive snapshots. Lease events of one kind,
// worker and previous owner are grouped: Shards lists them.
type Event struct {
	Seq     int64    `json:"seq"`
	Time    string   `json:"time"`
	Kind    string   `json:"kind"`
	Worker  string   `json:"worker,omitempty"`
	From    string   `json:"from,omitempty"`
	Shards  []string `json:"shards,omitempty"`
	Message string   `json:"message"`
}

// Snapshot is one read of both tables. A table that could not be read is nil, and
// Errors says why.
type Snapshot struct {
	Time   time.Time         `json:"-"`
	TimeS  string            `json:"time"`
	Meta   *tableview.Meta   `json:"metadata"`
	Leases *tableview.Leases `json:"leases"`
	Errors []string          `json:"errors,omitempty"`
}

// Diff returns the events that lead from prev to next, in a fixed order: workers,
// coordinator, then leases. Parts of either snapshot that could not be read are not
// compared. Seq is left 0.
func Diff(prev, next Snapshot) []Event {
	at := next.TimeS
	var out []Event
	add := func(kind, worker, from, msg string, shards []string) {
		out = append(out, Event{Time: at, Kind: kind, Worker: worker, From: from, Shards: shards, Message: msg})
	}
	dead := deadWorkers(prev.Meta, next.Meta)
	if prev.Meta != nil && next.Meta != nil {
		diffWorkers(*prev.Meta, *next.Meta, next.Time, add)
		diffCoordinator(prev.Meta.Coordinator, next.Meta.Coordinator, add)
	}
	if prev.Leases != nil && next.Leases != nil {
		diffLeases(*prev.Leases, *next.Leases, dead, add)
	}
	return out
}

type addFunc func(kind, worker, from, msg string, shards []string)

// deadWorkers is every worker either snapshot shows dead: judged dead by the coordinator,
// shut down cleanly, or with its record removed.
func deadWorkers(prev, next *tableview.Meta) map[string]bool {
	dead := map[string]bool{}
	for _, m := range []*tableview.Meta{prev, next} {
		if m == nil {
			continue
		}
		maps.Copy(dead, judgedDead(*m))
		for _, w := range m.Workers {
			if w.State == gone {
				dead[w.WorkerID] = true
			}
		}
	}
	if prev != nil && next != nil {
		present := workersByID(*next)
		for _, w := range prev.Workers {
			if _, ok := present[w.WorkerID]; !ok {
				dead[w.WorkerID] = true
			}
		}
	}
	return dead
}

// gone is the state of a worker that shut down cleanly.
const gone = string(lease.WorkerGone)

func workersByID(m tableview.Meta) map[string]tableview.Worker {
	by := make(map[string]tableview.Worker, len(m.Workers))
	for _, w := range m.Workers {
		by[w.WorkerID] = w
	}
	return by
}

func judgedDead(m tableview.Meta) map[string]bool {
	dead := map[string]bool{}
	if m.Coordinator != nil {
		for _, id := range m.Coordinator.DeadWorkers {
			dead[id] = true
		}
	}
	return dead
}

func diffWorkers(prev, next tableview.Meta, now time.Time, add addFunc) {
	before, after := workersByID(prev), workersByID(next)
	wasDead, isDead := judgedDead(prev), judgedDead(next)
	for _, w := range next.Workers {
		p, existed := before[w.WorkerID]
		switch {
		case !existed:
			add(KindWorker, w.WorkerID, "", fmt.Sprintf("worker %s joined", w.WorkerID), nil)
		case p.Incarnation != w.Incarnation:
			add(KindWorker, w.WorkerID, "", fmt.Sprintf("worker %s restarted (new incarnation)", w.WorkerID), nil)
		case p.State != gone && w.State == gone:
			add(KindWorker, w.WorkerID, "", fmt.Sprintf("worker %s shut down cleanly", w.WorkerID), nil)
		}
		if isDead[w.WorkerID] && !wasDead[w.WorkerID] && w.State != gone {
			msg := fmt.Sprintf("worker %s expired: its heartbeat stopped", w.WorkerID)
			if !w.LastSeenTime.IsZero() && !now.IsZero() {
				msg += fmt.Sprintf(" (last seen %s ago)", now.Sub(w.LastSeenTime).Round(100*time.Millisecond))
			}
			add(KindExpiry, w.WorkerID, "", msg, nil)
		}
	}
	for _, p := range prev.Workers {
		if _, ok := after[p.WorkerID]; !ok {
			add(KindWorker, p.WorkerID, "", fmt.Sprintf("worker %s's record was removed", p.WorkerID), nil)
		}
	}
}

func diffCoordinator(prev, next *tableview.Coordinator, add addFunc) {
	if next == nil {
		return
	}
	if prev == nil {
		add(KindCoordinator, next.CoordinatorID, "", fmt.Sprintf("coordinator item created: %s holds the role (epoch %d)", orNone(next.CoordinatorID), next.Epoch), nil)
		prev = &tableview.Coordinator{}
	} else if prev.CoordinatorID != next.CoordinatorID || prev.Epoch != next.Epoch {
		add(KindCoordinator, next.CoordinatorID, prev.CoordinatorID, fmt.Sprintf("coordinator %s -> %s (epoch %d -> %d)",
			orNone(prev.CoordinatorID), orNone(next.CoordinatorID), prev.Epoch, next.Epoch), nil)
	}
	var changes []string
	for _, c := range []struct {
		what       string
		prev, next int
	}{
		{"max leases per worker", prev.MaxLeasesPerWorker, next.MaxLeasesPerWorker},
		{"target", prev.TargetLeasesPerWorker, next.TargetLeasesPerWorker},
		{"open shards", prev.ShardCount, next.ShardCount},
		{"workers", prev.WorkerCount, next.WorkerCount},
		{"live workers", prev.LiveWorkers, next.LiveWorkers},
	} {
		if c.prev != c.next {
			changes = append(changes, fmt.Sprintf("%s %d -> %d", c.what, c.prev, c.next))
		}
	}
	if len(changes) > 0 {
		add(KindCoordinator, next.CoordinatorID, "", strings.Join(changes, ", "), nil)
	}
	switch {
	case prev.UnownedShards == 0 && next.UnownedShards > 0:
		add(KindAlarm, "", "", fmt.Sprintf("ALARM: %d of %d shards are UNOWNED; run %d workers (or raise the cap %d)",
			next.UnownedShards, next.ShardCount, next.RecommendedWorkers, next.Cap), nil)
	case prev.UnownedShards > 0 && next.UnownedShards == 0:
		add(KindAlarm, "", "", "alarm cleared: every open shard may be owned", nil)
	}
}

func orNone(id string) string {
	if id == "" {
		return "(none)"
	}
	return id
}

// groupKey groups lease events.
type groupKey struct{ kind, worker, from string }

func diffLeases(prev, next tableview.Leases, dead map[string]bool, add addFunc) {
	before := make(map[string]tableview.LeaseRow, len(prev.Leases))
	for _, l := range prev.Leases {
		before[l.Shard] = l
	}
	groups := map[groupKey][]string{}
	var order []groupKey
	note := func(k groupKey, shard string) {
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], shard)
	}
	seen := make(map[string]bool, len(next.Leases))
	for _, n := range next.Leases {
		seen[n.Shard] = true
		p, existed := before[n.Shard]
		if !existed {
			kind := KindNewLeases
			if len(n.Parents) > 0 {
				kind = KindReshard
			}
			note(groupKey{kind: kind}, n.Shard)
			continue
		}
		switch {
		case p.Owner == n.Owner:
		case p.Owner == "":
			note(groupKey{KindTake, n.Owner, ""}, n.Shard)
		case n.Owner == "":
			note(groupKey{KindRelease, p.Owner, ""}, n.Shard)
		case dead[p.Owner]:
			note(groupKey{KindFailover, n.Owner, p.Owner}, n.Shard)
		default:
			note(groupKey{KindTake, n.Owner, p.Owner}, n.Shard)
		}
		if n.State == tableview.StateFinished && p.State != tableview.StateFinished {
			note(groupKey{KindFinished, n.Owner, ""}, n.Shard)
		}
	}
	for _, p := range prev.Leases {
		if !seen[p.Shard] {
			note(groupKey{kind: KindDeleted}, p.Shard)
		}
	}
	for _, k := range order {
		shards := groups[k]
		sort.Strings(shards)
		add(k.kind, k.worker, k.from, leaseMessage(k, shards), shards)
	}
}

func leaseMessage(k groupKey, shards []string) string {
	n := plural(len(shards), "shard")
	list := shardList(shards)
	switch k.kind {
	case KindReshard:
		return fmt.Sprintf("reshard: %s created (%s)", n, list)
	case KindNewLeases:
		return fmt.Sprintf("%s created (%s)", plural(len(shards), "lease"), list)
	case KindTake:
		if k.from != "" {
			return fmt.Sprintf("%s took %s from live worker %s (%s)", k.worker, n, k.from, list)
		}
		return fmt.Sprintf("%s took %s (%s)", k.worker, n, list)
	case KindRelease:
		return fmt.Sprintf("%s released %s (%s)", k.worker, n, list)
	case KindFailover:
		return fmt.Sprintf("failover: %s took %s of dead worker %s (%s)", k.worker, n, k.from, list)
	case KindFinished:
		return fmt.Sprintf("%s read to the end (%s)", n, list)
	}
	return fmt.Sprintf("%s removed (%s)", plural(len(shards), "lease"), list)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// shardList names up to 5 shards.
func shardList(shards []string) string {
	const show = 5
	if len(shards) <= show {
		return strings.Join(shards, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(shards[:show], ", "), len(shards)-show)
}
