package dynamostore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
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

// readyStore returns a store whose tables exist.
func readyStore(t *testing.T) *dynamostore.Store {
	t.Helper()
	st := newStore(t, nil)
	if err := st.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
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

func TestMissingTable(t *testing.T) {
	st := newStore(t, nil) // tables never created
	ctx := t.Context()
	l := lease.Lease{ShardID: "s", Owner: "w", Epoch: 1, Checkpoint: lease.TrimHorizon}
	calls := []struct {
		name  string
		table string
		call  func() error
	}{
		{"ListLeases", st.LeaseTable(), func() error { _, err := st.ListLeases(ctx); return err }},
		{"GetLease", st.LeaseTable(), func() error { _, err := st.GetLease(ctx, "s"); return err }},
		{"CreateLease", st.LeaseTable(), func() error { return st.CreateLease(ctx, l) }},
		{"TakeLease", st.LeaseTable(), func() error { _, err := st.TakeLease(ctx, l, "w2"); return err }},
		{"ReleaseLease", st.LeaseTable(), func() error { return st.ReleaseLease(ctx, l, "") }},
		{"Checkpoint", st.LeaseTable(), func() error { return st.Checkpoint(ctx, l, "1", -1) }},
		{"DeleteLease", st.LeaseTable(), func() error { return st.DeleteLease(ctx, l) }},
		{"ReadMeta", st.MetaTable(), func() error { _, err := st.ReadMeta(ctx); return err }},
		{"PutWorker", st.MetaTable(), func() error { return st.PutWorker(ctx, lease.WorkerRecord{WorkerID: "w"}) }},
		{"DeleteWorker", st.MetaTable(), func() error { return st.DeleteWorker(ctx, "w", 1) }},
		{"ClaimCoordinator", st.MetaTable(), func() error { _, err := st.ClaimCoordinator(ctx, "w", nil); return err }},
		{"UpdateCoordinator", st.MetaTable(), func() error {
			_, err := st.UpdateCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: "w", Epoch: 1})
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if !errors.Is(err, dynamostore.ErrTableNotFound) {
				t.Fatalf("err = %v, want ErrTableNotFound", err)
			}
			if !strings.Contains(err.Error(), c.table) {
				t.Errorf("message %q does not name table %q", err, c.table)
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

func TestCreateGetListLeases(t *testing.T) {
	st := newStore(t, pagingClient{engineClient(t)})
	ctx := t.Context()
	if err := st.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]lease.Lease{}
	for i := range 5 {
		l := lease.Lease{ShardID: fmt.Sprintf("shardId-%012d", i), Checkpoint: lease.TrimHorizon}
		if i == 3 {
			l.Checkpoint = lease.AtTimestamp
			l.StartTimestamp = testNow.Truncate(time.Millisecond)
			l.ParentShardIDs = []string{"shardId-000000000001", "shardId-000000000002"}
		}
		if err := st.CreateLease(ctx, l); err != nil {
			t.Fatalf("create %s: %v", l.ShardID, err)
		}
		want[l.ShardID] = l
	}
	// Owner and counter of a created lease are ignored: it starts free at 0.
	err := st.CreateLease(ctx, lease.Lease{ShardID: "shardId-000000000000", Owner: "w", Epoch: 9, Checkpoint: "1"})
	if !errors.Is(err, lease.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}

	got, err := st.GetLease(ctx, "shardId-000000000003")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want["shardId-000000000003"]) {
		t.Errorf("GetLease:\n got %+v\nwant %+v", got, want["shardId-000000000003"])
	}
	if _, err := st.GetLease(ctx, "nope"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("GetLease of missing lease: %v, want ErrNotFound", err)
	}

	table, err := st.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.Corrupt) != 0 {
		t.Errorf("corrupt: %v", table.Corrupt)
	}
	gotAll := map[string]lease.Lease{}
	for _, l := range table.Leases {
		gotAll[l.ShardID] = l
	}
	if !reflect.DeepEqual(gotAll, want) {
		t.Errorf("ListLeases:\n got %+v\nwant %+v", gotAll, want)
	}
}

func createFree(t *testing.T, st *dynamostore.Store, shardID string) lease.Lease {
	t.Helper()
	l := lease.Lease{ShardID: shardID, Checkpoint: lease.TrimHorizon}
	if err := st.CreateLease(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	return l
}

func mustGet(t *testing.T, st *dynamostore.Store, shardID string) lease.Lease {
	t.Helper()
	l, err := st.GetLease(t.Context(), shardID)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestTakeLease(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()
	free := createFree(t, st, "s1")

	w1, err := st.TakeLease(ctx, free, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if w1.Owner != "w1" || w1.Epoch != 1 || w1.Checkpoint != lease.TrimHorizon {
		t.Errorf("after take: %+v", w1)
	}
	if got := mustGet(t, st, "s1"); !reflect.DeepEqual(got, w1) {
		t.Errorf("stored %+v, returned %+v", got, w1)
	}

	// The free observation is stale now.
	if _, err := st.TakeLease(ctx, free, "w2"); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("take with stale free observation: %v, want ErrConflict", err)
	}
	// Right counter, wrong owner.
	if _, err := st.TakeLease(ctx, lease.Lease{ShardID: "s1", Owner: "w3", Epoch: 1}, "w2"); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("take with wrong owner: %v, want ErrConflict", err)
	}
	// Right owner, wrong counter.
	if _, err := st.TakeLease(ctx, lease.Lease{ShardID: "s1", Owner: "w1", Epoch: 0}, "w2"); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("take with stale counter: %v, want ErrConflict", err)
	}
	if got := mustGet(t, st, "s1"); !reflect.DeepEqual(got, w1) {
		t.Errorf("failed takes changed the lease: %+v", got)
	}

	// Stealing with a current observation works and increments again.
	w2, err := st.TakeLease(ctx, w1, "w2")
	if err != nil {
		t.Fatal(err)
	}
	if w2.Owner != "w2" || w2.Epoch != 2 {
		t.Errorf("after steal: %+v", w2)
	}

	// A missing lease is never created by a take.
	if _, err := st.TakeLease(ctx, lease.Lease{ShardID: "ghost"}, "w1"); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("take of missing lease: %v, want ErrConflict", err)
	}
	if _, err := st.GetLease(ctx, "ghost"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("take created a lease: %v", err)
	}
}

