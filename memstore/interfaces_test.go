package memstore_test

import (
	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// The assertions live in an external test package: memstore itself must not import
// consumer, whose own tests use memstore.
var (
	_ consumer.LeaseStore = (*memstore.Leases)(nil)
	_ consumer.MetaStore  = (*memstore.Meta)(nil)
	_ consumer.Stream     = (*memstore.Stream)(nil)
)
