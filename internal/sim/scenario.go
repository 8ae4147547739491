package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Scenario is what a seed decides before the simulation runs: the cluster, the
// workload and the fault schedule. Targets of faults (which worker, which shard) are
// drawn when the fault happens, from the scenario's own generator, against the state
// the schedule has produced so far, so they too follow from the seed.
type Scenario struct {
	Seed          uint64
	Workers       int
	Shards        int
	LeaseDuration time.Duration
	Position      string
	// InitialTimestamp is the AT_TIMESTAMP start, since the simulation began.
	InitialTimestamp time.Duration
	// PreStart is how long records are produced before the first worker starts.
	PreStart time.Duration
	// ProduceEvery is the producer's period.
	ProduceEvery time.Duration
	// FaultPhase is how long faults are drawn after the workers start; Quiet how long the
	// simulation runs after the last fault ended.
	FaultPhase time.Duration
	Quiet      time.Duration
	Events     []Event
	// Trims says whether closed shards age out (TrimShard) in this scenario.
	Trims bool
	// MaxOpen bounds the open shards resharding may reach.
	MaxOpen int
	// Hangs says whether calls may hang until their context ends (a third of the
	// scenarios: one hang without a deadline can stall a worker for good, which would
	// hide every other finding).
	Hangs bool
	// CleanupInterval, FinishedLeaseDelay and DeadWorkerDelay are the workers' cleanup
	// settings, short, so that finished leases and dead workers' records are deleted while
	// the scenario runs.
	CleanupInterval, FinishedLeaseDelay, DeadWorkerDelay time.Duration
	// CheckpointInterval coalesces the workers' checkpoint writes (0: none).
	CheckpointInterval time.Duration
	// ViewLag is how stale an eventually consistent read of the coordinator item may be
	// (each such read draws a lag up to it; 0: such reads are consistent).
	ViewLag time.Duration
	// MaxLeasesCap is the workers' MaxLeasesCap (0: the default).
	MaxLeasesCap int
}

// EventKind is a kind of scheduled fault.
type EventKind string

// Event kinds.
const (
	EvPause     EventKind = "pause"
	EvKill      EventKind = "kill"
	EvRestart   EventKind = "restart" // kill -9, then the same id again after Dur
	EvCut       EventKind = "cut"
	EvStop      EventKind = "stop"     // graceful stop, the same id again after Dur
	EvScaleUp   EventKind = "scale-up" // a new worker id
	EvScaleDown EventKind = "scale-down"
	EvReshard   EventKind = "reshard"
	EvTrim      EventKind = "trim"
)

// Event is one scheduled fault, At after the first worker started.
type Event struct {
	At   time.Duration
	Kind EventKind
	Dur  time.Duration
	Pick uint64 // chooses the target among the candidates at the time
}

func (e Event) String() string {
	s := fmt.Sprintf("%s@%s", e.Kind, e.At)
	if e.Dur > 0 {
		s += fmt.Sprintf("(%s)", e.Dur)
	}
	return s
}

// Size bounds a scenario; Small is the size CI runs.
type Size struct {
	MaxWorkers, MaxShards  int
	MinFault, MaxFault     time.Duration
	MinQuiet, MaxQuiet     time.Duration
	MinGap, MaxGap         time.Duration // between events
	MaxOpenShards          int
	ProduceMin, ProduceMax time.Duration
}

// Full is the size of `make sim`; Small the size of the default `go test`.
var (
	Full = Size{MaxWorkers: 6, MaxShards: 16, MinFault: 120 * time.Second, MaxFault: 240 * time.Second,
		MinQuiet: 90 * time.Second, MaxQuiet: 120 * time.Second, MinGap: 3 * time.Second, MaxGap: 20 * time.Second,
		MaxOpenShards: 32, ProduceMin: 100 * time.Millisecond, ProduceMax: 500 * time.Millisecond}
	Small = Size{MaxWorkers: 4, MaxShards: 6, MinFault: 90 * time.Second, MaxFault: 150 * time.Second,
		MinQuiet: 90 * time.Second, MaxQuiet: 100 * time.Second, MinGap: 4 * time.Second, MaxGap: 20 * time.Second,
		MaxOpenShards: 12, ProduceMin: 200 * time.Millisecond, ProduceMax: 600 * time.Millisecond}
)

func dur(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}

