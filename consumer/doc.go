// Package consumer runs the workers of one Kinesis consumer application: it shares the
// stream's shards among them through leases kept in DynamoDB and feeds each leased shard
// to the application's RecordProcessor.
//
// # Safety model
//
// The promise: at any instant at most one worker may hand a shard's records to a
// processor; checkpoints are fenced and never go backwards; a child shard is processed
// only after its parents reached SHARD_END; nothing the initial position requires is lost.
// The argument, piece by piece (the simulator in internal/sim tries thousands of seeded
// fault schedules against exactly these claims):
//
//   - Liveness is judged only from what a worker read, timed on its own monotonic clock,
//     so clock skew between workers does not matter. Another worker is expired (its
//     leases may be taken) when it wrote that it is gone, or when a read that STARTED at
//     least LeaseDuration after this worker first saw its current heartbeat still
//     returned that heartbeat. News is dated when the read that brought it returned, never
//     earlier (a heartbeat written while a slow read was in flight is not dated back), and
//     expiry always needs a fresh confirming read, so stale observations (failed reads)
//     expire nobody. Reads of worker records are strongly consistent for this reason.
//     The coordinator judges every worker this way, from its reads of the whole metadata
//     table; the other workers judge only the coordinator (below).
//   - The membership view. The coordinator publishes what it judged in its own item on
//     every pass: the dead workers (gone, or expired on its reads, and lease owners
//     without a record that expired while watched) and the leases the live ones hold. The
//     other workers read that one item, eventually consistent, instead of every worker's
//     record. Every write of the item increments its version, and the coordinator writes
//     version v+1 only conditional on version v and only from a read of the metadata
//     table that started after it knew v was written (its own write's answer, or the end
//     of a read that showed v; a write whose answer was lost is learnt from a later read,
//     and the read it was made from is not used). A claim or a resignation clears the dead
//     workers. So version v+2 reflects the workers as they were after v+1 was written.
//     A worker that wants a dead worker's lease reads the lease table (at t), then the
//     item's version v, strongly consistent, and takes the lease only from a view of
//     version v+2 or later that still lists its owner dead, conditional on the owner and
//     epoch read at t. v+1 was written after that read of v, so after t, and v+2 comes
//     from a read that started later still: an owner that came back (renewed, then took
//     the lease at a new epoch before t) is alive in it, and an owner still listed dead
//     in it was dead after t, so the epoch read at t is not one it holds now.
//     Eventually consistent reads of the view are safe because a stale view only delays:
//     the target and the lease counts are advice (every change of owner is conditional),
//     claims of the role are conditional on the epoch read, the version a take waits from
//     is read strongly, and a dead set is used only from a version at or past it.
//   - A new coordinator starts its judgement from scratch (a claim clears the dead
//     workers), so nobody's leases are taken on fewer than LeaseDuration of the new
//     coordinator's own observations, except that it keeps its predecessor's judgement of
//     a worker whose record it reads exactly as judged (no renewal since, so still dead).
//     The role is claimed only when the holder is expired on the claimer's own strongly
//     consistent reads of the whole metadata table, which a worker makes while the view's
//     version has stopped advancing (the coordinator writes it on every pass): so the new
//     coordinator has watched every worker since the old one stopped, and lists dead at
//     once those that died with it.
//   - Tenure: a heartbeat write that started at s and returned before the worker's
//     current deadline extends it to s + LeaseDuration - LeaseDuration/5. Any observer
//     dates that heartbeat after s, so no confirming read can start before s +
//     LeaseDuration: the worker's deadline comes LeaseDuration/5 earlier. A write that
//     returns at or after the deadline is a lapse: the lapse generation is bumped before
//     validity is extended, and a consumer acts only while the worker is valid AND the
//     generation is the one it started in, so a consumer that slept through a lapse never
//     acts again (its lease may have changed hands meanwhile). A timer of its own fences
//     the worker at the deadline (every consumer's context is cancelled), whatever the
//     heartbeat goroutine is waiting for. Validity is checked on both the monotonic and
//     the wall clock: the monotonic clock stops while a virtual machine is suspended, so a
//     resumed worker finds itself fenced; a wall clock stepped forward costs a needless
//     lapse, never safety.
//   - Every change of a lease's owner is a conditional write on the owner and the
//     epoch, which the write increments. Checkpoints are conditional on the same owner
//     and epoch, so a stale owner (a long pause, a network cut) can never overwrite the new
//     owner's progress. The epoch is handed to the RecordProcessor (InitializeInput.Epoch) so the
//     application can fence its own writes the same way. A take that reports an error may
//     have been applied (a lost response, a timeout, an SDK retry failing the condition the
//     first try met): the lease is read back at once and every pass after until the read
//     succeeds; a lease the table says is ours is taken again with a new epoch (or released
//     at the target), never left owned and unprocessed.
//   - Each consumer confirms its lease before delivering a batch when its last
//     confirmation is older than LeaseScanInterval (an accepted checkpoint confirms it;
//     otherwise it reads the lease), so it learns of a lease taken from it (an operator, a
//     duplicate process) within that bound and gets LeaseLost, even if its processor never
//     checkpoints or ignores ErrLeaseLost. An idle consumer delivers nothing and reads
//     nothing: the coordinator, which reads the lease table every CleanupInterval, lists a
//     live worker that reports running more leases than the table gives it on two reads in
//     a row (RecheckWorkers in the view), and that worker then confirms every lease it
//     runs. Idle shards cost no reads.
//   - Exactly one worker is coordinator, by a conditional write on the coordinator item's
//     epoch; it is replaced when it expires by the rules above, and its writes are
//     conditional on its epoch (and the view's on its version). It records the application's initial position once
//     (TRIM_HORIZON, or AT_TIMESTAMP with LATEST's start time) before any lease exists and
//     creates every lease at that position, open and closed shards alike, parents before
//     children: every later sync by any coordinator does the same, so nothing skipped at the
//     first start is read later and nothing after an AT_TIMESTAMP is skipped.
//   - A child shard is processed only after all its parents' leases reached SHARD_END. A
//     shard past the stream's retention (the stream exists, the shard is no longer listed)
//     ends like a shard read to its end, so its children never wait forever. Closed shards
//     are taken before open ones, and when a worker at its target holds open shards
//     while closed ones wait (at the cap every worker is at its target; following a
//     finished shard into its children fills a worker with open shards), the coordinator,
//     which sees the closed shards that are free or a dead worker's on two of its reads of
//     the lease table in a row, says how many in the view (WaitingParents), and workers
//     at their target read the lease table and trade an open shard for each one they take
//     (a dead worker's only from a view computed after that read, as below their target).
//     So no child waits for good on a parent nobody may take.
//   - Every remote call has a deadline: DynamoDB calls LeaseDuration/2 (heartbeat writes
//     HeartbeatInterval), Kinesis calls 3 x LeaseDuration (shorter ones abandon work a
//     loaded stream still does and feed a retry storm; they decide nothing about
//     ownership), and a control-loop pass 3 x LeaseDuration. So a hung loop is a bug:
//     Worker.Alive, the liveness check, turns red when the control loop has not completed a
//     pass for six lease durations or the heartbeat loop has not ended a write (failed or
//     not) for its deadline plus three heartbeat intervals, never for a DynamoDB outage;
//     Worker.Check, the readiness check, also turns red when the heartbeat has not
//     succeeded for three lease durations.
//   - A process whose worker id is in use by another live process (a StatefulSet pod
//     replaced while the old one still runs) waits before its first heartbeat until the
//     other's record is gone or expired, instead of taking its leases as "an earlier run"
//     of itself. Two such processes started at the same instant are not told apart: their
//     lease epochs and the consumers' lease confirmation still bound the overlap to
//     LeaseScanInterval, but worker ids must be unique.
//   - Shutdown releases every lease after the processor checkpointed, then marks the worker
//     gone so others take its shards at once. It ends within ShutdownTimeout +
//     LeaseDuration/5 even when a processor ignores its context; such a lease is left to
//     expire and the worker is not marked gone. A heartbeat write that lands after the
//     "gone" write carries an older heartbeat and is ignored by observers.
//   - Cleanup deletes only what no decision can need again, conditionally on what it read.
//     A finished lease goes once every child of its shard has a lease (the children are
//     read from the lease table and from a listing of the stream made after it): a
//     missing parent counts as finished, which it is, and the shard sync creates leases
//     only for open shards and their ancestors up to the first one with a lease, so a
//     deleted parent is never created, nor read, again. A dead worker's
//     record goes DeadWorkerDelay (at least LeaseDuration) after the coordinator first saw
//     it gone or expired, conditional on the heartbeat it read: a worker that wrote again
//     keeps its record, and owners without a record expire by the same rule as silent
//     ones.
//   - The alive threshold equals the takeover threshold on purpose: a worker whose leases
//     may be taken is not counted by the coordinator, so the target always covers the
//     shards that are free to take; a paused worker that comes back lapsed and starts from
//     scratch, and the target falls back with one release round.
//
// What it does not guarantee: exactly-once processing. After a crash or a cut-off, the
// records since the shard's last checkpoint are processed again by the next owner.
// Planned moves (rebalancing, shutdown) let the processor checkpoint first, so a
// processor that checkpoints in ShutdownRequested sees no duplicates. A batch whose
// processing failed is retried from after the processor's last accepted checkpoint:
// forever by default (FailureRetry: nothing is skipped, the shard waits), or
// ProcessorRetries times and then, as Config.OnProcessorFailure says, the shard is
// stopped with its lease held (FailureStop), or the rest of the batch is skipped
// (FailureSkip) or handed to a DeadLetter (FailureDeadLetter) and checkpointed past.
// Liveness assumes that clocks advance at about the same rate (within the
// LeaseDuration/5 margin), not that they agree.
//
// # KPL aggregation and checkpoints
//
// Records in the Kinesis Producer Library's aggregated format (package kpl: the magic
// prefix, a protobuf AggregatedRecord, an MD5 trailer) are split into their user records
// before the processor sees them, each with the Kinesis record's sequence number and its
// own SubSequenceNumber (plain records have 0). A record that only looks aggregated (bad
// MD5, truncated, bad protobuf, an index outside its table) is delivered whole, with a
// warning and the MalformedAggregate hook (metric kds_kpl_malformed_aggregates_total);
// it is never dropped. After the split, an aggregate with a user record whose effective
// hash key (its explicit hash key, else the MD5 of its partition key) is outside the
// shard's hash key range is discarded whole, as the KCL does (AggregatorUtil.deaggregate
// with the shard's starting and ending hash keys), with a warning and the
// AggregateDiscarded hook (kds_kpl_discarded_user_records_total). The shard's range comes
// from one ListShards call per tenure, made only when the shard holds an aggregate.
//
// A checkpoint is a (sequence number, sub-sequence number) pair, stored like the KCL's:
// checkpoint and checkpointSubSequenceNumber in the lease item; fencing and "checkpoint
// would move backwards" compare the pair. Checkpointer.Checkpoint(seq) covers the whole
// Kinesis record seq, all user records of an aggregate (the aggregate's last
// sub-sequence number is stored); CheckpointRecord(rec) covers the user records up to and
// including rec. A new owner resumes like the KCL: AT_SEQUENCE_NUMBER of the checkpoint,
// dropping the user records at or before it, so a checkpoint in the middle of an
// aggregate resumes at the aggregate's next user record (a plain record's checkpoint is
// read once more and dropped). A lease table written before sub-sequence numbers existed
// reads as sub-sequence 0.
//
// # Structure
//
// Worker wires parts that each do one job and can be tested alone under a fake clock:
//
//   - tenure (tenure.go): validity, lapse generations and the fencing timer;
//   - renewer (renewal.go): the heartbeat writes that earn the tenure its validity;
//   - membership and liveness (membership.go, liveness.go): every read of the metadata
//     table (the whole table for the coordinator, the membership view for the others)
//     and the judgement of which workers are alive;
//   - coordinator (coordinator.go): the election, shard sync, lease creation and the max
//     leases per worker; its cleaner (cleanup.go) deletes finished leases and dead
//     workers' records;
//   - balancer (balancer.go): the target, takes, releases, and leases whose take was
//     ambiguous;
//   - consumerSet and shardConsumer (consumers.go, shardconsumer.go): one goroutine per
//     leased shard, with its fenced checkpointer (checkpointer.go).
//
// The deadlines of remote calls derive from LeaseDuration (timeouts.go).
//
// # Cost
//
// Leases are not renewed one by one: a worker's single heartbeat keeps all of its leases.
// At steady state each worker reads the membership view once per PollInterval and writes
// its heartbeat once per HeartbeatInterval; the lease table is read only when the view
// shows that leases may have become takeable, or rarely as a safety net. DynamoDB
// requests therefore grow with the number of workers, not shards. The
// coordinator alone reads the lease table and lists the stream once per CleanupInterval to
// delete finished leases and dead workers' records, so the tables stay as large as the open
// shards and the workers. Checkpoint writes, which dominate the bill while records flow,
// can be coalesced to one per shard per CheckpointInterval (released leases flush theirs).
// Only the coordinator reads the whole metadata table each PollInterval (and writes its
// item, the membership view); every other worker reads that one item, eventually
// consistent (half a read unit), and the lease table only when the view changed or as a
// rare safety net. Read units therefore grow linearly with workers, not with workers
// squared as when every worker read every other's heartbeat.
package consumer
