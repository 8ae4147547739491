package memstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// CoordinatorKey is the key of the coordinator item, for PutCorrupt.
const CoordinatorKey = "_coordinator"

// Meta is an in-memory metadata table implementing consumer.MetaStore.
//
// Operation names for Calls and InjectError are the method names: "ReadMeta",
// "ReadMetaItems", "PutWorker", "DeleteWorker", "ClaimCoordinator", "UpdateCoordinator",
// "ResignCoordinator".
//
// It mirrors package dynamostore: a conditional write on an item that does not exist fails
// with lease.ErrConflict, arguments dynamostore rejects before sending a request are
// rejected here without counting a call, and times come back in UTC.
type Meta struct {
	// Now stamps the coordinator record's UpdatedAt on creation and update. NewMeta sets it
	// to time.Now; set it before the store is shared.
	Now func() time.Time
	// Stale, when set, makes eventually consistent reads (ReadMetaItems) return the
	// coordinator record as it was Stale() before Now, as a DynamoDB replica that has not
	// yet applied the latest writes would; nil: such reads are consistent. Set it before
	// the store is shared.
	Stale func() time.Duration

	faults

	mu          sync.Mutex
	workers     map[string]lease.WorkerRecord
	coordinator *lease.CoordinatorRecord
	// history holds the last coordinator records with the times they were written, for
	// stale reads.
	history []versionAt
	corrupt map[string]string // key -> reason; shadows the worker or coordinator item
}

type versionAt struct {
	at  time.Time
	rec *lease.CoordinatorRecord // nil: absent or corrupt
}

// staleHistory bounds the coordinator records kept for stale reads.
const staleHistory = 64

// NewMeta returns an empty metadata table.
func NewMeta() *Meta {
	return &Meta{Now: time.Now, workers: make(map[string]lease.WorkerRecord), corrupt: make(map[string]string)}
}

func (s *Meta) begin(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.faults.begin(op, "")
}

// ReadMeta implements consumer.MetaStore. Workers and corrupt items are sorted by key.
func (s *Meta) ReadMeta(ctx context.Context) (lease.Meta, error) {
	if err := s.begin(ctx, "ReadMeta"); err != nil {
		return lease.Meta{}, err
	}
	return s.Snapshot(), nil
}

// ReadMetaItems implements consumer.MetaStore.
func (s *Meta) ReadMetaItems(ctx context.Context, workerIDs []string, consistent bool) (lease.Meta, error) {
	if err := s.begin(ctx, "ReadMetaItems"); err != nil {
		return lease.Meta{}, err
	}
	var lag time.Duration
	if !consistent && s.Stale != nil {
		lag = s.Stale()
	}
	now := s.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var m lease.Meta
	if reason, ok := s.corrupt[CoordinatorKey]; ok && lag == 0 {
		m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: CoordinatorKey, Reason: reason})
	} else if c := s.coordinatorAtLocked(now.Add(-lag)); c != nil {
		m.Coordinator = copyCoordinator(c)
	}
	for _, id := range workerIDs {
		if reason, ok := s.corrupt[id]; ok {
			m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: id, Reason: reason})
		} else if w, ok := s.workers[id]; ok {
			m.Workers = append(m.Workers, w)
		}
	}
	return m, nil
}

// coordinatorAtLocked returns the coordinator record as it was at t: the current one,
// or the last one written at or before t among those kept.
func (s *Meta) coordinatorAtLocked(t time.Time) *lease.CoordinatorRecord {
	for i := len(s.history) - 1; i >= 0; i-- {
		if !s.history[i].at.After(t) {
			return s.history[i].rec
		}
	}
	if len(s.history) > 0 {
		return s.history[0].rec
	}
	return s.coordinator
}

// setCoordinatorLocked stores rec (nil: none) and remembers it for stale reads.
func (s *Meta) setCoordinatorLocked(rec *lease.CoordinatorRecord) {
	s.coordinator = rec
	if s.Stale == nil {
		return
	}
	s.history = append(s.history, versionAt{at: s.Now(), rec: rec})
	if len(s.history) > staleHistory {
		s.history = slices.Delete(s.history, 0, len(s.history)-staleHistory)
	}
}

func copyCoordinator(c *lease.CoordinatorRecord) *lease.CoordinatorRecord {
	out := *c
	out.DeadWorkers = slices.Clone(c.DeadWorkers)
	out.RecheckWorkers = slices.Clone(c.RecheckWorkers)
	return &out
}

