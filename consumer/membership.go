package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// membership is this worker's view of the workers. Every read of the metadata table goes
// through it: it times each read and hands what it shows to the liveness judgement (the
// promoted methods expired, alive, liveCount, dead, watch and record).
//
// The coordinator reads the whole table (observe) and publishes what it judged in the
// coordinator item: the membership view (lease.CoordinatorRecord.DeadWorkers). The other
// workers read only that item, eventually consistent (readView), and the whole table only
// while the view stalls: to judge, as the coordinator would, whether the role may be
// claimed, and so that the worker that claims it has watched every other worker since the
// coordinator stopped (workers that died with the coordinator are not judged a lease
// duration later). It is used by the control loop's goroutine only.
type membership struct {
	*liveness
	meta    MetaStore
	clock   clock.Clock
	timeout time.Duration
	corrupt *corruptLog
	// stallAfter is how long the view's version may stay the same before the whole table
	// is read instead.
	stallAfter time.Duration

	coordinatorID string    // as last read
	version       int64     // of the coordinator item, as last read
	versionSeen   time.Time // when the read that first returned version started
}

func newMembership(meta MetaStore, clk clock.Clock, leaseDuration, timeout, stallAfter time.Duration, corrupt *corruptLog) *membership {
	return &membership{liveness: newLiveness(leaseDuration), meta: meta, clock: clk, timeout: timeout,
		stallAfter: stallAfter, corrupt: corrupt}
}

// observe reads the whole metadata table, strongly consistent, and records what it shows
// of the workers' liveness, timed from the read's start to its return (see
// liveness.observe). It returns the read and when it started.
func (m *membership) observe(ctx context.Context) (lease.Meta, time.Time, error) {
	return m.read(ctx, nil, true)
}

// observeWorkers reads the coordinator item and the records of ids, strongly consistent,
// and records what they show of those workers' liveness.
func (m *membership) observeWorkers(ctx context.Context, ids []string) (lease.Meta, time.Time, error) {
	return m.read(ctx, ids, true)
}

// readView reads the coordinator item, eventually consistent: the cheap read of workers
// that do not hold the coordinator role. When its version has not changed for stallAfter
// (the coordinator writes it on every pass), the whole table is read instead, strongly
// consistent, so that this worker can judge whether the coordinator expired.
func (m *membership) readView(ctx context.Context, self string) (lease.Meta, time.Time, error) {
	if !m.versionSeen.IsZero() && m.clock.Now().Sub(m.versionSeen) >= m.stallAfter {
		if id := m.coordinatorID; id != "" && id != self {
			return m.read(ctx, nil, true)
		}
	}
	return m.read(ctx, []string{}, false)
}

// readVersion reads the coordinator item's version, strongly consistent (0: no item).
func (m *membership) readVersion(ctx context.Context) (int64, error) {
	meta, _, err := m.read(ctx, []string{}, true)
	if err != nil || meta.Coordinator == nil {
		return 0, err
	}
	return meta.Coordinator.Version, nil
}

// read reads the whole table (ids nil) or the coordinator item and the records of ids,
// and records what it shows.
func (m *membership) read(ctx context.Context, ids []string, consistent bool) (lease.Meta, time.Time, error) {
	start := m.clock.Now()
	rctx, cancel := context.WithTimeout(ctx, m.timeout)
	var meta lease.Meta
	var err error
	if ids == nil {
		meta, err = m.meta.ReadMeta(rctx)
	} else {
		meta, err = m.meta.ReadMetaItems(rctx, ids, consistent)
	}
	cancel()
	if err != nil {
		return lease.Meta{}, start, err
	}
	end := m.clock.Now()
	if ids == nil || len(ids) > 0 {
		m.liveness.observeSome(start, end, ids, meta.Workers)
	}
	if rec := meta.Coordinator; rec != nil && ids != nil {
		m.liveness.sawInView(rec.CoordinatorID, rec.CoordinatorIncarnation, rec.CoordinatorHeartbeat, end)
	}
	if rec := meta.Coordinator; rec == nil {
		m.coordinatorID = ""
	} else {
		m.coordinatorID = rec.CoordinatorID
		if rec.Version != m.version || m.versionSeen.IsZero() {
			m.version, m.versionSeen = rec.Version, start
		}
	}
	m.corrupt.report(meta.Corrupt)
	return meta, start, nil
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
