package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// ReadMeta reads the whole metadata table with one paginated, consistent Scan and splits it
// into worker records and the coordinator record. Items that cannot be decoded are returned
// in Meta.Corrupt; a corrupt coordinator item leaves Meta.Coordinator nil.
func (s *Store) ReadMeta(ctx context.Context) (lease.Meta, error) {
	items, err := s.scan(ctx, s.metaTable)
	if err != nil {
		return lease.Meta{}, err
	}
	var m lease.Meta
	for _, item := range items {
		key := keyForReport(item, attrWorkerID)
		if v, ok := item[attrWorkerID].(*types.AttributeValueMemberS); ok && v.Value == s.coordinatorKey {
			c, err := decodeCoordinator(item)
			if err != nil {
				m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: key, Reason: err.Error()})
				continue
			}
			m.Coordinator = &c
			continue
		}
		w, err := decodeWorker(item)
		if err != nil {
			m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: key, Reason: err.Error()})
			continue
		}
		m.Workers = append(m.Workers, w)
	}
	// Scan order is the hash order of the keys; callers get workers by id, as memstore does.
	slices.SortFunc(m.Workers, func(a, b lease.WorkerRecord) int { return strings.Compare(a.WorkerID, b.WorkerID) })
	return m, nil
}

// ReadMetaItems reads the coordinator item and the records of workerIDs with one GetItem
// each, consistent or eventually consistent as asked. Absent workers are left out; items
// that cannot be decoded are returned in Meta.Corrupt.
func (s *Store) ReadMetaItems(ctx context.Context, workerIDs []string, consistent bool) (lease.Meta, error) {
	var m lease.Meta
	for i, key := range append([]string{s.coordinatorKey}, workerIDs...) {
		out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
			TableName:      aws.String(s.metaTable),
			Key:            map[string]types.AttributeValue{attrWorkerID: strAV(key)},
			ConsistentRead: aws.Bool(consistent),
		})
		if err != nil {
			return lease.Meta{}, wrapErr("GetItem", s.metaTable, err)
		}
		if len(out.Item) == 0 {
			continue
		}
		if i == 0 {
			c, err := decodeCoordinator(out.Item)
			if err != nil {
				m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: key, Reason: err.Error()})
				continue
			}
			m.Coordinator = &c
			continue
		}
		w, err := decodeWorker(out.Item)
		if err != nil {
			m.Corrupt = append(m.Corrupt, lease.CorruptItem{Key: key, Reason: err.Error()})
			continue
		}
		m.Workers = append(m.Workers, w)
	}
	return m, nil
}

// PutWorker writes the worker's record unconditionally: only its own worker writes it.
func (s *Store) PutWorker(ctx context.Context, w lease.WorkerRecord) error {
	if w.WorkerID == "" {
		return errors.New("dynamostore: PutWorker: empty worker id")
	}
	if w.WorkerID == s.coordinatorKey {
		// The unconditional put would overwrite the coordinator item.
		return fmt.Errorf("dynamostore: PutWorker: worker id %q is reserved for the coordinator item", w.WorkerID)
	}
	_, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.metaTable),
		Item:      encodeWorker(w),
	})
	if err != nil {
		return wrapErr("PutItem", s.metaTable, err)
	}
	return nil
}

// DeleteWorker removes a worker record, provided its heartbeat is still observedHeartbeat
// (lease.ErrConflict otherwise, also when the record is already gone).
func (s *Store) DeleteWorker(ctx context.Context, workerID string, observedHeartbeat int64) error {
	e := newExpr()
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.metaTable),
		Key:                       map[string]types.AttributeValue{attrWorkerID: strAV(workerID)},
		ConditionExpression:       aws.String(e.name(attrHeartbeat) + " = " + e.value(numAV(observedHeartbeat))),
		ExpressionAttributeNames:  e.attrNames(),
		ExpressionAttributeValues: e.attrValues(),
	})
	if isConditionFailed(err) {
		return fmt.Errorf("dynamostore: DeleteWorker %q in table %q: %w", workerID, s.metaTable, lease.ErrConflict)
	}
	if err != nil {
		return wrapErr("DeleteItem", s.metaTable, err)
	}
	return nil
}

