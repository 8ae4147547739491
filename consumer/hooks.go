package consumer

import "time"

// Hooks are optional callbacks for callers that observe a worker (metrics, tests). They
// are called from the worker's goroutines and must return quickly.
type Hooks struct {
	// TargetChanged is called when the number of leases this worker obeys changes.
	TargetChanged func(old, new int)
	// CoordinatorChanged is called when this worker gains or loses the coordinator role.
	CoordinatorChanged func(isCoordinator bool)
	// LeaseTaken is called after this worker took a lease, with its new epoch.
	LeaseTaken func(shardID string, epoch int64)
	// LeaseReleased is called after this worker released a lease.
	LeaseReleased func(shardID string)
	// LeaseLost is called when this worker lost a lease without releasing it.
	LeaseLost func(shardID string)
	// RecordsProcessed is called after a batch was processed.
	RecordsProcessed func(shardID string, records int, millisBehindLatest int64)
	// RecordsRead is called after every GetRecords response, empty ones included (they
	// carry MillisBehindLatest too), with its records (before KPL de-aggregation): a
	// shard that is idle or caught up still reports its lag.
	RecordsRead func(shardID string, records int, millisBehindLatest int64)
	// ProcessorReturned is called after every call of ProcessRecords (each try of a
	// batch), with the records handed over, how long the call took and its error (nil
	// on success).
	ProcessorReturned func(shardID string, records int, took time.Duration, err error)
	// Checkpointed is called after every checkpoint write, with its error (nil on success).
	Checkpointed func(shardID string, err error)
	// MalformedAggregate is called for a record that has the KPL aggregate prefix but is
	// not a valid aggregate (err says why, a *kpl.MalformedError): it is delivered whole.
	MalformedAggregate func(shardID, sequenceNumber string, err error)
	// AggregateDiscarded is called for a KPL aggregate with a user record whose hash key
	// is outside the shard's range: as the KCL does, none of its userRecords is delivered.
	AggregateDiscarded func(shardID, sequenceNumber string, userRecords int)
	// ProcessorFailed is called for every error ProcessRecords returns (ErrLeaseLost
	// aside).
	ProcessorFailed func(shardID string, err error)
	// BatchAbandoned is called when Config.OnProcessorFailure gave up on the rest of a
	// batch: stopped the shard, skipped the records or dead-lettered them.
	BatchAbandoned func(shardID string, policy FailurePolicy, records int)
}

func (h Hooks) targetChanged(old, new int) {
	if h.TargetChanged != nil {
		h.TargetChanged(old, new)
	}
}

func (h Hooks) coordinatorChanged(is bool) {
	if h.CoordinatorChanged != nil {
		h.CoordinatorChanged(is)
	}
}

func (h Hooks) leaseTaken(shardID string, epoch int64) {
	if h.LeaseTaken != nil {
		h.LeaseTaken(shardID, epoch)
	}
}

func (h Hooks) leaseReleased(shardID string) {
	if h.LeaseReleased != nil {
		h.LeaseReleased(shardID)
	}
}

func (h Hooks) leaseLost(shardID string) {
	if h.LeaseLost != nil {
		h.LeaseLost(shardID)
	}
}

func (h Hooks) recordsProcessed(shardID string, n int, behind int64) {
	if h.RecordsProcessed != nil {
		h.RecordsProcessed(shardID, n, behind)
	}
}

func (h Hooks) recordsRead(shardID string, n int, behind int64) {
	if h.RecordsRead != nil {
		h.RecordsRead(shardID, n, behind)
	}
}

func (h Hooks) processorReturned(shardID string, n int, took time.Duration, err error) {
	if h.ProcessorReturned != nil {
		h.ProcessorReturned(shardID, n, took, err)
	}
}

func (h Hooks) checkpointed(shardID string, err error) {
	if h.Checkpointed != nil {
		h.Checkpointed(shardID, err)
	}
}

func (h Hooks) malformedAggregate(shardID, seq string, err error) {
	if h.MalformedAggregate != nil {
		h.MalformedAggregate(shardID, seq, err)
	}
}

func (h Hooks) aggregateDiscarded(shardID, seq string, n int) {
	if h.AggregateDiscarded != nil {
		h.AggregateDiscarded(shardID, seq, n)
	}
}

func (h Hooks) processorFailed(shardID string, err error) {
	if h.ProcessorFailed != nil {
		h.ProcessorFailed(shardID, err)
	}
}

func (h Hooks) batchAbandoned(shardID string, policy FailurePolicy, n int) {
	if h.BatchAbandoned != nil {
		h.BatchAbandoned(shardID, policy, n)
	}
}