// The lag travels with the checkpoint; an unknown lag (-1) leaves it as it was.
func TestCheckpointCarriesLag(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()
	held, err := st.TakeLease(ctx, createFree(t, st, "s1"), "w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Checkpoint(ctx, held, "110", 1234); err != nil {
		t.Fatal(err)
	}
	if err := st.Checkpoint(ctx, held, "120", -1); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, st, "s1"); got.Checkpoint != "120" || got.MillisBehindLatest != 1234 {
		t.Errorf("after checkpoints with lag: %+v, want checkpoint 120 and lag 1234", got)
	}
}

func TestCheckpointFencing(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()
	held, err := st.TakeLease(ctx, createFree(t, st, "s1"), "w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Checkpoint(ctx, held, "100", -1); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, st, "s1"); got.Checkpoint != "100" || got.Epoch != held.Epoch {
		t.Errorf("after checkpoint: %+v", got)
	}

	// w2 steals; w1's view is now stale.
	stolen, err := st.TakeLease(ctx, mustGet(t, st, "s1"), "w2")
	if err != nil {
		t.Fatal(err)
	}
	stale := []struct {
		name string
		l    lease.Lease
	}{
		{"old owner and counter", held},
		{"old owner, new counter", lease.Lease{ShardID: "s1", Owner: "w1", Epoch: stolen.Epoch}},
		{"new owner, old counter", lease.Lease{ShardID: "s1", Owner: "w2", Epoch: held.Epoch}},
	}
	for _, tt := range stale {
		t.Run(tt.name, func(t *testing.T) {
			if err := st.Checkpoint(ctx, tt.l, "999", -1); !errors.Is(err, lease.ErrConflict) {
				t.Errorf("stale checkpoint: %v, want ErrConflict", err)
			}
			if got := mustGet(t, st, "s1"); got.Checkpoint != "100" {
				t.Errorf("stale checkpoint was stored: %+v", got)
			}
		})
	}
	if err := st.Checkpoint(ctx, stolen, "200", -1); err != nil {
		t.Errorf("checkpoint by new holder: %v", err)
	}
}