// ClaimCoordinator makes workerID the coordinator, provided the stored record is still as
// observed (lease.ErrConflict otherwise). With observed nil the record must not exist yet:
// it is created with epoch 1, version 0, all values zero and lease generation 0. Otherwise
// the stored epoch and coordinator id must match observed's (an empty observed id matches
// a record without coordinator); the epoch is incremented and the values are kept.
func (s *Store) ClaimCoordinator(ctx context.Context, workerID string, observed *lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if workerID == "" {
		return lease.CoordinatorRecord{}, errors.New("dynamostore: ClaimCoordinator: empty worker id")
	}
	if observed == nil {
		return s.createCoordinator(ctx, workerID)
	}
	e := newExpr()
	id := e.name(attrCoordinatorID)
	var holder string
	if observed.CoordinatorID != "" {
		holder = id + " = " + e.value(strAV(observed.CoordinatorID))
	} else {
		// Resign removes the attribute; an empty string (written by other tools) counts as
		// no coordinator too. Not size() = 0: dynalite's size() of "" is undefined.
		holder = "(attribute_not_exists(" + id + ") OR " + id + " = " + e.value(strAV("")) + ")"
	}
	epoch := e.name(attrEpoch)
	cond := epoch + " = " + e.value(numAV(observed.Epoch)) + " AND " + holder
	update := "SET " + id + " = " + e.value(strAV(workerID)) + ", " + epoch + " = " + epoch + " + " + e.value(numAV(1)) +
		", " + bumpVersion(e) + " REMOVE " + e.name(attrDeadWorkers)
	return s.updateCoordinator(ctx, "ClaimCoordinator", e, cond, update)
}

func (s *Store) createCoordinator(ctx context.Context, workerID string) (lease.CoordinatorRecord, error) {
	rec := lease.CoordinatorRecord{CoordinatorID: workerID, Epoch: 1, UpdatedAt: s.clock.Now().UTC()} // UTC drops the monotonic reading, as a read would
	e := newExpr()
	// Create it, or replace an item nobody can use: without a numeric epoch or with a
	// non-string coordinator id no claim could ever match it, and the application would
	// stay without coordinator. A usable item is never replaced, so of two concurrent
	// claims one fails.
	epoch, id := e.name(attrEpoch), e.name(attrCoordinatorID)
	cond := "attribute_not_exists(" + e.name(attrWorkerID) + ") OR attribute_not_exists(" + epoch + ") OR NOT attribute_type(" +
		epoch + ", " + e.value(strAV("N")) + ") OR (attribute_exists(" + id + ") AND NOT attribute_type(" + id + ", " + e.value(strAV("S")) + "))"
	_, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.metaTable),
		Item:                      encodeCoordinator(s.coordinatorKey, rec),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  e.attrNames(),
		ExpressionAttributeValues: e.attrValues(),
	})
	if isConditionFailed(err) {
		return lease.CoordinatorRecord{}, fmt.Errorf("dynamostore: ClaimCoordinator: coordinator item already exists in table %q: %w", s.metaTable, lease.ErrConflict)
	}
	if err != nil {
		return lease.CoordinatorRecord{}, wrapErr("PutItem", s.metaTable, err)
	}
	return rec, nil
}

// bumpVersion is the update clause that increments the version (absent counts as 0).
func bumpVersion(e *exprBuilder) string {
	v := e.name(attrVersion)
	return v + " = if_not_exists(" + v + ", " + e.value(numAV(0)) + ") + " + e.value(numAV(1))
}

// holderCondition is true when the stored record still has rec's coordinator and epoch.
func holderCondition(e *exprBuilder, rec lease.CoordinatorRecord) string {
	return e.name(attrCoordinatorID) + " = " + e.value(strAV(rec.CoordinatorID)) +
		" AND " + e.name(attrEpoch) + " = " + e.value(numAV(rec.Epoch))
}

