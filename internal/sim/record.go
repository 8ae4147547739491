package sim

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// recorder appends to the Log. Its lock also orders store writes with deliveries: a
// write is applied and stamped under it, so a stamp's Seq is the write's true place.
type recorder struct {
	mu  sync.Mutex
	t0  time.Time
	seq int64
	log *Log
}

// stampLocked returns the next stamp; r.mu is held.
func (r *recorder) stampLocked() Stamp {
	r.seq++
	return Stamp{At: time.Since(r.t0), Seq: r.seq}
}

func (r *recorder) stamp() Stamp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stampLocked()
}

func (r *recorder) add(f func(st Stamp, l *Log)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r.stampLocked(), r.log)
}

// recLeases is the shared lease table: memstore with every applied write recorded.
// Faults are injected above it, per process.
type recLeases struct {
	inner *memstore.Leases
	r     *recorder
}

var _ consumer.LeaseStore = (*recLeases)(nil)

func (s *recLeases) ListLeases(ctx context.Context) (lease.Table, error) {
	return s.inner.ListLeases(ctx)
}

func (s *recLeases) GetLease(ctx context.Context, id string) (lease.Lease, error) {
	return s.inner.GetLease(ctx, id)
}

func (s *recLeases) CreateLease(ctx context.Context, l lease.Lease) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	err := s.inner.CreateLease(ctx, l)
	if err == nil {
		s.r.log.Writes = append(s.r.log.Writes, Write{Stamp: s.r.stampLocked(), Op: OpCreate, Shard: l.ShardID, Checkpoint: l.ExtendedSequenceNumber()})
	}
	return err
}

func (s *recLeases) TakeLease(ctx context.Context, o lease.Lease, owner string) (lease.Lease, error) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	l, err := s.inner.TakeLease(ctx, o, owner)
	if err == nil {
		s.r.log.Writes = append(s.r.log.Writes, Write{Stamp: s.r.stampLocked(), Op: OpTake, Shard: l.ShardID,
			Owner: owner, Counter: l.Epoch, Checkpoint: l.ExtendedSequenceNumber()})
	}
	return l, err
}

func (s *recLeases) ReleaseLease(ctx context.Context, h lease.Lease, cp lease.ExtendedSequenceNumber) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	err := s.inner.ReleaseLease(ctx, h, cp)
	if err == nil {
		s.r.log.Writes = append(s.r.log.Writes, Write{Stamp: s.r.stampLocked(), Op: OpRelease, Shard: h.ShardID,
			Owner: h.Owner, Counter: h.Epoch + 1, Checkpoint: cp})
	}
	return err
}

func (s *recLeases) Checkpoint(ctx context.Context, h lease.Lease, cp lease.ExtendedSequenceNumber, behind int64) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	err := s.inner.Checkpoint(ctx, h, cp, behind)
	if err == nil {
		s.r.log.Writes = append(s.r.log.Writes, Write{Stamp: s.r.stampLocked(), Op: OpCheckpoint, Shard: h.ShardID,
			Owner: h.Owner, Counter: h.Epoch, Checkpoint: cp})
	}
	return err
}

func (s *recLeases) DeleteLease(ctx context.Context, o lease.Lease) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	err := s.inner.DeleteLease(ctx, o)
	if err == nil {
		s.r.log.Writes = append(s.r.log.Writes, Write{Stamp: s.r.stampLocked(), Op: OpDelete, Shard: o.ShardID,
			Owner: o.Owner, Counter: o.Epoch, Checkpoint: o.ExtendedSequenceNumber()})
	}
	return err
}

// processor is the application: it records the records it processed in every
// ProcessRecords call and misbehaves now and then, as applications do. A call that
// fails before processing anything records nothing; a call that processed records
// (and tried to checkpoint them) and then fails records them as a failed delivery: the
// checkpoint may have been applied, so the next owner may rightly never see them again.
type processor struct {
	p     *proc
	shard string
	epoch int64
	last  string // last record of the last successful batch
}

var errApp = errors.New("sim: application error")

func (pr *processor) Initialize(ctx context.Context, in consumer.InitializeInput) error {
	if _, err := pr.p.waitResume(ctx); err != nil {
		return err
	}
	pr.epoch = in.Epoch
	if pr.p.sim.faulty() && pr.p.float() < 0.02 {
		return errApp
	}
	return nil
}

func (pr *processor) ProcessRecords(ctx context.Context, in consumer.ProcessRecordsInput) error {
	call := pr.p.sim.rec.stamp()
	paused, err := pr.p.waitResume(ctx)
	if err != nil {
		return err
	}
	st := pr.p.sim.rec.stamp()
	if _, _, killed := pr.p.state(); killed {
		return errKilled
	}
	faulty := pr.p.sim.faulty()
	x := pr.p.float()
	recs := in.Records
	last := recs[len(recs)-1].SequenceNumber
	var ret error
	switch {
	case faulty && x < 0.04:
		return errApp // fails before processing anything: the batch is retried
	case faulty && x < 0.08:
		// Processes and checkpoints half of the batch, then fails: the batch is retried.
		recs = recs[:len(recs)/2+1]
		_ = in.Checkpointer.Checkpoint(ctx, recs[len(recs)-1].SequenceNumber)
		ret = errApp
	case x < 0.15:
		// Does not checkpoint this batch.
	default:
		if err := in.Checkpointer.Checkpoint(ctx, last); err != nil {
			switch {
			case errors.Is(err, consumer.ErrLeaseLost) && pr.p.float() < 0.7:
				ret = err
			case !errors.Is(err, consumer.ErrLeaseLost) && pr.p.float() < 0.5:
				ret = err
			}
		}
	}
	seqs := make([]string, len(recs))
	for i, r := range recs {
		seqs[i] = r.SequenceNumber
	}
	pr.p.sim.rec.add(func(_ Stamp, l *Log) {
		l.Deliveries = append(l.Deliveries, Delivery{Stamp: st, Worker: pr.p.id, Inc: pr.p.inc, Shard: in.ShardID,
			Epoch: in.Epoch, Seqs: seqs, Paused: paused, Failed: ret != nil, Call: call})
	})
	if ret == nil {
		pr.last = last
	}
	return ret
}

func (pr *processor) ShardEnded(ctx context.Context, cp consumer.Checkpointer) error {
	if _, err := pr.p.waitResume(ctx); err != nil {
		return err
	}
	if pr.p.sim.faulty() && pr.p.float() < 0.03 {
		return errApp
	}
	if pr.last != "" && pr.p.float() < 0.5 {
		_ = cp.Checkpoint(ctx, pr.last)
	}
	return nil
}

func (pr *processor) ShutdownRequested(ctx context.Context, cp consumer.Checkpointer) error {
	if _, err := pr.p.waitResume(ctx); err != nil {
		return err
	}
	if pr.last != "" {
		return cp.Checkpoint(ctx, pr.last)
	}
	return nil
}

func (pr *processor) LeaseLost(ctx context.Context) {}
