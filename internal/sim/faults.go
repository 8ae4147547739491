package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Errors the fault wrappers return.
var (
	errKilled    = errors.New("sim: process killed")
	errCut       = errors.New("sim: network cut")
	errTransient = errors.New("sim: transient error (request not applied)")
	errLost      = errors.New("sim: response lost (request applied)")
	errThrottled = errors.New("sim: ProvisionedThroughputExceededException")
)

// proc is one worker process (one incarnation of a worker id): the state its faults
// act on. Its store and stream calls, its clock's timers and its processor all go
// through it.
type proc struct {
	id  string
	inc int
	sim *Sim

	mu      sync.Mutex
	rng     *rand.Rand
	resume  chan struct{} // non-nil while paused; closed when the pause ends
	cutTill time.Time
	kill    chan struct{} // closed when killed
	killed  bool
}

func newProc(s *Sim, id string, inc int) *proc {
	return &proc{id: id, inc: inc, sim: s, kill: make(chan struct{}),
		rng: rand.New(rand.NewPCG(s.seed, uint64(inc)<<32^hashString(id)))}
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func (p *proc) float() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64()
}

func (p *proc) between(lo, hi time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return lo + time.Duration(p.rng.Int64N(int64(hi-lo)+1))
}

// pauseFor freezes the process for d: calls block, timers do not fire, the processor
// blocks. A pause while paused extends nothing (the scenario never overlaps them).
func (p *proc) pauseFor(d time.Duration) {
	p.mu.Lock()
	if p.resume != nil || p.killed {
		p.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	p.resume = ch
	p.mu.Unlock()
	time.AfterFunc(d, func() { p.unpause(ch) })
}

func (p *proc) unpause(ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == ch {
		p.resume = nil
		close(ch)
	}
}

func (p *proc) cutFor(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutTill = time.Now().Add(d)
}

func (p *proc) doKill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.killed {
		p.killed = true
		close(p.kill)
	}
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

func (p *proc) state() (paused, cut, killed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resume != nil, time.Now().Before(p.cutTill), p.killed
}

// waitResume blocks while the process is paused. It returns errKilled when the process
// is killed, and ctx's error when ctx ends first (ctx may be nil).
func (p *proc) waitResume(ctx context.Context) (waited bool, err error) {
	for {
		p.mu.Lock()
		r, killed := p.resume, p.killed
		p.mu.Unlock()
		if killed {
			return waited, errKilled
		}
		if r == nil {
			return waited, nil
		}
		waited = true
		var done <-chan struct{}
		if ctx != nil {
			done = ctx.Done()
		}
		select {
		case <-r:
		case <-p.kill:
		case <-done:
			return waited, ctx.Err()
		}
	}
}

// sleep waits d, then for the end of a pause. It returns errKilled or ctx's error.
func (p *proc) sleep(ctx context.Context, d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.kill:
			return errKilled
		case <-t.C:
		}
	}
	_, err := p.waitResume(ctx)
	return err
}

// clk is the clock a worker process sees: real (virtual) time whose timers do not fire
// while the process is paused.
type clk struct{ p *proc }

func (c clk) Now() time.Time { return time.Now() }

func (c clk) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	time.AfterFunc(d, func() {
		_, _ = c.p.waitResume(nil)
		ch <- time.Now()
	})
	return ch
}

// plan is what the fault injector does to one call.
type plan struct {
	latency time.Duration
	fail    error // returned before applying
	hang    bool  // block until ctx ends
	lost    bool  // apply, then return errLost
	refused bool  // apply, then return lease.ErrConflict (the SDK's retry failed the condition)
	// lateApply: a write whose caller gave up (ctx ended) is applied anyway.
	lateApply bool
}

// latency draws a long-tailed latency: mostly milliseconds, sometimes seconds, rarely
// above LeaseDuration/5 and up to 15s.
func (p *proc) latency(faulty bool) time.Duration {
	x := p.float()
	switch {
	case !faulty || x < 0.85:
		return p.between(500*time.Microsecond, 15*time.Millisecond)
	case x < 0.96:
		return p.between(15*time.Millisecond, 400*time.Millisecond)
	case x < 0.993:
		return p.between(400*time.Millisecond, 2*time.Second)
	}
	return p.between(2*time.Second, 15*time.Second)
}