// PutWorker implements consumer.MetaStore. It replaces a corrupt item with the same key.
func (s *Meta) PutWorker(ctx context.Context, w lease.WorkerRecord) error {
	if w.WorkerID == "" || w.WorkerID == CoordinatorKey {
		return fmt.Errorf("memstore: PutWorker: invalid worker id %q", w.WorkerID)
	}
	if err := s.begin(ctx, "PutWorker"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.corrupt, w.WorkerID)
	s.workers[w.WorkerID] = copyWorker(w)
	return nil
}

// DeleteWorker implements consumer.MetaStore.
func (s *Meta) DeleteWorker(ctx context.Context, workerID string, observedHeartbeat int64) error {
	if err := s.begin(ctx, "DeleteWorker"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.corrupt[workerID]; ok {
		return fmt.Errorf("memstore: worker %q (corrupt): %w", workerID, lease.ErrConflict)
	}
	w, ok := s.workers[workerID]
	if !ok {
		return fmt.Errorf("memstore: worker %q does not exist: %w", workerID, lease.ErrConflict)
	}
	if w.Heartbeat != observedHeartbeat {
		return fmt.Errorf("memstore: worker %q heartbeat %d, expected %d: %w",
			workerID, w.Heartbeat, observedHeartbeat, lease.ErrConflict)
	}
	delete(s.workers, workerID)
	return nil
}

// ClaimCoordinator implements consumer.MetaStore. With observed nil it creates the record
// at epoch 1 with zero values; otherwise the stored epoch and coordinator id must equal
// observed's (the id may be empty after a resignation). The version is incremented and
// the dead workers cleared; the other values and UpdatedAt are kept.
func (s *Meta) ClaimCoordinator(ctx context.Context, workerID string, observed *lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if workerID == "" {
		return lease.CoordinatorRecord{}, errors.New("memstore: ClaimCoordinator: empty worker id")
	}
	if err := s.begin(ctx, "ClaimCoordinator"); err != nil {
		return lease.CoordinatorRecord{}, err
	}
	now := wallTime(s.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec lease.CoordinatorRecord
	if _, ok := s.corrupt[CoordinatorKey]; ok {
		// An item nobody can read is replaced by a claim that saw none, as dynamostore does.
		if observed != nil {
			return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator (corrupt): %w", lease.ErrConflict)
		}
		delete(s.corrupt, CoordinatorKey)
		rec = lease.CoordinatorRecord{CoordinatorID: workerID, Epoch: 1, UpdatedAt: now}
		s.setCoordinatorLocked(copyCoordinator(&rec))
		return rec, nil
	}
	switch {
	case observed == nil && s.coordinator != nil:
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator exists at epoch %d: %w",
			s.coordinator.Epoch, lease.ErrConflict)
	case observed == nil:
		rec = lease.CoordinatorRecord{CoordinatorID: workerID, Epoch: 1, UpdatedAt: now}
	case s.coordinator == nil:
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator does not exist: %w", lease.ErrConflict)
	case s.coordinator.Epoch != observed.Epoch || s.coordinator.CoordinatorID != observed.CoordinatorID:
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator is %q at epoch %d, observed %q at %d: %w",
			s.coordinator.CoordinatorID, s.coordinator.Epoch, observed.CoordinatorID, observed.Epoch, lease.ErrConflict)
	default:
		rec = *copyCoordinator(s.coordinator)
		rec.CoordinatorID = workerID
		rec.Epoch++
		rec.Version++
		rec.DeadWorkers = nil
	}
	s.setCoordinatorLocked(copyCoordinator(&rec))
	return rec, nil
}

// UpdateCoordinator implements consumer.MetaStore. It also sets UpdatedAt to Now.
func (s *Meta) UpdateCoordinator(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if rec.CoordinatorID == "" {
		return lease.CoordinatorRecord{}, errors.New("memstore: UpdateCoordinator: record has no coordinator id")
	}
	switch {
	case rec.InitialPosition != "" && rec.InitialPosition != lease.TrimHorizon && rec.InitialPosition != lease.AtTimestamp:
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: UpdateCoordinator: initial position %q is not %s or %s", rec.InitialPosition, lease.TrimHorizon, lease.AtTimestamp)
	case rec.InitialPosition == lease.AtTimestamp && rec.InitialTimestamp.IsZero():
		return lease.CoordinatorRecord{}, errors.New("memstore: UpdateCoordinator: initial position AT_TIMESTAMP without a timestamp")
	}
	if err := s.begin(ctx, "UpdateCoordinator"); err != nil {
		return lease.CoordinatorRecord{}, err
	}
	now := wallTime(s.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.matchCoordinatorLocked(rec)
	if err != nil {
		return lease.CoordinatorRecord{}, err
	}
	if stored.Version != rec.Version {
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator at version %d, expected %d: %w",
			stored.Version, rec.Version, lease.ErrConflict)
	}
	rec.Version = stored.Version + 1
	rec.DeadWorkers = slices.Clone(rec.DeadWorkers)
	rec.RecheckWorkers = slices.Compact(slices.Sorted(slices.Values(rec.RecheckWorkers)))
	if len(rec.RecheckWorkers) == 0 {
		rec.RecheckWorkers = nil
	}
	if len(rec.DeadWorkers) == 0 {
		rec.DeadWorkers = nil
	}
	rec.UpdatedAt = now
	switch {
	case stored.InitialPosition != "" || rec.InitialPosition == "":
		// Recorded once, as dynamostore's if_not_exists.
		rec.InitialPosition, rec.InitialTimestamp = stored.InitialPosition, stored.InitialTimestamp
	case rec.InitialPosition == lease.AtTimestamp:
		rec.InitialTimestamp = rec.InitialTimestamp.UTC()
	default:
		// dynamostore reads a timestamp only with AT_TIMESTAMP.
		rec.InitialTimestamp = time.Time{}
	}
	s.setCoordinatorLocked(copyCoordinator(&rec))
	return rec, nil
}

