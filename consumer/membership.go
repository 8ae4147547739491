package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// membership is this worker's view of the workers: every read of the metadata table goes
// through observe, which times it and hands what it shows to the liveness judgement (the
// promoted methods expired, expiredAfter, alive, liveCount and record). It is used by the
// control loop's goroutine only.
type membership struct {
	*liveness
	meta    MetaStore
	clock   clock.Clock
	timeout time.Duration
	corrupt *corruptLog
}

func newMembership(meta MetaStore, clk clock.Clock, leaseDuration, timeout time.Duration, corrupt *corruptLog) *membership {
	return &membership{liveness: newLiveness(leaseDuration), meta: meta, clock: clk, timeout: timeout, corrupt: corrupt}
}

// observe reads the metadata table and records what it shows of the workers' liveness,
// timed from the read's start to its return (see liveness.observe).
func (m *membership) observe(ctx context.Context) (lease.Meta, error) {
	start := m.clock.Now()
	rctx, cancel := context.WithTimeout(ctx, m.timeout)
	meta, err := m.meta.ReadMeta(rctx)
	cancel()
	if err != nil {
		return lease.Meta{}, err
	}
	m.liveness.observe(start, m.clock.Now(), meta.Workers)
	m.corrupt.report(meta.Corrupt)
	return meta, nil
}

// corruptLog logs each corrupt item once; such items are skipped, never fatal. It is
// shared by the parts of the control loop, on its goroutine.
type corruptLog struct {
	log  *slog.Logger
	seen map[string]bool
}

func newCorruptLog(log *slog.Logger) *corruptLog {
	return &corruptLog{log: log, seen: make(map[string]bool)}
}

func (c *corruptLog) report(items []lease.CorruptItem) {
	for _, it := range items {
		if key := it.String(); !c.seen[key] {
			c.seen[key] = true
			c.log.Error("skipping a corrupt item; fix or delete it", "item", it.Key, "reason", it.Reason)
		}
	}
}
