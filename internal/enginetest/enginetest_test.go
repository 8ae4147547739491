package enginetest_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

func TestMain(m *testing.M) { enginetest.Main(m) }

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	a, b := enginetest.UniqueName(t, "app"), enginetest.UniqueName(t, "app")
	if a == b {
		t.Errorf("two calls returned %q", a)
	}
	long := enginetest.UniqueName(t, "x/"+strings.Repeat("y", 300))
	for _, n := range []string{a, long} {
		if !valid.MatchString(n) {
			t.Errorf("%q is not a valid stream/table name", n)
		}
	}
	if !strings.HasPrefix(a, "app-TestUniqueName-") {
		t.Errorf("%q does not say which test it belongs to", a)
	}
}

func TestCreateStreamAndStats(t *testing.T) {
	name := enginetest.UniqueName(t, "s")
	enginetest.CreateStream(t, name, 3)
	out, err := enginetest.Kinesis(t).DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToInt32(out.StreamDescriptionSummary.OpenShardCount); got != 3 {
		t.Errorf("open shards = %d, want 3", got)
	}

	before := enginetest.Stats(t)
	for range 3 {
		if _, err := enginetest.DynamoDB(t).ListTables(t.Context(), &dynamodb.ListTablesInput{}); err != nil {
			t.Fatal(err)
		}
	}
	d := enginetest.Stats(t).Sub(before)
	if got := d.Calls[localengines.Call{Service: localengines.DynamoDB, Operation: "ListTables"}]; got != 3 {
		t.Errorf("edge counted %d ListTables, want 3 (delta %v)", got, d)
	}
}

// The edge measures the capacity units dynalite reports, at DynamoDB's rates, and adds
// those dynalite does not charge (a failed conditional write) or halves (a consistent Scan).
//
// The client makes one attempt per call: a retry would send a request the expected
// counts below do not hold (CI saw one GetItem charged twice), and a failed attempt
// should fail the test with its cause rather than be counted silently.
func TestEdgeCapacityOnDynalite(t *testing.T) {
	cfg := enginetest.AWSConfig(t)
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	ddb := dynamodb.NewFromConfig(cfg)
	ctx := t.Context()
	table := enginetest.UniqueName(t, "cap")
	if _, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table),
		BillingMode:          dtypes.BillingModePayPerRequest,
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: dtypes.KeyTypeHash}},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	if err := dynamodb.NewTableExistsWaiter(ddb).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute); err != nil {
		t.Fatal(err)
	}
	key := func(k string) map[string]dtypes.AttributeValue {
		return map[string]dtypes.AttributeValue{"k": &dtypes.AttributeValueMemberS{Value: k}}
	}
	big := key("big") // 1 + 3 + 4 + 5000 bytes: 5 write units, 2 x 4 KB of reads
	big["data"] = &dtypes.AttributeValueMemberS{Value: strings.Repeat("x", 5000)}
	small := key("small")
	small["n"] = &dtypes.AttributeValueMemberN{Value: "1"}

	before := enginetest.Stats(t)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: big}))   // W 5
	must(ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: small})) // W 1
	out, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key("big")})
	if err != nil || len(out.Item) != 2 { // R 1 (eventually consistent: half of 2)
		t.Fatalf("GetItem through the edge: %v, %d attributes", err, len(out.Item))
	}
	must(ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key("big"), ConsistentRead: aws.Bool(true)})) // R 2
	must(ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key("absent")}))                              // R 0.5
	must(ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table), Key: key("small"),                           // W 1
		UpdateExpression:          aws.String("SET n = n + :one"),
		ExpressionAttributeValues: map[string]dtypes.AttributeValue{":one": &dtypes.AttributeValueMemberN{Value: "1"}}}))
	_, err = ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: small, // W 1, computed
		ConditionExpression: aws.String("attribute_not_exists(k)")})
	var ccf *dtypes.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		t.Fatalf("conditional put: %v, want ConditionalCheckFailedException", err)
	}
	must(ddb.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})) // R 2 (5 KB + a few bytes)
	must(ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key("big")}))    // W 5

	d := enginetest.Stats(t).Sub(before)
	want := map[string]localengines.Capacity{
		"PutItem":    {Requests: 3, WriteUnits: 7, Computed: 1},
		"GetItem":    {Requests: 3, ReadUnits: 3.5},
		"UpdateItem": {Requests: 1, WriteUnits: 1},
		"Scan":       {Requests: 1, ReadUnits: 2, Computed: 1}, // dynalite charges half
		"DeleteItem": {Requests: 1, WriteUnits: 5},
	}
	for op, w := range want {
		if got := d.Tables[localengines.TableOp{Operation: op, Table: table}]; got != w {
			t.Errorf("%s on the table: %+v, want %+v", op, got, w)
		}
	}
}
