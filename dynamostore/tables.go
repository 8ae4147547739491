package dynamostore

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
)

// EnsureTables creates the lease and metadata tables if they are missing (on-demand
// capacity) and waits until both are ACTIVE, bounded by ctx. Several workers may call it at
// once: a worker that loses the race to create a table waits for the winner's table. A
// lease table named with WithLeaseTable is only checked (CheckLeaseTable), never created.
func (s *Store) EnsureTables(ctx context.Context) error {
	var err error
	if s.adopted {
		err = s.CheckLeaseTable(ctx)
	} else {
		err = s.ensureTable(ctx, s.leaseTable, attrLeaseKey)
	}
	if err != nil {
		return err
	}
	return s.ensureTable(ctx, s.metaTable, attrWorkerID)
}

// CheckTables verifies, without creating anything, that both tables exist with the
// expected keys. It is for deployments where workers may not create tables: a missing
// table is reported as ErrTableNotFound naming the table and how to create it.
func (s *Store) CheckTables(ctx context.Context) error {
	if err := s.CheckLeaseTable(ctx); err != nil {
		return err
	}
	return s.checkTable(ctx, s.metaTable, attrWorkerID, nil)
}

// CheckLeaseTable verifies, without creating anything, that the lease table exists with
// the hash key leaseKey (S). A missing table is ErrTableNotFound, with the table's name
// and what to do.
func (s *Store) CheckLeaseTable(ctx context.Context) error {
	var missing error
	if s.adopted {
		missing = ErrAdoptedTableMissing
	}
	return s.checkTable(ctx, s.leaseTable, attrLeaseKey, missing)
}

// checkTable verifies that table exists with the single hash key key (S). missing says
// what to do when it does not, and joins the chain; nil: create it.
func (s *Store) checkTable(ctx context.Context, table, key string, missing error) error {
	d, err := s.tableStatus(ctx, table)
	if errors.Is(err, ErrTableNotFound) {
		if missing == nil {
			missing = fmt.Errorf("create table %q with hash key %s (S), or let the workers create it (CREATE_TABLES=true)", table, key)
		}
		return fmt.Errorf("%w: %w", err, missing)
	}
	if err != nil {
		return err
	}
	return checkKeySchema(table, key, d)
}

func (s *Store) ensureTable(ctx context.Context, table, hashKey string) error {
	for {
		status, err := s.tableStatus(ctx, table)
		switch {
		case errors.Is(err, ErrTableNotFound):
			created, err := s.createTable(ctx, table, hashKey)
			if err != nil {
				return err
			}
			if !created {
				// Someone else is creating it, or deleting it: look again after a pause.
				if err := clock.Sleep(ctx, s.clock, s.pollInterval); err != nil {
					return fmt.Errorf("dynamostore: waiting for table %q: %w", table, err)
				}
			}
			continue
		case errors.Is(err, ErrAccessDenied):
			return fmt.Errorf("dynamostore: cannot check whether table %q exists; grant dynamodb:DescribeTable: %w", table, err)
		case err != nil:
			return err
		}
		switch status.TableStatus {
		case types.TableStatusActive, types.TableStatusUpdating:
			return checkKeySchema(table, hashKey, status)
		}
		// CREATING, or DELETING before a re-create: wait.
		if err := clock.Sleep(ctx, s.clock, s.pollInterval); err != nil {
			return fmt.Errorf("dynamostore: waiting for table %q to become ACTIVE (status %s): %w", table, status.TableStatus, err)
		}
	}
}

// createTable creates the table. It reports false without error when the table is already
// being created (or deleted) by someone else.
func (s *Store) createTable(ctx context.Context, table, hashKey string) (bool, error) {
	_, err := s.client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(hashKey), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(hashKey), KeyType: types.KeyTypeHash},
		},
	})
	if err == nil {
		return true, nil
	}
	var inUse *types.ResourceInUseException
	if errors.As(err, &inUse) {
		return false, nil
	}
	if errorCode(err) == "AccessDeniedException" {
		return false, fmt.Errorf("dynamostore: table %q does not exist and these credentials may not create it: "+
			"create it (hash key %s of type S, on-demand capacity) or grant dynamodb:CreateTable: %w: %w",
			table, hashKey, ErrAccessDenied, err)
	}
	return false, wrapErr("CreateTable", table, err)
}

func (s *Store) tableStatus(ctx context.Context, table string) (*types.TableDescription, error) {
	out, err := s.client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		return nil, wrapErr("DescribeTable", table, err)
	}
	if out.Table == nil {
		return nil, fmt.Errorf("dynamostore: DescribeTable: table %q: empty description", table)
	}
	return out.Table, nil
}

// checkKeySchema refuses a table someone created with another key: every write would fail
// with a confusing validation error otherwise.
func checkKeySchema(table, hashKey string, d *types.TableDescription) error {
	for _, k := range d.KeySchema {
		if k.KeyType == types.KeyTypeHash && aws.ToString(k.AttributeName) == hashKey {
			if len(d.KeySchema) == 1 {
				return nil
			}
			break
		}
	}
	return fmt.Errorf("dynamostore: table %q exists but its key is not the single hash key %s (S); "+
		"it was created for something else: use another application name or recreate the table", table, hashKey)
}

// DeleteTables deletes both tables, ignoring tables that do not exist. It does not wait for
// the deletion to finish. Meant for tests and cleanup. A lease table named with
// WithLeaseTable is not deleted: it was adopted, not created.
func (s *Store) DeleteTables(ctx context.Context) error {
	var errs []error
	tables := []string{s.metaTable}
	if !s.adopted {
		tables = append(tables, s.leaseTable)
	}
	for _, table := range tables {
		_, err := s.client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)})
		if err == nil {
			continue
		}
		var notFound *types.ResourceNotFoundException
		if errors.As(err, &notFound) {
			continue
		}
		errs = append(errs, wrapErr("DeleteTable", table, err))
	}
	return errors.Join(errs...)
}