// draw plans one call. write: the call changes state; cond: it is a conditional write
// on a lease (a lost retry surfaces as a conflict).
func (p *proc) draw(write, cond, isStream bool) plan {
	faulty := p.sim.faulty()
	pl := plan{latency: p.latency(faulty)}
	if !faulty {
		return pl
	}
	x := p.float()
	switch {
	case x < 0.02:
		pl.fail = errTransient
	case x < 0.04:
		if isStream {
			pl.fail = fmt.Errorf("%w: %w", errThrottled, stream.ErrThrottled)
		} else {
			pl.fail = errThrottled
		}
	case p.sim.sc.Hangs && (x < 0.041 || !isStream && x < 0.045):
		pl.hang = true
	case write && x < 0.065:
		pl.lost = true
	case cond && x < 0.075:
		pl.refused = true
	}
	pl.lateApply = write && p.float() < 0.4
	return pl
}

// call runs one store or stream call of the process through its faults. f applies the
// call on the shared stores.
func call[T any](ctx context.Context, p *proc, write, cond, isStream bool, f func(context.Context) (T, error)) (T, error) {
	var zero T
	if _, err := p.waitResume(ctx); err != nil {
		return zero, err
	}
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if _, cut, _ := p.state(); cut {
		// A cut connection fails at once, or hangs until the caller gives up or the
		// network is back.
		if p.float() < 0.5 {
			return zero, errCut
		}
		p.mu.Lock()
		left := time.Until(p.cutTill)
		p.mu.Unlock()
		_ = p.sleep(ctx, left)
		return zero, errCut
	}
	pl := p.draw(write, cond, isStream)
	if pl.fail != nil {
		if err := p.sleep(ctx, pl.latency); err != nil {
			return zero, err
		}
		return zero, pl.fail
	}
	if pl.hang {
		p.sim.fault(fmt.Sprintf("%s#%d: a call hangs until its context ends", p.id, p.inc), false)
		select {
		case <-ctx.Done():
		case <-p.kill:
			return zero, errKilled
		}
		if pl.lateApply {
			_, _ = f(context.WithoutCancel(ctx))
		}
		return zero, ctx.Err()
	}
	// The request reaches the store after part of the latency, the answer comes back
	// after the rest.
	pre := time.Duration(p.float() * float64(pl.latency))
	if err := p.sleep(ctx, pre); err != nil {
		if errors.Is(err, errKilled) {
			return zero, err
		}
		if pl.lateApply {
			_, _ = f(context.WithoutCancel(ctx))
		}
		return zero, err
	}
	if _, cut, killed := p.state(); killed || cut {
		if killed {
			return zero, errKilled
		}
		return zero, errCut
	}
	v, err := f(context.WithoutCancel(ctx))
	if serr := p.sleep(ctx, pl.latency-pre); serr != nil {
		return zero, serr
	}
	if err == nil && pl.lost {
		return zero, errLost
	}
	if err == nil && pl.refused {
		return zero, fmt.Errorf("sim: retried write refused: %w", lease.ErrConflict)
	}
	return v, err
}

// faultLeases is one process's view of the lease table.
type faultLeases struct {
	p     *proc
	inner consumer.LeaseStore
}

func (s faultLeases) ListLeases(ctx context.Context) (lease.Table, error) {
	return call(ctx, s.p, false, false, false, func(c context.Context) (lease.Table, error) { return s.inner.ListLeases(c) })
}

func (s faultLeases) GetLease(ctx context.Context, id string) (lease.Lease, error) {
	return call(ctx, s.p, false, false, false, func(c context.Context) (lease.Lease, error) { return s.inner.GetLease(c, id) })
}

func (s faultLeases) CreateLease(ctx context.Context, l lease.Lease) error {
	_, err := call(ctx, s.p, true, false, false, func(c context.Context) (struct{}, error) { return struct{}{}, s.inner.CreateLease(c, l) })
	return err
}

