package dynamostore_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
)

// The integration tests run against the real local DynamoDB engine (dynalite), shared by
// the whole test binary.
func TestMain(m *testing.M) { enginetest.Main(m) }

func engineClient(t *testing.T) *dynamodb.Client { return enginetest.DynamoDB(t) }

func uniqueName(t *testing.T, prefix string) string { return enginetest.UniqueName(t, prefix) }