func TestReleaseLease(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()
	held, err := st.TakeLease(ctx, createFree(t, st, "s1"), "w1")
	if err != nil {
		t.Fatal(err)
	}

	if err := st.ReleaseLease(ctx, lease.Lease{ShardID: "s1", Owner: "w1", Epoch: 0}, "5"); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("stale release: %v, want ErrConflict", err)
	}
	if err := st.ReleaseLease(ctx, held, "300"); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, st, "s1")
	want := lease.Lease{ShardID: "s1", Epoch: 2, Checkpoint: "300"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after release:\n got %+v\nwant %+v", got, want)
	}
	// Releasing twice fails: the counter moved on.
	if err := st.ReleaseLease(ctx, held, ""); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("second release: %v, want ErrConflict", err)
	}

	// A released lease is free for the next taker, and a release without a checkpoint
	// keeps the stored one.
	again, err := st.TakeLease(ctx, got, "w2")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ReleaseLease(ctx, again, ""); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, st, "s1"); got.Owner != "" || got.Epoch != 4 || got.Checkpoint != "300" {
		t.Errorf("after release without checkpoint: %+v", got)
	}
}

func TestDeleteLease(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()
	free := createFree(t, st, "s1")
	held, err := st.TakeLease(ctx, free, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteLease(ctx, free); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("delete with stale observation: %v, want ErrConflict", err)
	}
	if err := st.DeleteLease(ctx, held); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLease(ctx, "s1"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("after delete: %v, want ErrNotFound", err)
	}
	if err := st.DeleteLease(ctx, held); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("delete of deleted lease: %v, want ErrConflict", err)
	}
	// A free lease is deleted with a free observation.
	free2 := createFree(t, st, "s2")
	if err := st.DeleteLease(ctx, free2); err != nil {
		t.Errorf("delete free lease: %v", err)
	}
}

func putRaw(t *testing.T, client dynamostore.DynamoDB, table string, item map[string]types.AttributeValue) {
	t.Helper()
	if _, err := client.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		t.Fatalf("put raw item %v: %v", item, err)
	}
}

