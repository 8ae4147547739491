package dynamostore

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// scan reads every item of table with strongly consistent, paginated Scans.
func (s *Store) scan(ctx context.Context, table string) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	var start map[string]types.AttributeValue
	for {
		out, err := s.client.Scan(ctx, &dynamodb.ScanInput{
			TableName:         aws.String(table),
			ConsistentRead:    aws.Bool(true),
			ExclusiveStartKey: start,
		})
		if err != nil {
			return nil, wrapErr("Scan", table, err)
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items, nil
		}
		start = out.LastEvaluatedKey
	}
}

// ListLeases reads the whole lease table. Items that cannot be decoded are returned in
// Table.Corrupt with the reason.
func (s *Store) ListLeases(ctx context.Context) (lease.Table, error) {
	items, err := s.scan(ctx, s.leaseTable)
	if err != nil {
		return lease.Table{}, err
	}
	var t lease.Table
	for _, item := range items {
		l, err := decodeLease(item)
		if err != nil {
			t.Corrupt = append(t.Corrupt, lease.CorruptItem{Key: keyForReport(item, attrLeaseKey), Reason: err.Error()})
			continue
		}
		t.Leases = append(t.Leases, l)
	}
	return t, nil
}

// GetLease reads one lease: lease.ErrNotFound if it does not exist, ErrCorrupt if it
// cannot be decoded.
func (s *Store) GetLease(ctx context.Context, shardID string) (lease.Lease, error) {
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.leaseTable),
		Key:            map[string]types.AttributeValue{attrLeaseKey: strAV(shardID)},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return lease.Lease{}, wrapErr("GetItem", s.leaseTable, err)
	}
	if len(out.Item) == 0 {
		return lease.Lease{}, fmt.Errorf("dynamostore: lease %q in table %q: %w", shardID, s.leaseTable, lease.ErrNotFound)
	}
	return s.decodeLeaseItem(shardID, out.Item)
}

func (s *Store) decodeLeaseItem(shardID string, item map[string]types.AttributeValue) (lease.Lease, error) {
	l, err := decodeLease(item)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("dynamostore: lease %q in table %q: %w: %w", shardID, s.leaseTable, ErrCorrupt, err)
	}
	return l, nil
}

// CreateLease creates a free lease at epoch 0 with l's checkpoint, start timestamp and
// parents (l's Owner and Epoch are ignored): lease.ErrExists if the shard has a lease.
func (s *Store) CreateLease(ctx context.Context, l lease.Lease) error {
	if err := lease.CheckCreate(l); err != nil {
		return fmt.Errorf("dynamostore: %w", err)
	}
	l.Owner, l.Epoch = "", 0
	e := newExpr()
	_, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                aws.String(s.leaseTable),
		Item:                     encodeLease(l),
		ConditionExpression:      aws.String("attribute_not_exists(" + e.name(attrLeaseKey) + ")"),
		ExpressionAttributeNames: e.attrNames(),
	})
	if isConditionFailed(err) {
		return fmt.Errorf("dynamostore: lease %q in table %q: %w", l.ShardID, s.leaseTable, lease.ErrExists)
	}
	if err != nil {
		return wrapErr("PutItem", s.leaseTable, err)
	}
	return nil
}

// heldCondition is the fencing condition: the stored lease still has l's owner (or still
// has none) and l's epoch.
func heldCondition(e *exprBuilder, l lease.Lease) string {
	owner := "attribute_not_exists(" + e.name(attrLeaseOwner) + ")"
	if l.Owner != "" {
		owner = e.name(attrLeaseOwner) + " = " + e.value(strAV(l.Owner))
	}
	return e.name(attrLeaseCounter) + " = " + e.value(numAV(l.Epoch)) + " AND " + owner
}

// TakeLease makes owner the owner, provided the stored lease still has observed's Owner and
// Epoch (lease.ErrConflict otherwise). It increments the epoch and returns the new lease.
func (s *Store) TakeLease(ctx context.Context, observed lease.Lease, owner string) (lease.Lease, error) {
	if err := lease.CheckTake(observed, owner); err != nil {
		return lease.Lease{}, fmt.Errorf("dynamostore: %w", err)
	}
	e := newExpr()
	cond := heldCondition(e, observed)
	counter := e.name(attrLeaseCounter)
	update := "SET " + e.name(attrLeaseOwner) + " = " + e.value(strAV(owner)) +
		", " + counter + " = " + counter + " + " + e.value(numAV(1))
	// The KCL's bookkeeping: a change from one owner to another counts as an owner switch
	// (taking a free lease, or one's own, does not), and a take ends a KCL 3.x hand-off.
	if observed.Owner != "" && observed.Owner != owner {
		update += " ADD " + e.name(attrOwnerSwitches) + " " + e.value(numAV(1))
	}
	update += " REMOVE " + e.name(attrCheckpointOwner)
	out, err := s.update(ctx, "TakeLease", observed.ShardID, e, cond, update, types.ReturnValueAllNew)
	if err != nil {
		return lease.Lease{}, err
	}
	return s.decodeLeaseItem(observed.ShardID, out.Attributes)
}

