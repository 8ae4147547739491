// Package consumer runs the workers of one Kinesis consumer application: it shares the
// stream's shards among them through leases kept in DynamoDB and feeds each leased shard
// to the application's RecordProcessor.
//
// # Safety model
//
// A worker acts only on change it observed itself, timed on its own monotonic clock, so
// clock skew between workers does not matter:
//
//   - Every worker renews a heartbeat counter in its item of the metadata table. Another
//     worker treats it as dead only after seeing that counter unchanged for LeaseDuration,
//     counted from the moment it read the last new value; or at once when the worker
//     wrote that it is gone (graceful shutdown).
//   - A worker whose heartbeat write started at t stops processing by
//     t + LeaseDuration - LeaseDuration/5 unless it renews again. No observer can have seen
//     the heartbeat unchanged for LeaseDuration by then, so a worker that is cut off or
//     paused stops before anyone may take its shards (self-fencing).
//   - Every change of a lease's owner is a conditional write on the owner and a counter
//     that the write increments. Checkpoints are conditional on the same owner and
//     counter, so a stale owner (a long GC pause, a network cut) can never overwrite the
//     new owner's progress. The counter is handed to the RecordProcessor as LeaseEpoch so
//     the application can fence its own writes the same way.
//   - Exactly one worker is coordinator, by a conditional write on the coordinator item's
//     epoch; it is replaced when its heartbeat goes stale, and its writes are conditional
//     on its epoch. It computes max leases per worker =
//     min(cap, ceil(open shards / workers)) and creates leases for new shards, parents
//     before children.
//   - A child shard is processed only after all its parents' leases reached SHARD_END.
//
// What it does not guarantee: exactly-once processing. After a crash or a cut-off, the
// records since the shard's last checkpoint are processed again by the next owner.
// Planned moves (rebalancing, shutdown) let the processor checkpoint first, so a
// processor that checkpoints in ShutdownRequested sees no duplicates. Liveness assumes
// that clocks advance at about the same rate, not that they agree.
//
// # Cost
//
// Leases are not renewed one by one: a worker's single heartbeat keeps all of its leases.
// At steady state each worker reads the small metadata table once per PollInterval and
// writes its heartbeat once per HeartbeatInterval; the lease table is read only when the
// metadata table shows that leases may have become takeable, or rarely as a safety net.
// DynamoDB requests therefore grow with the number of workers, not shards.
package consumer