func S(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func N(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

func TestCorruptLeases(t *testing.T) {
	client := engineClient(t)
	st := newStore(t, client)
	ctx := t.Context()
	if err := st.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	good := createFree(t, st, "good")
	raw := map[string]struct {
		item   map[string]types.AttributeValue
		reason string
	}{
		"no-counter":     {map[string]types.AttributeValue{"leaseKey": S("no-counter"), "checkpoint": S("1")}, "leaseCounter: missing"},
		"string-counter": {map[string]types.AttributeValue{"leaseKey": S("string-counter"), "leaseCounter": S("1"), "checkpoint": S("1")}, "leaseCounter: is a string (S), expected an integer (N)"},
		"no-checkpoint":  {map[string]types.AttributeValue{"leaseKey": S("no-checkpoint"), "leaseCounter": N("1")}, "checkpoint: missing"},
		"number-owner":   {map[string]types.AttributeValue{"leaseKey": S("number-owner"), "leaseCounter": N("1"), "checkpoint": S("1"), "leaseOwner": N("7")}, "leaseOwner: is a number (N)"},
		"future":         {map[string]types.AttributeValue{"leaseKey": S("future"), "leaseCounter": N("1"), "checkpoint": S("1"), "itemVersion": N("99")}, "written by a newer version (itemVersion 99)"},
	}
	for _, r := range raw {
		putRaw(t, client, st.LeaseTable(), r.item)
	}

	table, err := st.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.Leases) != 1 || !reflect.DeepEqual(table.Leases[0], good) {
		t.Errorf("valid leases = %+v, want only %+v", table.Leases, good)
	}
	if len(table.Corrupt) != len(raw) {
		t.Errorf("corrupt = %v, want %d entries", table.Corrupt, len(raw))
	}
	for _, c := range table.Corrupt {
		r, ok := raw[c.Key]
		if !ok {
			t.Errorf("unexpected corrupt entry %v", c)
			continue
		}
		if !strings.Contains(c.Reason, r.reason) {
			t.Errorf("%s: reason %q does not contain %q", c.Key, c.Reason, r.reason)
		}
	}

	if _, err := st.GetLease(ctx, "future"); !errors.Is(err, dynamostore.ErrCorrupt) || !strings.Contains(err.Error(), "itemVersion 99") {
		t.Errorf("GetLease of corrupt item: %v, want ErrCorrupt naming the version", err)
	}
}

func TestCoordinatorClaimRace(t *testing.T) {
	st := readyStore(t)
	const n = 10
	var wg sync.WaitGroup
	recs := make([]lease.CoordinatorRecord, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { recs[i], errs[i] = st.ClaimCoordinator(t.Context(), fmt.Sprintf("w%d", i), nil) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("both w%d and w%d claimed the role", winner, i)
			}
			winner = i
		case !errors.Is(err, lease.ErrConflict):
			t.Errorf("w%d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("nobody claimed the role")
	}
	m, err := st.ReadMeta(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if m.Coordinator == nil || !reflect.DeepEqual(*m.Coordinator, recs[winner]) {
		t.Errorf("stored %+v, winner got %+v", m.Coordinator, recs[winner])
	}
}

func TestCoordinatorLifecycle(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()

	c1, err := st.ClaimCoordinator(ctx, "w1", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := lease.CoordinatorRecord{CoordinatorID: "w1", Epoch: 1, UpdatedAt: testNow}
	if !reflect.DeepEqual(c1, want) {
		t.Errorf("first claim:\n got %+v\nwant %+v", c1, want)
	}

	// Update by the holder writes every value and increments the version.
	upd := c1
	upd.MaxLeasesPerWorker, upd.TargetLeasesPerWorker, upd.ShardCount, upd.WorkerCount = 4, 5, 8, 2
	upd.LiveWorkers, upd.Cap, upd.UnownedShards, upd.RecommendedWorkers, upd.LeaseGeneration = 1, 10, 0, 2, 3
	upd.Version = 77 // ignored: the store increments the stored version
	c1v1, err := st.UpdateCoordinator(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	wantV1 := upd
	wantV1.Version = 1
	if !reflect.DeepEqual(c1v1, wantV1) {
		t.Errorf("after update:\n got %+v\nwant %+v", c1v1, wantV1)
	}

	// Non-holders and stale epochs are refused.
	if _, err := st.UpdateCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: "w2", Epoch: 1}); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("update by non-holder: %v, want ErrConflict", err)
	}
	if _, err := st.UpdateCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: "w1", Epoch: 0}); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("update with stale epoch: %v, want ErrConflict", err)
	}
	if _, err := st.ClaimCoordinator(ctx, "w2", nil); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("claim as if missing: %v, want ErrConflict", err)
	}
	staleObs := c1v1
	staleObs.Epoch = 0
	if _, err := st.ClaimCoordinator(ctx, "w2", &staleObs); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("claim with stale epoch: %v, want ErrConflict", err)
	}
	wrongHolder := c1v1
	wrongHolder.CoordinatorID = "w9"
	if _, err := st.ClaimCoordinator(ctx, "w2", &wrongHolder); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("claim with wrong observed holder: %v, want ErrConflict", err)
	}

	// Resign, then another worker claims with what it reads; values are kept.
	if err := st.ResignCoordinator(ctx, lease.CoordinatorRecord{CoordinatorID: "w2", Epoch: 1}); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("resign by non-holder: %v, want ErrConflict", err)
	}
	if err := st.ResignCoordinator(ctx, c1v1); err != nil {
		t.Fatal(err)
	}
	m, err := st.ReadMeta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Coordinator == nil || m.Coordinator.CoordinatorID != "" || m.Coordinator.Epoch != 1 {
		t.Fatalf("after resign: %+v", m.Coordinator)
	}
	c2, err := st.ClaimCoordinator(ctx, "w2", m.Coordinator)
	if err != nil {
		t.Fatal(err)
	}
	wantC2 := wantV1
	wantC2.CoordinatorID, wantC2.Epoch = "w2", 2
	if !reflect.DeepEqual(c2, wantC2) {
		t.Errorf("claim after resign:\n got %+v\nwant %+v", c2, wantC2)
	}
	// The old holder is fenced off.
	if _, err := st.UpdateCoordinator(ctx, c1v1); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("update by former holder: %v, want ErrConflict", err)
	}
	if err := st.ResignCoordinator(ctx, c1v1); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("resign by former holder: %v, want ErrConflict", err)
	}
	// A live takeover (no resignation) also works with a current observation.
	c3, err := st.ClaimCoordinator(ctx, "w3", &c2)
	if err != nil {
		t.Fatal(err)
	}
	if c3.CoordinatorID != "w3" || c3.Epoch != 3 || c3.Version != 1 {
		t.Errorf("takeover: %+v", c3)
	}
}

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