// Generate draws the scenario of a seed.
func Generate(seed uint64, size Size) Scenario {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	sc := Scenario{
		Seed:          seed,
		Workers:       2 + r.IntN(size.MaxWorkers-1),
		Shards:        2 + r.IntN(size.MaxShards-1),
		LeaseDuration: 10 * time.Second,
		PreStart:      dur(r, 5*time.Second, 20*time.Second).Round(time.Second),
		ProduceEvery:  dur(r, size.ProduceMin, size.ProduceMax).Round(time.Millisecond),
		FaultPhase:    dur(r, size.MinFault, size.MaxFault).Round(time.Second),
		Quiet:         dur(r, size.MinQuiet, size.MaxQuiet).Round(time.Second),
		Trims:         r.IntN(3) == 0,
		MaxOpen:       size.MaxOpenShards,
		Hangs:         r.IntN(3) == 0,
	}
	// Drawn from a stream of their own, so that every other draw of a seed stays the same.
	rc := rand.New(rand.NewPCG(seed, 0xc1ea))
	sc.CleanupInterval = dur(rc, time.Second, 20*time.Second).Round(time.Second)
	sc.FinishedLeaseDelay = dur(rc, time.Second, 30*time.Second).Round(time.Second)
	sc.DeadWorkerDelay = dur(rc, sc.LeaseDuration, 3*sc.LeaseDuration).Round(time.Second)
	if rc.IntN(2) == 0 {
		sc.CheckpointInterval = dur(rc, 100*time.Millisecond, 5*time.Second).Round(100 * time.Millisecond)
	}
	// One seed in three caps the leases per worker, mostly below what the shards need.
	if rp := rand.New(rand.NewPCG(seed, 0xcab)); rp.IntN(3) == 0 {
		sc.MaxLeasesCap = 1 + rp.IntN(max(1, sc.Shards/sc.Workers))
	}
	if rv := rand.New(rand.NewPCG(seed, 0x1a9)); rv.IntN(3) != 0 {
		sc.ViewLag = dur(rv, 100*time.Millisecond, 3*time.Second).Round(100 * time.Millisecond)
	}
	switch r.IntN(3) {
	case 0:
		sc.Position = lease.TrimHorizon
	case 1:
		sc.Position = lease.Latest
	default:
		sc.Position = lease.AtTimestamp
		// On a whole second (stored timestamps have millisecond precision), among the
		// records put before the start: in the past when the workers start (Kinesis
		// returns records before a future timestamp).
		sc.InitialTimestamp = dur(r, time.Second, sc.PreStart-time.Second).Truncate(time.Second) + time.Second
	}
	// Kinds weighted by how often they happen.
	kinds := []struct {
		k EventKind
		w int
	}{
		{EvPause, 5}, {EvKill, 2}, {EvRestart, 4}, {EvCut, 4}, {EvStop, 2},
		{EvScaleUp, 2}, {EvScaleDown, 2}, {EvReshard, 3}, {EvTrim, 2},
	}
	total := 0
	for _, k := range kinds {
		total += k.w
	}
	for at := dur(r, 5*time.Second, 15*time.Second); at < sc.FaultPhase; at += dur(r, size.MinGap, size.MaxGap) {
		n := r.IntN(total)
		var k EventKind
		for _, c := range kinds {
			if n < c.w {
				k = c.k
				break
			}
			n -= c.w
		}
		e := Event{At: at.Round(time.Millisecond), Kind: k, Pick: r.Uint64()}
		switch k {
		case EvPause:
			// Sometimes longer than the lease duration.
			switch x := r.IntN(10); {
			case x < 5:
				e.Dur = dur(r, time.Second, 5*time.Second)
			case x < 8:
				e.Dur = dur(r, 5*time.Second, 12*time.Second)
			default:
				e.Dur = dur(r, 12*time.Second, 30*time.Second)
			}
		case EvRestart:
			e.Dur = dur(r, 0, 20*time.Second)
		case EvCut:
			e.Dur = dur(r, 3*time.Second, 40*time.Second)
		case EvStop:
			e.Dur = dur(r, time.Second, 15*time.Second)
		case EvTrim:
			if !sc.Trims {
				continue
			}
		}
		sc.Events = append(sc.Events, e)
	}
	return sc
}

func (sc Scenario) String() string {
	var ev []string
	for _, e := range sc.Events {
		ev = append(ev, e.String())
	}
	s := fmt.Sprintf("seed %d: %d workers, %d shards, %s", sc.Seed, sc.Workers, sc.Shards, sc.Position)
	if sc.Position == lease.AtTimestamp {
		s += fmt.Sprintf(" t=%s", sc.InitialTimestamp)
	}
	if sc.MaxLeasesCap > 0 {
		s += fmt.Sprintf(", cap %d", sc.MaxLeasesCap)
	}
	return s + fmt.Sprintf(", pre-start %s, put every %s, faults %s, quiet %s, trims %v, hangs %v, cleanup every %s (finished leases after %s, dead workers after %s), checkpoint interval %s, view lag %s; events: %s",
		sc.PreStart, sc.ProduceEvery, sc.FaultPhase, sc.Quiet, sc.Trims, sc.Hangs,
		sc.CleanupInterval, sc.FinishedLeaseDelay, sc.DeadWorkerDelay, sc.CheckpointInterval, sc.ViewLag, strings.Join(ev, " "))
}