// ReleaseLease frees the lease, provided it still has held's Owner and Epoch
// (lease.ErrConflict otherwise). It increments the epoch and, when final is not zero,
// writes it as the checkpoint in the same operation.
func (s *Store) ReleaseLease(ctx context.Context, held lease.Lease, final lease.ExtendedSequenceNumber) error {
	if err := lease.CheckRelease(held, final); err != nil {
		return fmt.Errorf("dynamostore: %w", err)
	}
	e := newExpr()
	cond := heldCondition(e, held)
	counter := e.name(attrLeaseCounter)
	update := "SET " + counter + " = " + counter + " + " + e.value(numAV(1))
	remove := []string{attrLeaseOwner, attrCheckpointOwner}
	if !final.IsZero() {
		update += ", " + checkpointUpdate(e, final)
		remove = append(remove, pendingCheckpointAttrs...)
		if final.SequenceNumber == lease.ShardEnd {
			if ss := stringSetAV(held.ChildShardIDs); ss != nil {
				update += ", " + e.name(attrChildShardIDs) + " = " + e.value(ss)
			}
		}
	}
	update += " REMOVE " + e.nameList(remove...)
	_, err := s.update(ctx, "ReleaseLease", held.ShardID, e, cond, update, types.ReturnValueNone)
	return err
}

// Checkpoint records progress, provided the lease still has held's Owner and Epoch
// (lease.ErrConflict otherwise).
func (s *Store) Checkpoint(ctx context.Context, held lease.Lease, to lease.ExtendedSequenceNumber, millisBehindLatest int64) error {
	if err := lease.CheckCheckpoint(held, to); err != nil {
		return fmt.Errorf("dynamostore: %w", err)
	}
	e := newExpr()
	cond := heldCondition(e, held)
	update := "SET " + checkpointUpdate(e, to)
	if millisBehindLatest >= 0 {
		update += ", " + e.name(attrMillisBehind) + " = " + e.value(numAV(millisBehindLatest))
	}
	update += " REMOVE " + e.nameList(pendingCheckpointAttrs...)
	_, err := s.update(ctx, "Checkpoint", held.ShardID, e, cond, update, types.ReturnValueNone)
	return err
}

// checkpointUpdate sets the checkpoint to cp as the KCL stores it: checkpoint and
// checkpointSubSequenceNumber, the latter 0 for a plain record; and, as the KCL's
// checkpoint does, ownerSwitchesSinceCheckpoint back to 0.
func checkpointUpdate(e *exprBuilder, cp lease.ExtendedSequenceNumber) string {
	return e.name(attrCheckpoint) + " = " + e.value(strAV(cp.SequenceNumber)) +
		", " + e.name(attrCheckpointSub) + " = " + e.value(numAV(cp.SubSequenceNumber)) +
		", " + e.name(attrOwnerSwitches) + " = " + e.value(numAV(0))
}

// pendingCheckpointAttrs are the KCL's prepared (two-phase) checkpoint, which a checkpoint
// replaces: the KCL's own checkpoint removes them.
var pendingCheckpointAttrs = []string{attrPendingCheckpoint, attrPendingCheckpointSub, attrPendingCheckpointState}

// DeleteLease removes the lease, provided it still has observed's Owner and Epoch
// (lease.ErrConflict otherwise, also when it is already gone).
func (s *Store) DeleteLease(ctx context.Context, observed lease.Lease) error {
	e := newExpr()
	cond := heldCondition(e, observed)
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.leaseTable),
		Key:                       map[string]types.AttributeValue{attrLeaseKey: strAV(observed.ShardID)},
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  e.attrNames(),
		ExpressionAttributeValues: e.attrValues(),
	})
	if isConditionFailed(err) {
		return fmt.Errorf("dynamostore: DeleteLease %q in table %q: %w", observed.ShardID, s.leaseTable, lease.ErrConflict)
	}
	if err != nil {
		return wrapErr("DeleteItem", s.leaseTable, err)
	}
	return nil
}

// update runs a conditional UpdateItem on a lease; a failed condition is lease.ErrConflict.
func (s *Store) update(ctx context.Context, op, shardID string, e *exprBuilder, cond, update string, rv types.ReturnValue) (*dynamodb.UpdateItemOutput, error) {
	out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.leaseTable),
		Key:                       map[string]types.AttributeValue{attrLeaseKey: strAV(shardID)},
		ConditionExpression:       aws.String(cond),
		UpdateExpression:          aws.String(update),
		ExpressionAttributeNames:  e.attrNames(),
		ExpressionAttributeValues: e.attrValues(),
		ReturnValues:              rv,
	})
	if isConditionFailed(err) {
		return nil, fmt.Errorf("dynamostore: %s %q in table %q: %w", op, shardID, s.leaseTable, lease.ErrConflict)
	}
	if err != nil {
		return nil, wrapErr(op, s.leaseTable, err)
	}
	return out, nil
}

func isConditionFailed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}
