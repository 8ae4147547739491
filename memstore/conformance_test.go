package memstore_test

import (
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/memstore"
	"github.com/kds-lease-manager/kds-lease-manager/storetest"
)

// The contracts of consumer.LeaseStore and consumer.MetaStore, as package dynamostore
// keeps them on a real DynamoDB engine. memstore has no tables to lose, so the
// ErrTableNotFound tests are skipped.
func TestLeaseStoreConformance(t *testing.T) {
	storetest.TestLeaseStore(t, func(*testing.T) *memstore.Leases { return memstore.NewLeases() },
		storetest.LeaseOptions[*memstore.Leases]{
			PutCorrupt: func(_ *testing.T, s *memstore.Leases, key string) { s.PutCorrupt(key, "leaseCounter: missing") },
			ErrCorrupt: memstore.ErrCorrupt,
		})
}

func TestMetaStoreConformance(t *testing.T) {
	newMeta := func(*testing.T) *memstore.Meta {
		s := memstore.NewMeta()
		s.Now = func() time.Time { return t0 }
		return s
	}
	storetest.TestMetaStore(t, newMeta, storetest.MetaOptions[*memstore.Meta]{
		CoordinatorKey: func(*memstore.Meta) string { return memstore.CoordinatorKey },
		PutCorrupt:     func(_ *testing.T, s *memstore.Meta, key string) { s.PutCorrupt(key, "epoch: is a string") },
		Now:            t0,
	})
}