func (s faultLeases) TakeLease(ctx context.Context, o lease.Lease, owner string) (lease.Lease, error) {
	return call(ctx, s.p, true, true, false, func(c context.Context) (lease.Lease, error) { return s.inner.TakeLease(c, o, owner) })
}

func (s faultLeases) ReleaseLease(ctx context.Context, h lease.Lease, cp lease.ExtendedSequenceNumber) error {
	_, err := call(ctx, s.p, true, true, false, func(c context.Context) (struct{}, error) {
		return struct{}{}, s.inner.ReleaseLease(c, h, cp)
	})
	return err
}

func (s faultLeases) Checkpoint(ctx context.Context, h lease.Lease, cp lease.ExtendedSequenceNumber, behind int64) error {
	_, err := call(ctx, s.p, true, true, false, func(c context.Context) (struct{}, error) {
		return struct{}{}, s.inner.Checkpoint(c, h, cp, behind)
	})
	return err
}

func (s faultLeases) DeleteLease(ctx context.Context, o lease.Lease) error {
	_, err := call(ctx, s.p, true, true, false, func(c context.Context) (struct{}, error) {
		return struct{}{}, s.inner.DeleteLease(c, o)
	})
	return err
}

// faultMeta is one process's view of the metadata table.
type faultMeta struct {
	p     *proc
	inner consumer.MetaStore
}

func (s faultMeta) ReadMeta(ctx context.Context) (lease.Meta, error) {
	return call(ctx, s.p, false, false, false, func(c context.Context) (lease.Meta, error) { return s.inner.ReadMeta(c) })
}

func (s faultMeta) ReadMetaItems(ctx context.Context, ids []string, consistent bool) (lease.Meta, error) {
	return call(ctx, s.p, false, false, false, func(c context.Context) (lease.Meta, error) { return s.inner.ReadMetaItems(c, ids, consistent) })
}

func (s faultMeta) PutWorker(ctx context.Context, w lease.WorkerRecord) error {
	_, err := call(ctx, s.p, true, false, false, func(c context.Context) (struct{}, error) { return struct{}{}, s.inner.PutWorker(c, w) })
	return err
}

func (s faultMeta) ClaimCoordinator(ctx context.Context, id string, o *lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	return call(ctx, s.p, true, true, false, func(c context.Context) (lease.CoordinatorRecord, error) {
		return s.inner.ClaimCoordinator(c, id, o)
	})
}

func (s faultMeta) UpdateCoordinator(ctx context.Context, r lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	return call(ctx, s.p, true, true, false, func(c context.Context) (lease.CoordinatorRecord, error) {
		return s.inner.UpdateCoordinator(c, r)
	})
}

func (s faultMeta) ResignCoordinator(ctx context.Context, r lease.CoordinatorRecord) error {
	_, err := call(ctx, s.p, true, true, false, func(c context.Context) (struct{}, error) {
		return struct{}{}, s.inner.ResignCoordinator(c, r)
	})
	return err
}

func (s faultMeta) DeleteWorker(ctx context.Context, id string, heartbeat int64) error {
	_, err := call(ctx, s.p, true, true, false, func(c context.Context) (struct{}, error) {
		return struct{}{}, s.inner.DeleteWorker(c, id, heartbeat)
	})
	return err
}

// faultStream is one process's view of the stream.
type faultStream struct {
	p     *proc
	inner consumer.Stream
}

func (s faultStream) ListShards(ctx context.Context) ([]stream.Shard, error) {
	return call(ctx, s.p, false, false, true, func(c context.Context) ([]stream.Shard, error) { return s.inner.ListShards(c) })
}

func (s faultStream) GetShardIterator(ctx context.Context, id string, pos stream.Position) (string, error) {
	return call(ctx, s.p, false, false, true, func(c context.Context) (string, error) { return s.inner.GetShardIterator(c, id, pos) })
}

func (s faultStream) GetRecords(ctx context.Context, it string, limit int) (stream.Batch, error) {
	return call(ctx, s.p, false, false, true, func(c context.Context) (stream.Batch, error) { return s.inner.GetRecords(c, it, limit) })
}
