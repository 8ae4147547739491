package dynamostore_test

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// Lease items of exactly the KCL's shape (KCL 2.x and 3.x DynamoDBLeaseSerializer:
// leaseKey S, leaseOwner S, leaseCounter N, ownerSwitchesSinceCheckpoint N, checkpoint S,
// checkpointSubSequenceNumber N, pendingCheckpoint S, pendingCheckpointSubSequenceNumber N,
// pendingCheckpointState B, parentShardId SS, childShardIds SS, startingHashKey and
// endingHashKey S (hashKeyRangeForLease), and 3.x's throughputKBps N and checkpointOwner S),
// written raw, then read and written through the store, then read back raw.

type rawItem = map[string]types.AttributeValue

const kclSeq = "49590338271490256608559692538361571095921575989136588898"

// kclLease is a lease item as a KCL 3.x worker "kcl-worker-1" leaves it: held, with a
// prepared checkpoint, a measured throughput and a hand-off to "kcl-worker-2" under way.
func kclLease(key string) rawItem {
	return rawItem{
		"leaseKey":                           S(key),
		"leaseOwner":                         S("kcl-worker-2"),
		"checkpointOwner":                    S("kcl-worker-1"),
		"leaseCounter":                       N("41"),
		"ownerSwitchesSinceCheckpoint":       N("2"),
		"checkpoint":                         S(kclSeq),
		"checkpointSubSequenceNumber":        N("3"),
		"pendingCheckpoint":                  S("49590338271490256608559692538361571095921575989136588999"),
		"pendingCheckpointSubSequenceNumber": N("0"),
		"pendingCheckpointState":             &types.AttributeValueMemberB{Value: []byte("state")},
		"parentShardId":                      &types.AttributeValueMemberSS{Value: []string{"shardId-000000000001", "shardId-000000000002"}},
		"startingHashKey":                    S("0"),
		"endingHashKey":                      S("170141183460469231731687303715884105727"),
		"throughputKBps":                     N("12.5"),
	}
}

// edit returns a copy of item with kv applied: name, value pairs; a nil value removes.
func edit(item rawItem, kv ...any) rawItem {
	out := maps.Clone(item)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1].(types.AttributeValue)
	}
	return out
}

