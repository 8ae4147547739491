package harness

import (
	"context"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Sample is the lease table as read at one moment. At is taken after the read returned,
// so every value in it was stored at or before At.
type Sample struct {
	At     time.Time
	Leases []lease.Lease
}

// LeaseLister reads the lease table; *dynamostore.Store is one.
type LeaseLister interface {
	ListLeases(ctx context.Context) (lease.Table, error)
}

// Sampler reads the lease table every interval until its context ends.
type Sampler struct {
	store    LeaseLister
	interval time.Duration

	mu      sync.Mutex
	samples []Sample
	errors  int
}

// NewSampler returns a sampler; call Run.
func NewSampler(store LeaseLister, interval time.Duration) *Sampler {
	return &Sampler{store: store, interval: interval}
}

// Run samples until ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.SampleOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SampleOnce reads the table once; a failed read is counted, not fatal.
func (s *Sampler) SampleOnce(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	tab, err := s.store.ListLeases(rctx)
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			s.errors++
		}
		return
	}
	s.samples = append(s.samples, Sample{At: time.Now(), Leases: tab.Leases})
}

// Samples returns what was sampled so far and how many reads failed.
func (s *Sampler) Samples() ([]Sample, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.samples...), s.errors
}
