package dynamostore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

var (
	_ consumer.LeaseStore = (*dynamostore.Store)(nil)
	_ consumer.MetaStore  = (*dynamostore.Store)(nil)
)

// fixedClock reports a fixed Now so that updated_at can be compared; After is real so that
// EnsureTables' polling still advances.
type fixedClock struct{ now time.Time }

func (c fixedClock) Now() time.Time                         { return c.now }
func (c fixedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

var testNow = time.Date(2025, 3, 4, 5, 6, 7, 890_000_000, time.UTC)

// newStore returns a store on fresh tables that have not been created yet.
func newStore(t *testing.T, client dynamostore.DynamoDB) *dynamostore.Store {
	t.Helper()
	if client == nil {
		client = engineClient(t)
	}
	st, err := dynamostore.New(client, uniqueName(t, "app"),
		dynamostore.WithClock(fixedClock{testNow}), dynamostore.WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.DeleteTables(context.Background()); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return st
}

func TestEnsureTablesTwice(t *testing.T) {
	client := engineClient(t)
	st := newStore(t, client)
	for i := range 2 {
		if err := st.EnsureTables(t.Context()); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	for table, key := range map[string]string{st.LeaseTable(): "leaseKey", st.MetaTable(): "worker_id"} {
		out, err := client.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		if err != nil {
			t.Fatal(err)
		}
		d := out.Table
		if d.TableStatus != types.TableStatusActive {
			t.Errorf("%s: status %s", table, d.TableStatus)
		}
		if len(d.KeySchema) != 1 || aws.ToString(d.KeySchema[0].AttributeName) != key || d.KeySchema[0].KeyType != types.KeyTypeHash {
			t.Errorf("%s: key schema %+v, want hash key %s", table, d.KeySchema, key)
		}
		if d.BillingModeSummary == nil || d.BillingModeSummary.BillingMode != types.BillingModePayPerRequest {
			t.Errorf("%s: billing mode summary %+v, want PAY_PER_REQUEST", table, d.BillingModeSummary)
		}
	}
}

func TestEnsureTablesConcurrent(t *testing.T) {
	client := engineClient(t)
	first := newStore(t, client)
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() {
			// Separate stores, as separate workers would have.
			st, err := dynamostore.New(client, first.LeaseTable(), dynamostore.WithPollInterval(10*time.Millisecond))
			if err == nil {
				err = st.EnsureTables(t.Context())
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	if _, err := first.ListLeases(t.Context()); err != nil {
		t.Errorf("table unusable after concurrent creation: %v", err)
	}
}

func TestEnsureTablesRefusesForeignKeySchema(t *testing.T) {
	client := engineClient(t)
	st := newStore(t, client)
	_, err := client.CreateTable(t.Context(), &dynamodb.CreateTableInput{
		TableName:            aws.String(st.LeaseTable()),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = st.EnsureTables(t.Context())
	if err == nil || !strings.Contains(err.Error(), st.LeaseTable()) || !strings.Contains(err.Error(), "leaseKey") {
		t.Errorf("EnsureTables on a table with another key: %v", err)
	}
}

// faultClient fails the named operations with an API error of the given code.
type faultClient struct {
	dynamostore.DynamoDB
	code string
	ops  map[string]bool
}

func (c faultClient) fault(op string) error {
	if c.ops[op] {
		return &smithy.GenericAPIError{Code: c.code, Message: "injected"}
	}
	return nil
}

func (c faultClient) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, o ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	if err := c.fault("CreateTable"); err != nil {
		return nil, err
	}
	return c.DynamoDB.CreateTable(ctx, in, o...)
}

func (c faultClient) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	if err := c.fault("GetItem"); err != nil {
		return nil, err
	}
	return c.DynamoDB.GetItem(ctx, in, o...)
}

func TestEnsureTablesAccessDenied(t *testing.T) {
	client := faultClient{DynamoDB: engineClient(t), code: "AccessDeniedException", ops: map[string]bool{"CreateTable": true}}
	st := newStore(t, client)
	err := st.EnsureTables(t.Context())
	if !errors.Is(err, dynamostore.ErrAccessDenied) {
		t.Fatalf("err = %v, want ErrAccessDenied", err)
	}
	for _, want := range []string{st.LeaseTable(), "leaseKey", "dynamodb:CreateTable"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not mention %q", err, want)
		}
	}
}

func TestThrottled(t *testing.T) {
	client := faultClient{DynamoDB: engineClient(t), code: "ProvisionedThroughputExceededException", ops: map[string]bool{"GetItem": true}}
	st := newStore(t, client)
	if err := st.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := st.GetLease(t.Context(), "s")
	if !errors.Is(err, dynamostore.ErrThrottled) {
		t.Errorf("err = %v, want ErrThrottled", err)
	}
}

// The suite checks that a missing table is lease.ErrTableNotFound; the message also names
// the table, for the operator.
func TestMissingTableIsNamed(t *testing.T) {
	st := newStore(t, nil) // tables never created
	ctx := t.Context()
	calls := []struct {
		name  string
		table string
		call  func() error
	}{
		{"ListLeases", st.LeaseTable(), func() error { _, err := st.ListLeases(ctx); return err }},
		{"TakeLease", st.LeaseTable(), func() error { _, err := st.TakeLease(ctx, lease.Lease{ShardID: "s"}, "w"); return err }},
		{"ReadMeta", st.MetaTable(), func() error { _, err := st.ReadMeta(ctx); return err }},
		{"ClaimCoordinator", st.MetaTable(), func() error { _, err := st.ClaimCoordinator(ctx, "w", nil); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if !errors.Is(err, dynamostore.ErrTableNotFound) || !strings.Contains(err.Error(), c.table) {
				t.Errorf("err = %v, want ErrTableNotFound naming table %q", err, c.table)
			}
		})
	}
}

// pagingClient makes every Scan return at most two items so that pagination is exercised.
type pagingClient struct{ dynamostore.DynamoDB }

func (c pagingClient) Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	if !aws.ToBool(in.ConsistentRead) {
		return nil, errors.New("scan without ConsistentRead")
	}
	cp := *in
	cp.Limit = aws.Int32(2)
	return c.DynamoDB.Scan(ctx, &cp, o...)
}

func putRaw(t *testing.T, client dynamostore.DynamoDB, table string, item map[string]types.AttributeValue) {
	t.Helper()
	if _, err := client.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		t.Fatalf("put raw item %v: %v", item, err)
	}
}

func S(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func N(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

// An empty coordinator_id (as another tool might write) counts as no coordinator.
func TestClaimCoordinatorWithEmptyStoredID(t *testing.T) {
	client := engineClient(t)
	st := newStore(t, client)
	if err := st.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	c, err := st.ClaimCoordinator(t.Context(), "w1", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(st.MetaTable()),
		Key:                       map[string]types.AttributeValue{"worker_id": S(st.CoordinatorKey())},
		UpdateExpression:          aws.String("SET coordinator_id = :e"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":e": S("")},
	})
	if err != nil {
		t.Fatalf("engine refused an empty string attribute: %v", err)
	}
	c.CoordinatorID = ""
	got, err := st.ClaimCoordinator(t.Context(), "w2", &c)
	if err != nil {
		t.Fatal(err)
	}
	if got.CoordinatorID != "w2" || got.Epoch != 2 {
		t.Errorf("claim: %+v", got)
	}
}

// A coordinator item without a usable epoch or id (written by hand, or by a broken tool)
// would block every claim forever; a claim that saw no record replaces it, exactly once,
// and a usable item is never replaced that way.
func TestUnreadableCoordinatorItemIsReplacedOnce(t *testing.T) {
	for name, item := range map[string]map[string]types.AttributeValue{
		"epoch as a string": {"epoch": S("seven"), "coordinator_id": S("ghost")},
		"no epoch":          {"coordinator_id": S("ghost")},
		"id as a number":    {"epoch": N("3"), "coordinator_id": N("7")},
	} {
		t.Run(name, func(t *testing.T) {
			client := engineClient(t)
			st := newStore(t, client)
			ctx := t.Context()
			if err := st.EnsureTables(ctx); err != nil {
				t.Fatal(err)
			}
			item["worker_id"] = S(st.CoordinatorKey())
			putRaw(t, client, st.MetaTable(), item)
			m, err := st.ReadMeta(ctx)
			if err != nil || m.Coordinator != nil || len(m.Corrupt) != 1 {
				t.Fatalf("ReadMeta = %+v, %v: want the coordinator item reported corrupt", m, err)
			}
			var wg sync.WaitGroup
			errs := make([]error, 5)
			for i := range errs {
				wg.Go(func() { _, errs[i] = st.ClaimCoordinator(ctx, fmt.Sprintf("w%d", i), nil) })
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, lease.ErrConflict):
					t.Errorf("claim: %v", err)
				}
			}
			if won != 1 {
				t.Fatalf("%d claims replaced the unreadable item, want exactly 1", won)
			}
			if m, _ := st.ReadMeta(ctx); m.Coordinator == nil || m.Coordinator.Epoch != 1 || len(m.Corrupt) != 0 {
				t.Fatalf("after the claim: %+v", m)
			}
		})
	}
}
