package sim

import (
	"cmp"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Stamp places an event in the simulation: At is virtual time since the simulation
// began, Seq a global order. Events that share an instant are ordered by Seq; a store
// write takes its Seq under the same lock as it is applied, and a delivery takes its Seq
// when ProcessRecords is called.
type Stamp struct {
	At  time.Duration
	Seq int64
}

// Before reports whether s happened before o.
func (s Stamp) Before(o Stamp) bool { return s.Seq < o.Seq }

// Delivery is one ProcessRecords call that processed records, stamped at its start.
// Seqs are the records it processed: the whole batch, or a prefix when the processor
// checkpointed part of the batch and then failed.
type Delivery struct {
	Stamp
	Worker string
	Inc    int // process incarnation of Worker (1 for its first process)
	Shard  string
	Epoch  int64 // ProcessRecordsInput.Epoch
	Seqs   []string
	// Paused is set when the call was made while the process was paused, so that its
	// stamp is the end of the pause: the worker decided to deliver before or during it.
	Paused bool
	// Call is when ProcessRecords was called: the moment the worker decided to deliver.
	Call Stamp
	// Failed is set when the call returned an error after processing Seqs (and trying
	// to checkpoint them): the worker retries the batch.
	Failed bool
}

// Write is one applied lease-table write: CreateLease ("create"), TakeLease ("take"),
// ReleaseLease ("release") or Checkpoint ("checkpoint"). Checkpoint is the checkpoint the
// item holds afterwards; for a release without a checkpoint it is zero.
type Write struct {
	Stamp
	Op         string
	Shard      string
	Owner      string // new owner for a take; the writer for release and checkpoint
	Counter    int64  // counter after the write
	Checkpoint lease.ExtendedSequenceNumber
}

// Write ops.
const (
	OpCreate     = "create"
	OpTake       = "take"
	OpRelease    = "release"
	OpCheckpoint = "checkpoint"
	OpDelete     = "delete" // a finished lease removed by the coordinator's cleanup
)

// Produced is one record put on the stream.
type Produced struct {
	Stamp
	Shard       string
	Seq         string
	Arrival     time.Duration // ApproximateArrivalTimestamp, since the simulation began
	BeforeStart bool          // put before the first worker started
}

// ShardInfo is a shard of the stream with its parents.
type ShardInfo struct {
	ID      string
	Parents []string
}

// Trim is a closed shard removed from the stream (retention passed).
type Trim struct {
	Stamp
	Shard string
}

// Sample is the lease table and the workers' own view, taken once a (virtual) second.
type Sample struct {
	Stamp
	Owners map[string]string // shard -> owner, for owned leases
	Open   []string          // open shards of the stream
	// Ready are the closed shards whose leases have not finished while their parents
	// have: the shards a worker must read before their children can be.
	Ready   []string
	Workers []WorkerSample // every worker process that is running (not stopped)
}

// WorkerSample is one worker as seen by a sample.
type WorkerSample struct {
	ID  string
	Inc int
	// Healthy is set when the process runs freely: not killed, paused, cut off or
	// shutting down.
	Healthy bool
	Leases  []string // Status().Leases
}

// Fault is a scenario event, for reports.
type Fault struct {
	Stamp
	What string
}

// Log is everything a simulation recorded. Checkers are pure functions of it.
type Log struct {
	Seed          uint64
	LeaseDuration time.Duration
	PollInterval  time.Duration
	Cap           int
	// Position is the workers' InitialPosition; InitialTimestamp (since the simulation
	// began) is set for AT_TIMESTAMP.
	Position         string
	InitialTimestamp time.Duration
	// Hangs is set when calls could hang until their context ended.
	Hangs bool
	// FirstStart is when the first worker started.
	FirstStart time.Duration
	// RecordedStart is the application's start time as recorded in the coordinator item,
	// when the library records one.
	RecordedStart *time.Duration
	// LastFault is when the last fault ended; End when the workers were told to stop.
	LastFault time.Duration
	End       time.Duration

	Shards     map[string]ShardInfo
	Deliveries []Delivery
	Writes     []Write
	Produced   []Produced
	Trims      []Trim
	Samples    []Sample
	Faults     []Fault
}

// Violation is one broken invariant.
type Violation struct {
	Kind  string
	At    time.Duration
	Shard string
	Msg   string
}

func (v Violation) String() string {
	return fmt.Sprintf("[%s] t=%s shard=%s: %s", v.Kind, fmtDur(v.At), v.Shard, v.Msg)
}

func fmtDur(d time.Duration) string { return d.Round(time.Millisecond).String() }

// Violation kinds.
const (
	KindExclusive      = "exclusive"
	KindExclusivePause = "exclusive-pause"
	KindAtLeastOnce    = "at-least-once"
	KindCheckpointBack = "checkpoint-backwards"
	KindOrder          = "order"
	KindChildFirst     = "child-before-parent"
	KindBeforeStart    = "before-initial-position"
	KindConvergence    = "convergence"
	KindOrphan         = "orphan"
)

// cmpSeq compares two sequence numbers numerically.
func cmpSeq(a, b string) int {
	x, okx := new(big.Int).SetString(a, 10)
	y, oky := new(big.Int).SetString(b, 10)
	if !okx || !oky {
		return strings.Compare(a, b)
	}
	return x.Cmp(y)
}

// cmpCheckpoint orders checkpoints: the initial positions, then sequence numbers (with
// their sub-sequence numbers) as lease.ExtendedSequenceNumber.Compare orders them, then
// SHARD_END.
func cmpCheckpoint(a, b lease.ExtendedSequenceNumber) int {
	ra, rb := cpRank(a.SequenceNumber), cpRank(b.SequenceNumber)
	if ra != rb {
		return ra - rb
	}
	if ra == 1 {
		if c, ok := a.Compare(b); ok {
			return c
		}
		return cmp.Or(strings.Compare(a.SequenceNumber, b.SequenceNumber), cmp.Compare(a.SubSequenceNumber, b.SubSequenceNumber))
	}
	return 0
}

func cpRank(cp string) int {
	switch cp {
	case lease.TrimHorizon, lease.Latest, lease.AtTimestamp, "":
		return 0
	case lease.ShardEnd:
		return 2
	}
	return 1
}

// Timeline describes what the log holds for one shard, in order: lease writes,
// deliveries and trims, for reading a violation by hand.
func (l *Log) Timeline(shard string) []string {
	type ev struct {
		Stamp
		s string
	}
	var evs []ev
	for _, w := range l.Writes {
		if w.Shard == shard {
			cp := "(unchanged)"
			if !w.Checkpoint.IsZero() {
				cp = trimCheckpoint(w.Checkpoint)
			}
			evs = append(evs, ev{w.Stamp, fmt.Sprintf("%s owner=%s counter=%d checkpoint=%s", w.Op, w.Owner, w.Counter, cp)})
		}
	}
	for _, d := range l.Deliveries {
		if d.Shard == shard {
			p := ""
			if d.Paused {
				p = " (called while paused)"
			}
			if d.Failed {
				p += " (the call then failed)"
			}
			evs = append(evs, ev{d.Stamp, fmt.Sprintf("deliver %s#%d epoch=%d %s%s", d.Worker, d.Inc, d.Epoch, seqRange(d.Seqs), p)})
		}
	}
	for _, t := range l.Trims {
		if t.Shard == shard {
			evs = append(evs, ev{t.Stamp, "trimmed"})
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("t=%s %s", fmtDur(e.At), e.s)
	}
	return out
}
