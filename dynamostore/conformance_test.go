package dynamostore_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/storetest"
)

// engineStore is a store on fresh tables of the local engine, whose Scans return two items
// a page, with the client that can write raw items next to it.
type engineStore struct {
	*dynamostore.Store
	client dynamostore.DynamoDB
}

func newEngineStore(t *testing.T) engineStore {
	client := pagingClient{engineClient(t)}
	return engineStore{newStore(t, client), client}
}

func readyEngineStore(t *testing.T) engineStore {
	s := newEngineStore(t)
	if err := s.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// putCorrupt writes an item that cannot be decoded and that no condition matches: a lease
// or a worker without a usable counter, a coordinator item without a usable epoch.
func putCorrupt(t *testing.T, s engineStore, key string) {
	switch {
	case key == s.CoordinatorKey():
		putRaw(t, s.client, s.MetaTable(), map[string]types.AttributeValue{"worker_id": S(key), "epoch": S("seven"), "coordinator_id": S("ghost")})
	default:
		putRaw(t, s.client, s.LeaseTable(), map[string]types.AttributeValue{"leaseKey": S(key), "checkpoint": S("1")})
		putRaw(t, s.client, s.MetaTable(), map[string]types.AttributeValue{"worker_id": S(key), "heartbeat": S("x")})
	}
}

func TestLeaseStoreConformance(t *testing.T) {
	storetest.TestLeaseStore(t, readyEngineStore, storetest.LeaseOptions[engineStore]{
		PutCorrupt: putCorrupt,
		ErrCorrupt: dynamostore.ErrCorrupt,
		Missing:    newEngineStore,
	})
}

func TestMetaStoreConformance(t *testing.T) {
	storetest.TestMetaStore(t, readyEngineStore, storetest.MetaOptions[engineStore]{
		CoordinatorKey: func(s engineStore) string { return s.CoordinatorKey() },
		PutCorrupt:     putCorrupt,
		Missing:        newEngineStore,
		Now:            testNow,
	})
}
