// Package tableview describes the lease and metadata tables as operators see them: the
// views kdsctl prints (and emits as JSON) and the dashboard serves. It only reshapes what
// a read of the tables returned; it reads nothing itself.
package tableview

import (
	"fmt"
	"sort"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Meta is the metadata table as kdsctl shows it (and its JSON output).
type Meta struct {
	Table       string       `json:"table"`
	Workers     []Worker     `json:"workers"`
	Coordinator *Coordinator `json:"coordinator"`
	Warnings    []string     `json:"warnings,omitempty"`
	Corrupt     []string     `json:"corrupt,omitempty"`
}

// Worker is one worker's record.
type Worker struct {
	WorkerID    string `json:"worker_id"`
	Incarnation string `json:"incarnation"`
	State       string `json:"state"`
	Heartbeat   int64  `json:"heartbeat"`
	LeasesHeld  int    `json:"leases_held"`
	LastSeen    string `json:"last_seen,omitempty"`
	StartedAt   string `json:"started_at,omitempty"`

	// LastSeenTime and StartedAtTime are LastSeen and StartedAt as times (zero: unknown).
	LastSeenTime  time.Time `json:"-"`
	StartedAtTime time.Time `json:"-"`
}

// Coordinator is the coordinator item.
type Coordinator struct {
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

	// UpdatedAtTime is UpdatedAt as a time (zero: unknown).
	UpdatedAtTime time.Time `json:"-"`
}

// NewMeta describes a read of metadata table table.
func NewMeta(table string, m lease.Meta) Meta {
	v := Meta{Table: table, Workers: []Worker{}}
	for _, w := range m.Workers {
		v.Workers = append(v.Workers, Worker{
			WorkerID: w.WorkerID, Incarnation: w.Incarnation, State: string(w.State), Heartbeat: w.Heartbeat,
			LeasesHeld: w.LeasesHeld, LastSeen: TimeJSON(w.LastSeen), StartedAt: TimeJSON(w.StartedAt),
			LastSeenTime: w.LastSeen, StartedAtTime: w.StartedAt,
		})
	}
	// The store sorts already; sorting here keeps the output's promise independent of it.
	sort.Slice(v.Workers, func(i, j int) bool { return v.Workers[i].WorkerID < v.Workers[j].WorkerID })
	if c := m.Coordinator; c != nil {
		v.Coordinator = &Coordinator{
			CoordinatorID: c.CoordinatorID, ShardCount: c.ShardCount, WorkerCount: c.WorkerCount,
			LiveWorkers: c.LiveWorkers, MaxLeasesPerWorker: c.MaxLeasesPerWorker,
			TargetLeasesPerWorker: c.TargetLeasesPerWorker, Cap: c.Cap, UnownedShards: c.UnownedShards,
			RecommendedWorkers: c.RecommendedWorkers, Epoch: c.Epoch, Version: c.Version,
			LeaseGeneration: c.LeaseGeneration, UpdatedAt: TimeJSON(c.UpdatedAt), UpdatedAtTime: c.UpdatedAt,
			DeadWorkers: []string{}, OwnedLeases: c.OwnedLeases, RecheckWorkers: append([]string{}, c.RecheckWorkers...),
			WaitingParents: c.WaitingParents,
		}
		for _, d := range c.DeadWorkers {
			v.Coordinator.DeadWorkers = append(v.Coordinator.DeadWorkers, d.WorkerID)
		}
		if c.UnownedShards > 0 {
			v.Warnings = append(v.Warnings, UnownedWarning(c))
		}
	}
	for _, ci := range m.Corrupt {
		v.Corrupt = append(v.Corrupt, ci.String())
	}
	return v
}

// UnownedWarning is the alarm raised while shards are unowned.
func UnownedWarning(c *lease.CoordinatorRecord) string {
	return fmt.Sprintf("%d of %d shards are UNOWNED: %d workers x cap %d leases cannot cover them; run %d workers (or raise the cap)",
		c.UnownedShards, c.ShardCount, c.WorkerCount, c.Cap, c.RecommendedWorkers)
}

// Lease states.
const (
	StateActive   = "active"
	StateWaiting  = "waiting for parent"
	StateFinished = "finished"
	StateUnowned  = "unowned"
)

// Leases is the lease table as kdsctl shows it (and its JSON output).
type Leases struct {
	Table   string       `json:"table"`
	Leases  []LeaseRow   `json:"leases"`
	Workers []WorkerLoad `json:"workers"`
	Summary LeaseSummary `json:"summary"`
	Corrupt []string     `json:"corrupt,omitempty"`
}

// LeaseRow is one lease.
type LeaseRow struct {
	Shard      string   `json:"shard"`
	Owner      string   `json:"owner"`
	State      string   `json:"state"`
	Epoch      int64    `json:"epoch"`
	Checkpoint string   `json:"checkpoint"`
	Parents    []string `json:"parents"`
	// MillisBehindLatest is the owner's lag at its last checkpoint; nil when unknown.
	MillisBehindLatest *int64 `json:"millis_behind_latest"`
}

// WorkerLoad is how many unfinished leases a worker owns.
type WorkerLoad struct {
	Worker string `json:"worker"`
	Leases int    `json:"leases"`
}

// LeaseSummary counts the leases by state.
type LeaseSummary struct {
	Total    int `json:"total"`
	Active   int `json:"active"`
	Unowned  int `json:"unowned"`
	Waiting  int `json:"waiting_for_parent"`
	Finished int `json:"finished"`
}

// LeaseState names what a lease is doing. A parent without a lease counts as finished
// (it aged out of the stream) and a corrupt one as unfinished, as the workers decide.
func LeaseState(l lease.Lease, idx lease.Index) string {
	switch {
	case l.Finished():
		return StateFinished
	case l.Owner != "":
		return StateActive
	case !idx.ParentsFinished(l):
		return StateWaiting
	}
	return StateUnowned
}

// NewLeases describes a read of lease table table, the leases sorted by shard.
func NewLeases(table string, t lease.Table) Leases {
	idx := t.Index()
	v := Leases{Table: table, Leases: []LeaseRow{}, Workers: []WorkerLoad{}}
	perWorker, byState := map[string]int{}, map[string]int{}
	for _, l := range t.Leases {
		st := LeaseState(l, idx)
		byState[st]++
		if l.Owner != "" && st != StateFinished {
			perWorker[l.Owner]++
		}
		row := LeaseRow{Shard: l.ShardID, Owner: l.Owner, State: st, Epoch: l.Epoch,
			Checkpoint: l.Checkpoint, Parents: l.ParentShardIDs}
		if LagKnown(l) {
			row.MillisBehindLatest = &l.MillisBehindLatest
		}
		if row.Parents == nil {
			row.Parents = []string{}
		}
		v.Leases = append(v.Leases, row)
	}
	sort.Slice(v.Leases, func(i, j int) bool { return v.Leases[i].Shard < v.Leases[j].Shard })
	for w, n := range perWorker {
		v.Workers = append(v.Workers, WorkerLoad{Worker: w, Leases: n})
	}
	sort.Slice(v.Workers, func(i, j int) bool { return v.Workers[i].Worker < v.Workers[j].Worker })
	v.Summary = LeaseSummary{Total: len(t.Leases), Active: byState[StateActive], Unowned: byState[StateUnowned],
		Waiting: byState[StateWaiting], Finished: byState[StateFinished]}
	for _, ci := range t.Corrupt {
		v.Corrupt = append(v.Corrupt, ci.String())
	}
	return v
}

// LagKnown reports whether l.MillisBehindLatest means something: the lease item carries
// it from the last checkpoint, and it is 0 before the first one (the checkpoint is still a
// starting position then) as well as meaningless once the shard is finished.
func LagKnown(l lease.Lease) bool {
	switch l.Checkpoint {
	case lease.TrimHorizon, lease.Latest, lease.AtTimestamp, lease.ShardEnd, "":
		return false
	}
	return true
}

// TimeJSON formats a time for JSON output, empty when unknown.
func TimeJSON(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