func getRaw(t *testing.T, client dynamostore.DynamoDB, table, key string) rawItem {
	t.Helper()
	out, err := client.GetItem(t.Context(), &dynamodb.GetItemInput{TableName: aws.String(table),
		Key: rawItem{"leaseKey": S(key)}, ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatalf("GetItem %s: %v", key, err)
	}
	return sortedSets(out.Item)
}

// sortedSets returns item with its string sets sorted: a set has no order.
func sortedSets(item rawItem) rawItem {
	out := maps.Clone(item)
	for k, v := range out {
		if ss, ok := v.(*types.AttributeValueMemberSS); ok {
			out[k] = &types.AttributeValueMemberSS{Value: slices.Sorted(slices.Values(ss.Value))}
		}
	}
	return out
}

func ss(v ...string) types.AttributeValue { return &types.AttributeValueMemberSS{Value: v} }

// A KCL table's lease decodes with its parents, hash key range, children and checkpoint.
func TestKCLLeaseDecodes(t *testing.T) {
	st := readyEngineStore(t)
	closed := edit(kclLease("shardId-000000000003"), "checkpoint", S("SHARD_END"), "checkpointSubSequenceNumber", N("0"),
		"childShardIds", ss("shardId-000000000005", "shardId-000000000004"), "leaseOwner", nil, "checkpointOwner", nil)
	putRaw(t, st.client, st.LeaseTable(), kclLease("shardId-000000000003x"))
	putRaw(t, st.client, st.LeaseTable(), closed)
	tests := []struct {
		key  string
		want lease.Lease
	}{
		{"shardId-000000000003x", lease.Lease{ShardID: "shardId-000000000003x", Owner: "kcl-worker-2", Epoch: 41, Checkpoint: kclSeq,
			CheckpointSubSequence: 3, ParentShardIDs: []string{"shardId-000000000001", "shardId-000000000002"},
			StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727"}},
		{"shardId-000000000003", lease.Lease{ShardID: "shardId-000000000003", Epoch: 41, Checkpoint: lease.ShardEnd,
			ParentShardIDs: []string{"shardId-000000000001", "shardId-000000000002"}, ChildShardIDs: []string{"shardId-000000000004", "shardId-000000000005"},
			StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727"}},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			got, err := st.GetLease(t.Context(), tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("GetLease\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	table, err := st.ListLeases(t.Context())
	if err != nil || len(table.Leases) != 2 || len(table.Corrupt) != 0 {
		t.Errorf("ListLeases = %d leases, corrupt %v, %v; want 2 leases", len(table.Leases), table.Corrupt, err)
	}
}

// Our takes, checkpoints and releases of a KCL lease change exactly what the KCL's own
// would, and keep every other attribute of the item.
func TestKCLLeaseWrites(t *testing.T) {
	const key = "shardId-000000000007"
	// With children already recorded (a closed shard being finished), so that every
	// write shows it keeps them.
	base := edit(kclLease(key), "childShardIds", ss("shardId-000000000012", "shardId-000000000013"))
	free := edit(base, "leaseOwner", nil, "checkpointOwner", nil)
	tests := []struct {
		name   string
		stored rawItem
		op     func(ctx context.Context, st engineStore, l lease.Lease) error
		want   rawItem
	}{
		{"take from a KCL owner: owner switch counted, hand-off ended", base,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				_, err := st.TakeLease(ctx, l, "kds-0")
				return err
			},
			edit(base, "leaseOwner", S("kds-0"), "leaseCounter", N("42"), "ownerSwitchesSinceCheckpoint", N("3"), "checkpointOwner", nil)},
		{"take of a free lease: no owner switch", free,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				_, err := st.TakeLease(ctx, l, "kds-0")
				return err
			},
			edit(free, "leaseOwner", S("kds-0"), "leaseCounter", N("42"))},
		{"take by the same owner: no owner switch", base,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				_, err := st.TakeLease(ctx, l, "kcl-worker-2")
				return err
			},
			edit(base, "leaseCounter", N("42"), "checkpointOwner", nil)},
		{"checkpoint: owner switches back to 0, prepared checkpoint replaced", base,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				return st.Checkpoint(ctx, l, lease.ExtendedSequenceNumber{SequenceNumber: "600", SubSequenceNumber: 1}, 250)
			},
			edit(base, "checkpoint", S("600"), "checkpointSubSequenceNumber", N("1"), "ownerSwitchesSinceCheckpoint", N("0"),
				"pendingCheckpoint", nil, "pendingCheckpointSubSequenceNumber", nil, "pendingCheckpointState", nil, "millisBehindLatest", N("250"))},
		{"release without a checkpoint: only owner, hand-off and counter", base,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				return st.ReleaseLease(ctx, l, lease.ExtendedSequenceNumber{})
			},
			edit(base, "leaseOwner", nil, "checkpointOwner", nil, "leaseCounter", N("42"))},
		{"release with a checkpoint", base,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				return st.ReleaseLease(ctx, l, lease.ExtendedSequenceNumber{SequenceNumber: "700"})
			},
			edit(base, "leaseOwner", nil, "checkpointOwner", nil, "leaseCounter", N("42"), "checkpoint", S("700"),
				"checkpointSubSequenceNumber", N("0"), "ownerSwitchesSinceCheckpoint", N("0"),
				"pendingCheckpoint", nil, "pendingCheckpointSubSequenceNumber", nil, "pendingCheckpointState", nil)},
		{"release at SHARD_END records the children", base,
			func(ctx context.Context, st engineStore, l lease.Lease) error {
				l.ChildShardIDs = []string{"shardId-000000000009", "shardId-000000000008"}
				return st.ReleaseLease(ctx, l, lease.ExtendedSequenceNumber{SequenceNumber: lease.ShardEnd})
			},
			edit(base, "leaseOwner", nil, "checkpointOwner", nil, "leaseCounter", N("42"), "checkpoint", S("SHARD_END"),
				"checkpointSubSequenceNumber", N("0"), "ownerSwitchesSinceCheckpoint", N("0"),
				"pendingCheckpoint", nil, "pendingCheckpointSubSequenceNumber", nil, "pendingCheckpointState", nil,
				"childShardIds", ss("shardId-000000000008", "shardId-000000000009"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := readyEngineStore(t)
			putRaw(t, st.client, st.LeaseTable(), tc.stored)
			l, err := st.GetLease(t.Context(), key)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.op(t.Context(), st, l); err != nil {
				t.Fatal(err)
			}
			if got, want := getRaw(t, st.client, st.LeaseTable(), key), sortedSets(tc.want); !reflect.DeepEqual(got, want) {
				t.Errorf("stored item\n got %v\nwant %v", show(got), show(want))
			}
		})
	}
}

// show renders an item for a failure message.
func show(item rawItem) map[string]any {
	out := make(map[string]any, len(item))
	for k, v := range item {
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			out[k] = "S:" + v.Value
		case *types.AttributeValueMemberN:
			out[k] = "N:" + v.Value
		case *types.AttributeValueMemberSS:
			out[k] = v.Value
		case *types.AttributeValueMemberB:
			out[k] = "B:" + string(v.Value)
		default:
			out[k] = v
		}
	}
	return out
}

