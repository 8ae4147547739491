// Package storetest proves that a store keeps the contracts of consumer.LeaseStore and
// consumer.MetaStore: that every conditional write succeeds with the current owner and
// epoch and fails with lease.ErrConflict, leaving the item untouched, with a stale owner, a
// stale epoch or both; that a lease is created only where none exists (lease.ErrExists
// otherwise) and always starts free at epoch 0; that checkpoints, lags, worker records and
// the coordinator record come back as written (the initial position written once only);
// that whole-table reads return every item across pages and report undecodable items in
// Table.Corrupt and Meta.Corrupt without failing; and that a missing table is
// lease.ErrTableNotFound. Package memstore and package dynamostore (on a real DynamoDB
// engine) both run it, which is what keeps the in-memory store used by the lease logic's
// tests and the simulator faithful to DynamoDB.
//
// A store implementer runs it from a test of their own, with a constructor that returns a
// fresh, empty store for each subtest:
//
//	func TestConformance(t *testing.T) {
//		storetest.TestLeaseStore(t, func(t *testing.T) *mystore.Store { return newEmpty(t) },
//			storetest.LeaseOptions[*mystore.Store]{PutCorrupt: plantBadItem, Missing: newWithoutTables})
//		storetest.TestMetaStore(t, func(t *testing.T) *mystore.Store { return newEmpty(t) },
//			storetest.MetaOptions[*mystore.Store]{CoordinatorKey: (*mystore.Store).CoordinatorKey})
//	}
//
// The options name what the suite cannot do through the contract itself: planting an
// undecodable item, or opening a store whose tables do not exist. The tests that need an
// option the caller left unset are skipped, not passed.
//
// A store with a large page size should be given a small one (dynamostore's tests limit
// every Scan to two items): the listing tests write ListSize items, by default 25.
package storetest

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// defaultListSize is how many items the listing tests write unless told otherwise.
const defaultListSize = 25

// errInvalid stands for "an argument error": the call fails before any request, with an
// error that is none of the store errors of package lease, and changes nothing.
var errInvalid = errors.New("an argument error")

// storeErrors are the errors an argument error must not match.
var storeErrors = []error{lease.ErrConflict, lease.ErrExists, lease.ErrNotFound, lease.ErrTableNotFound}

// checkErr reports whether err is what want says: nil for success, errInvalid for an
// argument error, otherwise an error matching want with errors.Is. It fails t if not.
func checkErr(t *testing.T, what string, err, want error) bool {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want == nil:
		return true
	case err == nil:
		t.Errorf("%s: no error, want %v", what, want)
	case want == errInvalid:
		for _, e := range storeErrors {
			if errors.Is(err, e) {
				t.Errorf("%s: %v matches %v, want an argument error", what, err, e)
				return false
			}
		}
		return true
	case !errors.Is(err, want):
		t.Errorf("%s: error %v does not match %v", what, err, want)
	default:
		return true
	}
	return false
}

// checkAll makes every call and checks its error against want.
func checkAll(t *testing.T, calls map[string]func() error, want error) {
	t.Helper()
	for name, call := range calls {
		checkErr(t, name, call(), want)
	}
}

// optional runs f as the subtest name, or skips it when the option it needs is not set.
func optional(t *testing.T, name string, set bool, option string, f func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		if !set {
			t.Skip(option + " not set")
		}
		f(t)
	})
}

// byKey indexes items by key, failing t on a key that occurs twice.
func byKey[T any](t *testing.T, what string, items []T, key func(T) string) map[string]T {
	t.Helper()
	m := make(map[string]T, len(items))
	for _, it := range items {
		k := key(it)
		if _, dup := m[k]; dup {
			t.Errorf("%s: key %q returned twice", what, k)
		}
		m[k] = it
	}
	return m
}

// checkCorrupt checks that corrupt lists exactly the keys want, each with a reason.
func checkCorrupt(t *testing.T, corrupt []lease.CorruptItem, want ...string) {
	t.Helper()
	var keys []string
	for _, c := range corrupt {
		keys = append(keys, c.Key)
		if strings.TrimSpace(c.Reason) == "" {
			t.Errorf("corrupt item %q reported without a reason", c.Key)
		}
	}
	slices.Sort(keys)
	want = slices.Sorted(slices.Values(want))
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("corrupt items %v, want the keys %v", corrupt, want)
	}
}

// race runs n calls at once and checks that exactly one succeeded and every other lost
// with lease.ErrConflict. It returns the winner's index.
func race(t *testing.T, n int, call func(i int) error) int {
	t.Helper()
	errs := make([]error, n)
	start := make(chan struct{})
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			errs[i] = call(i)
		}()
	}
	close(start)
	for range n {
		<-done
	}
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("calls %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, lease.ErrConflict):
			t.Errorf("call %d: %v, want lease.ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("none of %d concurrent calls succeeded", n)
	}
	return winner
}