// ResignCoordinator implements consumer.MetaStore. The version is incremented and the
// dead workers cleared; the epoch and the other values are kept.
func (s *Meta) ResignCoordinator(ctx context.Context, rec lease.CoordinatorRecord) error {
	if rec.CoordinatorID == "" {
		return errors.New("memstore: ResignCoordinator: record has no coordinator id")
	}
	if err := s.begin(ctx, "ResignCoordinator"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.matchCoordinatorLocked(rec)
	if err != nil {
		return err
	}
	stored.CoordinatorID = ""
	stored.Version++
	stored.DeadWorkers = nil
	s.setCoordinatorLocked(&stored)
	return nil
}

// matchCoordinatorLocked returns a copy of the stored record if it still has rec's
// CoordinatorID and Epoch.
func (s *Meta) matchCoordinatorLocked(rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if _, ok := s.corrupt[CoordinatorKey]; ok {
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator (corrupt): %w", lease.ErrConflict)
	}
	if s.coordinator == nil {
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator does not exist: %w", lease.ErrConflict)
	}
	c := *s.coordinator
	if c.CoordinatorID != rec.CoordinatorID || c.Epoch != rec.Epoch {
		return lease.CoordinatorRecord{}, fmt.Errorf("memstore: coordinator is %q at epoch %d, expected %q at %d: %w",
			c.CoordinatorID, c.Epoch, rec.CoordinatorID, rec.Epoch, lease.ErrConflict)
	}
	return c, nil
}

// PutCoordinator replaces the coordinator record unconditionally (nil removes it). It is
// for setting up tests and is neither counted nor subject to injected errors.
func (s *Meta) PutCoordinator(rec *lease.CoordinatorRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.corrupt, CoordinatorKey)
	if rec == nil {
		s.setCoordinatorLocked(nil)
		return
	}
	c := copyCoordinator(rec)
	c.UpdatedAt = wallTime(c.UpdatedAt)
	s.setCoordinatorLocked(c)
}

// PutCorrupt replaces the item at key (a worker id, or CoordinatorKey) with one that
// cannot be decoded: ReadMeta reports it in Meta.Corrupt and conditional writes on it fail
// with lease.ErrConflict. PutWorker or PutCoordinator replaces it.
func (s *Meta) PutCorrupt(key, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key == CoordinatorKey {
		s.setCoordinatorLocked(nil)
	} else {
		delete(s.workers, key)
	}
	s.corrupt[key] = reason
}

// Snapshot returns the table as ReadMeta would, bypassing counts and injected errors.
func (s *Meta) Snapshot() lease.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := lease.Meta{Workers: make([]lease.WorkerRecord, 0, len(s.workers))}
	for _, w := range s.workers {
		m.Workers = append(m.Workers, w)
	}
	slices.SortFunc(m.Workers, func(a, b lease.WorkerRecord) int { return cmp.Compare(a.WorkerID, b.WorkerID) })
	if s.coordinator != nil {
		m.Coordinator = copyCoordinator(s.coordinator)
	}
	for k, reason := range s.corrupt {
		m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: k, Reason: reason})
	}
	slices.SortFunc(m.Corrupt, func(a, b lease.CorruptItem) int { return cmp.Compare(a.Key, b.Key) })
	return m
}

func copyWorker(w lease.WorkerRecord) lease.WorkerRecord {
	w.LastSeen = wallTime(w.LastSeen)
	w.StartedAt = wallTime(w.StartedAt)
	return w
}