// The other direction: a lease we create and work has every attribute the KCL reads, of
// the KCL's type, and the KCL's own conditional take (expected counter, no owner) and
// checkpoint (expected counter and owner) succeed on it.
func TestKCLTakesBackOurLease(t *testing.T) {
	const key = "shardId-000000000011"
	st := readyEngineStore(t)
	ctx := t.Context()
	err := st.CreateLease(ctx, lease.Lease{ShardID: key, Checkpoint: lease.TrimHorizon,
		ParentShardIDs: []string{"shardId-000000000010"}, StartingHashKey: "5", EndingHashKey: "9"})
	if err != nil {
		t.Fatal(err)
	}
	created := getRaw(t, st.client, st.LeaseTable(), key)
	want := rawItem{"leaseKey": S(key), "leaseCounter": N("0"), "checkpoint": S("TRIM_HORIZON"),
		"ownerSwitchesSinceCheckpoint": N("0"), "parentShardId": ss("shardId-000000000010"),
		"startingHashKey": S("5"), "endingHashKey": S("9"), "itemVersion": N("1")}
	if !reflect.DeepEqual(created, want) {
		t.Errorf("created item\n got %v\nwant %v", show(created), show(want))
	}

	// Worked by us: taken, checkpointed inside an aggregate, released.
	l, err := st.GetLease(ctx, key)
	if err == nil {
		l, err = st.TakeLease(ctx, l, "kds-0")
	}
	if err == nil {
		err = st.Checkpoint(ctx, l, lease.ExtendedSequenceNumber{SequenceNumber: "123", SubSequenceNumber: 2}, 0)
	}
	if err == nil {
		err = st.ReleaseLease(ctx, l, lease.ExtendedSequenceNumber{})
	}
	if err != nil {
		t.Fatal(err)
	}
	released := getRaw(t, st.client, st.LeaseTable(), key)
	str, num, set := &types.AttributeValueMemberS{}, &types.AttributeValueMemberN{}, &types.AttributeValueMemberSS{}
	kclTypes := map[string]types.AttributeValue{"leaseKey": str, "leaseCounter": num, "checkpoint": str, "checkpointSubSequenceNumber": num,
		"ownerSwitchesSinceCheckpoint": num, "parentShardId": set, "startingHashKey": str, "endingHashKey": str}
	for attr, typ := range kclTypes {
		if got := reflect.TypeOf(released[attr]); got != reflect.TypeOf(typ) {
			t.Errorf("%s is %v, want %T (the KCL's type)", attr, got, typ)
		}
	}
	if _, ok := released["leaseOwner"]; ok {
		t.Errorf("released lease has a leaseOwner: %v", show(released))
	}

	// The KCL's take: PUT leaseOwner, leaseCounter+1, expected counter and no owner.
	kclUpdate(t, st.client, st.LeaseTable(), key,
		"SET leaseOwner = :o, leaseCounter = :next", "leaseCounter = :c AND attribute_not_exists(leaseOwner)",
		rawItem{":o": S("kcl-worker-1"), ":next": N("3"), ":c": N("2")})
	// The KCL's checkpoint: expected counter and owner (and, in 3.x, no checkpointOwner).
	kclUpdate(t, st.client, st.LeaseTable(), key,
		"SET checkpoint = :cp, checkpointSubSequenceNumber = :sub, ownerSwitchesSinceCheckpoint = :zero",
		"leaseCounter = :c AND leaseOwner = :o AND attribute_not_exists(checkpointOwner)",
		rawItem{":cp": S("456"), ":sub": N("0"), ":zero": N("0"), ":c": N("3"), ":o": S("kcl-worker-1")})
	back, err := st.GetLease(ctx, key)
	if err != nil || back.Owner != "kcl-worker-1" || back.Checkpoint != "456" || back.Epoch != 3 {
		t.Errorf("after the KCL's take and checkpoint: %+v, %v", back, err)
	}
}