// UpdateCoordinator writes rec's values, provided the stored record still has rec's
// CoordinatorID, Epoch and Version (lease.ErrConflict otherwise). It increments the
// version, sets updated_at to now and returns the record as written. The initial position
// is written only if none is stored yet.
func (s *Store) UpdateCoordinator(ctx context.Context, rec lease.CoordinatorRecord) (lease.CoordinatorRecord, error) {
	if rec.CoordinatorID == "" {
		return lease.CoordinatorRecord{}, errors.New("dynamostore: UpdateCoordinator: record has no coordinator id")
	}
	// decodeCoordinator rejects any other position, and AT_TIMESTAMP without its timestamp:
	// written, the record could be neither read nor replaced by a claim.
	switch {
	case rec.InitialPosition != "" && rec.InitialPosition != lease.TrimHorizon && rec.InitialPosition != lease.AtTimestamp:
		return lease.CoordinatorRecord{}, fmt.Errorf("dynamostore: UpdateCoordinator: initial position %q is not %s or %s", rec.InitialPosition, lease.TrimHorizon, lease.AtTimestamp)
	case rec.InitialPosition == lease.AtTimestamp && rec.InitialTimestamp.IsZero():
		return lease.CoordinatorRecord{}, errors.New("dynamostore: UpdateCoordinator: initial position AT_TIMESTAMP without a timestamp")
	}
	e := newExpr()
	cond := holderCondition(e, rec) + " AND " + e.name(attrVersion) + " = " + e.value(numAV(rec.Version))
	update := "SET "
	for _, v := range coordinatorValues(rec) {
		update += e.name(v.attr) + " = " + e.value(numAV(v.val)) + ", "
	}
	update += e.name(attrOwnedLeases) + " = " + e.value(numAV(int64(rec.OwnedLeases))) + ", "
	if rec.CoordinatorIncarnation != "" {
		update += e.name(attrCoordIncarnation) + " = " + e.value(strAV(rec.CoordinatorIncarnation)) + ", " +
			e.name(attrCoordHeartbeat) + " = " + e.value(numAV(rec.CoordinatorHeartbeat)) + ", "
	}
	// DynamoDB has no empty set: an empty list is a removed attribute.
	var removed []string
	if len(rec.DeadWorkers) > 0 {
		update += e.name(attrDeadWorkers) + " = " + e.value(deadWorkersAV(rec.DeadWorkers)) + ", "
	} else {
		removed = append(removed, e.name(attrDeadWorkers))
	}
	if rec.WaitingParents > 0 {
		update += e.name(attrWaitingParents) + " = " + e.value(numAV(int64(rec.WaitingParents))) + ", "
	} else {
		removed = append(removed, e.name(attrWaitingParents))
	}
	if ss := stringSetAV(rec.RecheckWorkers); ss != nil {
		update += e.name(attrRecheckWorkers) + " = " + e.value(ss) + ", "
	} else {
		removed = append(removed, e.name(attrRecheckWorkers))
	}
	remove := " REMOVE " + strings.Join(removed, ", ")
	if len(removed) == 0 {
		remove = ""
	}
	if rec.InitialPosition != "" {
		// Recorded once: a later write never moves the application's starting point.
		pos := e.name(attrInitialPosition)
		update += pos + " = if_not_exists(" + pos + ", " + e.value(strAV(rec.InitialPosition)) + "), "
		if !rec.InitialTimestamp.IsZero() {
			ts := e.name(attrInitialTimestamp)
			update += ts + " = if_not_exists(" + ts + ", " + e.value(strAV(formatTime(rec.InitialTimestamp))) + "), "
		}
	}
	update += bumpVersion(e) + ", " + e.name(attrUpdatedAt) + " = " + e.value(strAV(formatTime(s.clock.Now()))) + remove
	return s.updateCoordinator(ctx, "UpdateCoordinator", e, cond, update)
}

// ResignCoordinator removes the coordinator id and the dead workers and increments the
// version, provided the stored record still has rec's CoordinatorID and Epoch
// (lease.ErrConflict otherwise). The epoch is left alone: the next claim increments it. The attribute is removed rather than set to "" because not every
// DynamoDB implementation accepts empty strings.
func (s *Store) ResignCoordinator(ctx context.Context, rec lease.CoordinatorRecord) error {
	if rec.CoordinatorID == "" {
		return errors.New("dynamostore: ResignCoordinator: record has no coordinator id")
	}
	e := newExpr()
	cond := holderCondition(e, rec)
	_, err := s.updateCoordinator(ctx, "ResignCoordinator", e, cond,
		"SET "+bumpVersion(e)+" REMOVE "+e.name(attrCoordinatorID)+", "+e.name(attrDeadWorkers))
	return err
}

// updateCoordinator runs a conditional UpdateItem on the coordinator item and decodes the
// item as written.
func (s *Store) updateCoordinator(ctx context.Context, op string, e *exprBuilder, cond, update string) (lease.CoordinatorRecord, error) {
	out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.metaTable),
		Key:                       map[string]types.AttributeValue{attrWorkerID: strAV(s.coordinatorKey)},
		ConditionExpression:       aws.String(cond),
		UpdateExpression:          aws.String(update),
		ExpressionAttributeNames:  e.attrNames(),
		ExpressionAttributeValues: e.attrValues(),
		ReturnValues:              types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return lease.CoordinatorRecord{}, fmt.Errorf("dynamostore: %s in table %q: %w", op, s.metaTable, lease.ErrConflict)
	}
	if err != nil {
		return lease.CoordinatorRecord{}, wrapErr(op, s.metaTable, err)
	}
	c, err := decodeCoordinator(out.Attributes)
	if err != nil {
		return lease.CoordinatorRecord{}, fmt.Errorf("dynamostore: %s: coordinator item %q in table %q: %w: %w", op, s.coordinatorKey, s.metaTable, ErrCorrupt, err)
	}
	return c, nil
}