func TestReadMeta(t *testing.T) {
	client := engineClient(t)
	st := newStore(t, client)
	ctx := t.Context()
	if err := st.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	workers := map[string]lease.WorkerRecord{}
	for i := range 3 {
		w := lease.WorkerRecord{
			WorkerID:    fmt.Sprintf("w%d", i),
			Incarnation: fmt.Sprintf("inc-%d", i),
			Heartbeat:   int64(10 * i),
			State:       lease.WorkerActive,
			LeasesHeld:  i,
			LastSeen:    testNow.Add(time.Duration(i) * time.Second),
			StartedAt:   testNow.Add(-time.Hour),
		}
		if err := st.PutWorker(ctx, w); err != nil {
			t.Fatal(err)
		}
		workers[w.WorkerID] = w
	}
	// PutWorker overwrites.
	w1 := workers["w1"]
	w1.Heartbeat, w1.State = 11, lease.WorkerGone
	if err := st.PutWorker(ctx, w1); err != nil {
		t.Fatal(err)
	}
	workers["w1"] = w1
	if err := st.PutWorker(ctx, lease.WorkerRecord{WorkerID: st.CoordinatorKey()}); err == nil {
		t.Error("PutWorker accepted the coordinator key")
	}
	coord, err := st.ClaimCoordinator(ctx, "w0", nil)
	if err != nil {
		t.Fatal(err)
	}
	putRaw(t, client, st.MetaTable(), map[string]types.AttributeValue{"worker_id": S("bad"), "heartbeat": S("x")})

	m, err := st.ReadMeta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Coordinator == nil || !reflect.DeepEqual(*m.Coordinator, coord) {
		t.Errorf("coordinator = %+v, want %+v", m.Coordinator, coord)
	}
	got := map[string]lease.WorkerRecord{}
	for _, w := range m.Workers {
		got[w.WorkerID] = w
	}
	if !reflect.DeepEqual(got, workers) {
		t.Errorf("workers:\n got %+v\nwant %+v", got, workers)
	}
	if len(m.Corrupt) != 1 || m.Corrupt[0].Key != "bad" {
		t.Errorf("corrupt = %v, want the item \"bad\"", m.Corrupt)
	}

	// A corrupt coordinator item leaves Coordinator nil and is reported.
	putRaw(t, client, st.MetaTable(), map[string]types.AttributeValue{"worker_id": S(st.CoordinatorKey()), "epoch": S("1")})
	m, err = st.ReadMeta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Coordinator != nil {
		t.Errorf("corrupt coordinator decoded as %+v", m.Coordinator)
	}
	found := false
	for _, c := range m.Corrupt {
		if c.Key == st.CoordinatorKey() && strings.Contains(c.Reason, "epoch") {
			found = true
		}
	}
	if !found || len(m.Workers) != 3 {
		t.Errorf("corrupt = %v, workers = %d", m.Corrupt, len(m.Workers))
	}
}

func TestDeleteWorker(t *testing.T) {
	st := readyStore(t)
	ctx := t.Context()
	w := lease.WorkerRecord{WorkerID: "w1", Incarnation: "i", Heartbeat: 5, State: lease.WorkerActive, LastSeen: testNow, StartedAt: testNow}
	if err := st.PutWorker(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteWorker(ctx, "w1", 4); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("delete with stale heartbeat: %v, want ErrConflict", err)
	}
	m, err := st.ReadMeta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Workers) != 1 {
		t.Fatalf("stale delete removed the worker: %+v", m.Workers)
	}
	if err := st.DeleteWorker(ctx, "w1", 5); err != nil {
		t.Fatal(err)
	}
	if m, err := st.ReadMeta(ctx); err != nil || len(m.Workers) != 0 {
		t.Errorf("after delete: %+v, %v", m.Workers, err)
	}
	if err := st.DeleteWorker(ctx, "w1", 5); !errors.Is(err, lease.ErrConflict) {
		t.Errorf("delete of deleted worker: %v, want ErrConflict", err)
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