func kclUpdate(t *testing.T, client dynamostore.DynamoDB, table, key, update, cond string, values rawItem) {
	t.Helper()
	_, err := client.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{TableName: aws.String(table), Key: rawItem{"leaseKey": S(key)},
		UpdateExpression: aws.String(update), ConditionExpression: aws.String(cond), ExpressionAttributeValues: values})
	if err != nil {
		t.Fatalf("the KCL's write %q if %q: %v", update, cond, err)
	}
}

// createKCLTable creates a lease table as KCL 3.x does: hash key leaseKey (S), on-demand,
// with the index LeaseOwnerToLeaseKeyIndex (leaseOwner, leaseKey). It is deleted at the
// end of the test.
func createKCLTable(t *testing.T, client dynamostore.DynamoDB, table string) {
	t.Helper()
	ctx := t.Context()
	_, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("leaseKey"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("leaseOwner"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: types.KeyTypeHash}},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String("LeaseOwnerToLeaseKeyIndex"),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("leaseOwner"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("leaseKey"), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeKeysOnly},
		}},
	})
	if err != nil {
		t.Fatalf("create the KCL table: %v", err)
	}
	t.Cleanup(func() {
		_, _ = client.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	for {
		out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		if err != nil {
			t.Fatal(err)
		}
		if out.Table.TableStatus == types.TableStatusActive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func adoptingStore(t *testing.T, client dynamostore.DynamoDB, leaseTable string) *dynamostore.Store {
	t.Helper()
	st, err := dynamostore.New(client, uniqueName(t, "app"), dynamostore.WithLeaseTable(leaseTable),
		dynamostore.WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.DeleteTables(context.Background()) })
	return st
}

// A store adopts an existing KCL lease table: it creates only its metadata table, reads
// and takes the KCL's leases, and DeleteTables leaves the adopted table alone.
func TestAdoptKCLTable(t *testing.T) {
	client := engineClient(t)
	kclApp := uniqueName(t, "kclapp")
	createKCLTable(t, client, kclApp)
	putRaw(t, client, kclApp, kclLease("shardId-000000000000"))
	st := adoptingStore(t, client, kclApp)
	if st.LeaseTable() != kclApp {
		t.Errorf("LeaseTable() = %q, want %q", st.LeaseTable(), kclApp)
	}
	for i := range 2 {
		if err := st.EnsureTables(t.Context()); err != nil {
			t.Fatalf("EnsureTables call %d: %v", i+1, err)
		}
	}
	if err := st.CheckTables(t.Context()); err != nil {
		t.Errorf("CheckTables: %v", err)
	}
	l, err := st.GetLease(t.Context(), "shardId-000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.TakeLease(t.Context(), l, "kds-0"); err != nil {
		t.Errorf("TakeLease of the KCL's lease: %v", err)
	}
	if err := st.DeleteTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(kclApp)}); err != nil {
		t.Errorf("the adopted table after DeleteTables: %v, want it kept", err)
	}
}

// A lease table to adopt that does not exist is an error naming it, and nothing is created.
func TestAdoptMissingTable(t *testing.T) {
	client := engineClient(t)
	missing := uniqueName(t, "nokcl")
	st := adoptingStore(t, client, missing)
	for name, check := range map[string]func(context.Context) error{"EnsureTables": st.EnsureTables, "CheckTables": st.CheckTables} {
		err := check(t.Context())
		if !errors.Is(err, dynamostore.ErrTableNotFound) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "never created") {
			t.Errorf("%s: %v; want ErrTableNotFound naming %q, saying it is never created", name, err, missing)
		}
	}
	for _, table := range []string{missing, st.MetaTable()} {
		if _, err := client.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(table)}); err == nil {
			t.Errorf("table %q was created", table)
		}
	}
}

func TestWithLeaseTableRefusesBadNames(t *testing.T) {
	for _, tc := range []struct{ app, table, want string }{
		{"app", "x", `lease table name "x" is not a valid DynamoDB table name`},
		{"app", "kcl app", `lease table name "kcl app" is not a valid`},
		{"app", "app_meta", `lease table "app_meta" is the application's metadata table`},
	} {
		_, err := dynamostore.New(engineClientless{}, tc.app, dynamostore.WithLeaseTable(tc.table))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, WithLeaseTable(%q)) = %v, want %q", tc.app, tc.table, err, tc.want)
		}
	}
}

// engineClientless is a client for tests that make no call.
type engineClientless struct{ dynamostore.DynamoDB }
