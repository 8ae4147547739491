package enginetest_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
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
