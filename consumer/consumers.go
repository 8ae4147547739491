package consumer

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// consumerSet is the worker's running shard consumers, one per lease it processes. Only
// the control loop starts and forgets consumers; stopAll (fencing) may run on any
// goroutine. Consumers report their end on exits.
type consumerSet struct {
	env     *consumerEnv
	factory ProcessorFactory
	log     *slog.Logger
	// ctx is the parent of every consumer's context (see open).
	ctx context.Context

	mu      sync.Mutex
	byShard map[string]*shardConsumer
	count   atomic.Int64
}

func newConsumerSet(env *consumerEnv, factory ProcessorFactory, log *slog.Logger) *consumerSet {
	return &consumerSet{env: env, factory: factory, log: log, byShard: make(map[string]*shardConsumer)}
}

// open makes the parent context of the consumers: it outlives ctx, so that consumers can
// drain during shutdown, and ends when the returned function is called (a hard stop).
func (s *consumerSet) open(ctx context.Context) (hardStop context.CancelFunc) {
	var cancel context.CancelFunc
	s.ctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
	return cancel
}

// exits receives every consumer's end; the control loop reads it.
func (s *consumerSet) exits() <-chan consumerExit { return s.env.exits }

// start begins processing a lease just taken, in the tenure's current lapse generation.
func (s *consumerSet) start(l lease.Lease) {
	ctx, cancel := context.WithCancel(s.ctx)
	c := &shardConsumer{
		env:    s.env,
		lease:  l,
		cp:     newCheckpointer(s.env.leases, l, s.env.hooks, s.env.clock, s.env.cfg.callTimeout(), s.env.cfg.CheckpointInterval),
		lapses: s.env.tenure.generation(),
		proc:   s.factory(l.ShardID),
		log:    s.log.With("shard", l.ShardID, "epoch", l.Epoch),
		stopCh: make(chan stopKind, 1),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	s.mu.Lock()
	s.byShard[l.ShardID] = c
	s.count.Store(int64(len(s.byShard)))
	s.mu.Unlock()
	s.env.hooks.leaseTaken(l.ShardID, l.Epoch)
	c.log.Info("lease taken", "checkpoint", l.Checkpoint)
	go c.run(ctx)
}

// forget removes the consumer that reported e, if it is still the one registered for
// its shard.
func (s *consumerSet) forget(e consumerExit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.byShard[e.lease.ShardID]; ok && c.lease.Epoch == e.lease.Epoch {
		delete(s.byShard, e.lease.ShardID)
		c.cancel()
	}
	s.count.Store(int64(len(s.byShard)))
}

// running reports whether a consumer runs shardID.
func (s *consumerSet) running(shardID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byShard[shardID] != nil
}

// len returns how many consumers run; it is safe on any goroutine.
func (s *consumerSet) len() int { return int(s.count.Load()) }

// all returns the running consumers.
func (s *consumerSet) all() []*shardConsumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*shardConsumer, 0, len(s.byShard))
	for _, c := range s.byShard {
		out = append(out, c)
	}
	return out
}

// active returns the consumers that are not being released.
func (s *consumerSet) active() []*shardConsumer {
	all := s.all()
	out := all[:0]
	for _, c := range all {
		if !c.releasing {
			out = append(out, c)
		}
	}
	return out
}

// shardIDs returns the shards being run, sorted.
func (s *consumerSet) shardIDs() []string {
	s.mu.Lock()
	ids := make([]string, 0, len(s.byShard))
	for id := range s.byShard {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Strings(ids)
	return ids
}

// stoppedIDs returns the shards whose consumer FailureStop stopped, sorted.
func (s *consumerSet) stoppedIDs() []string {
	var ids []string
	for _, c := range s.all() {
		if c.stopped.Load() {
			ids = append(ids, c.lease.ShardID)
		}
	}
	sort.Strings(ids)
	return ids
}

// stopAll asks every consumer that has not ended to stop for reason k and returns how
// many it asked.
func (s *consumerSet) stopAll(k stopKind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.byShard {
		select {
		case <-c.done:
			continue
		default:
		}
		c.requestStop(k)
		n++
	}
	return n
}
