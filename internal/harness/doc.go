// Package harness proves the lease manager's promises from the outside: it runs real
// kds-consumer processes against the local engines, each behind its own edge listener
// where faults are injected and every AWS call is counted, produces records with kdsctl,
// samples the lease table while chaos happens, and afterwards checks the invariants from
// the records' own tags (see Check* in invariants.go).
//
// It is a user of the product: workers and the producer are the built binaries, and the
// only product packages it imports are the data model and the stores it reads with.
package harness
