// Package memstore keeps the lease table, the metadata table and a Kinesis stream in
// memory. It implements consumer.LeaseStore, consumer.MetaStore and consumer.Stream with
// the same conditions and errors as package dynamostore and the AWS adapter, so the lease
// logic can be unit-tested with a fake clock and run by the simulator (internal/sim)
// without AWS. The storetest suite checks that both keep the same contract.
//
// Every type is safe for concurrent use and returns copies: nothing a caller receives
// aliases stored state. Each type also carries test hooks: call counts (to assert request
// budgets), error injection (to simulate throttling and network failures) and direct
// accessors that bypass both.
package memstore

import (
	"fmt"
	"maps"
	"slices"
	"sync"
)

// AnyOp is the operation name that makes InjectError match every operation.
const AnyOp = "*"

// faults counts calls and hands out injected errors. It is embedded in every store so the
// hooks look the same everywhere. It has its own lock so that the counting and injection
// never run under a store's data lock.
type faults struct {
	mu       sync.Mutex
	calls    map[string]int
	byKey    map[string]map[string]int // key (shard id) -> op -> count
	injected map[string][]*injection
}

type injection struct {
	err   error
	times int // remaining failures; negative means until ClearErrors
}

// InjectError makes the next times calls of op fail with err (wrapped, so errors.Is still
// matches err). A negative times fails every call until ClearErrors. Injections for the
// same op queue up in order. op AnyOp matches every operation; a more specific injection
// is consumed first.
func (f *faults) InjectError(op string, err error, times int) {
	if times == 0 || err == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.injected == nil {
		f.injected = make(map[string][]*injection)
	}
	f.injected[op] = append(f.injected[op], &injection{err: err, times: times})
}

// ClearErrors removes every injected error.
func (f *faults) ClearErrors() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.injected = nil
}

// Calls returns how many times each operation was called, including calls that failed.
func (f *faults) Calls() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := maps.Clone(f.calls)
	if m == nil {
		m = map[string]int{}
	}
	return m
}

// ResetCalls sets every call count to zero, so a test can measure one phase only.
func (f *faults) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
	f.byKey = nil
}

// begin counts one call of op (also under key when key is not empty) and returns the
// injected error for the first of keys that has one.
func (f *faults) begin(op, key string, keys ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = make(map[string]int)
	}
	f.calls[op]++
	if key != "" {
		if f.byKey == nil {
			f.byKey = make(map[string]map[string]int)
		}
		m := f.byKey[key]
		if m == nil {
			m = make(map[string]int)
			f.byKey[key] = m
		}
		m[op]++
	}
	for _, k := range slices.Concat(keys, []string{op, AnyOp}) {
		q := f.injected[k]
		if len(q) == 0 {
			continue
		}
		inj := q[0]
		if inj.times > 0 {
			inj.times--
			if inj.times == 0 {
				f.injected[k] = q[1:]
			}
		}
		return fmt.Errorf("memstore: %s: injected: %w", op, inj.err)
	}
	return nil
}

// countKey records an extra counter (such as throttled calls) without consulting
// injections.
func (f *faults) countKey(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = make(map[string]int)
	}
	f.calls[name]++
}

// keyCalls returns the counts recorded under key.
func (f *faults) keyCalls(key string) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := maps.Clone(f.byKey[key])
	if m == nil {
		m = map[string]int{}
	}
	return m
}
