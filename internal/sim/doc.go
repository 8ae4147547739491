// Package sim is a virtual-time simulator for package consumer: it runs the real
// consumer.Worker (consumer.New and Run, through the public API only) as N workers
// over M shards, on the in-memory stores and stream of package memstore, inside a
// testing/synctest bubble, with faults drawn from a seed, and checks safety and
// liveness invariants on what it recorded.
//
// Run it with `make sim` (SEEDS=2000 full-size seeds, no race detector), one seed with
// `make sim SEED=123` (the workers' logs, the faults and the timeline of every shard
// with a violation), or `go test ./internal/sim` (the CI count of small seeds; flags
// -sim.seeds, -sim.start, -sim.seed, -sim.size=small|full, -sim.attempts).
//
// # What is simulated
//
// A seed (math/rand/v2 PCG) draws a Scenario: 2-6 workers, 2-16 shards (smaller in
// the CI size), LeaseDuration 10s with the default heartbeat and poll intervals, an
// initial position (TRIM_HORIZON, LATEST, or AT_TIMESTAMP among the records put before
// the start), records put before the workers start and by a producer throughout, a
// fault phase (90-240 virtual seconds) and then a quiet phase (90-120 s) without
// faults. Each worker process gets its own wrappers around the shared stores:
//
//   - Per call: long-tailed latency (mostly milliseconds, sometimes seconds, rarely up
//     to 15s); errors before applying; throttling; responses lost after the write was
//     applied; lease.ErrConflict after applying (the SDK's retry failing the
//     condition); and, in a third of the scenarios, hangs until the caller's context
//     ends. A caller whose context ends while its write is in flight sees ctx.Err(),
//     and the write is sometimes applied anyway.
//   - Per process: pause (every call, the process's clock timers and its processor
//     block, sometimes longer than LeaseDuration), kill -9 (nothing it sends applies
//     any more, its processor records nothing), restart with the same WorkerID (a new
//     Worker on fresh wrappers), network cut (calls fail or hang until the cut ends,
//     the processor still runs), graceful stop and restart, scale up and down.
//     A process whose Run fails at start is restarted after 2s, as an orchestrator
//     would.
//   - On the stream: SplitShard, MergeShards of adjacent open shards,
//     UpdateShardCount, and TrimShard of shards closed for at least a minute (as
//     retention would remove them).
//
// Each seed also draws, from a random stream of its own (so that the other draws of a
// seed stay what they were), short cleanup settings (CleanupInterval 1-20s,
// FinishedLeaseDelay 1-30s, DeadWorkerDelay 1-3 x LeaseDuration), so that finished leases
// and dead workers' records are deleted while the scenario runs, and in half the seeds a
// CheckpointInterval (0.1-5s) that coalesces checkpoint writes.
//
// The worker's Config.Clock is a per-process clock over the bubble's virtual time whose
// After channels do not fire while the process is paused.
//
// The application (the RecordProcessor) records what it processed, stamped when
// ProcessRecords is called; it sometimes fails a call (before processing: nothing is
// recorded; after checkpointing part or all of the batch: what it processed is recorded
// as a failed delivery), checkpoints the last record most of the time, sometimes
// ignores ErrLeaseLost, and checkpoints in ShutdownRequested. The shared lease table
// records every applied write (create, take, release, checkpoint, and the coordinator's
// deletion of finished leases) under the same lock
// that applies it, so that writes and deliveries are totally ordered. A sampler
// snapshots the lease table and every running worker's Status().Leases every virtual
// second.
//
// # Invariants
//
// The checkers are pure functions of the Log (see check.go), each unit-tested on
// hand-made logs:
//
//   - exclusive: no delivery at epoch e after a TakeLease of that shard at a counter
//     above e was applied, and no delivery at an older epoch after one at a newer
//     epoch. Deliveries whose call was made while the process was paused are reported
//     as exclusive-pause when the newer take came after the call: the worker decided to
//     deliver while valid and the pause held the delivery back, which no lease library
//     can prevent (the application fences with Epoch). Such findings are listed but
//     do not fail a run; a paused delivery whose call came after the newer take is an
//     exclusive violation like any other.
//   - at-least-once: every record the initial position requires is delivered by the
//     end (records of trimmed shards are not required).
//   - checkpoint-backwards: a lease's checkpoint never moves backwards.
//   - order: within one tenure of one process, successful deliveries have strictly
//     increasing sequence numbers.
//   - child-before-parent: no record of a child shard is delivered before every parent
//     reached SHARD_END (or was trimmed).
//   - before-initial-position: LATEST and AT_TIMESTAMP deliver no record that arrived
//     before the start.
//   - convergence: from 3 x LeaseDuration after the last fault, every open shard is in
//     some healthy worker's Status().Leases.
//   - orphan: no lease is owned in the table by a healthy worker but missing from its
//     Status().Leases for longer than 3 x LeaseDuration.
//
// # What is not simulated, and reproducibility
//
// A seed fixes the scenario and its fault schedule, and the targets of the faults.
// It does not fix the interleaving of goroutines that run at the same virtual
// instant, nor the library's own back-off jitter, and the per-call fault draws follow
// the order in which calls happen. A seed therefore reproduces its faults but not
// always the exact run: `make sim SEED=S` runs it up to -sim.attempts times (20) until
// it reports violations again. Also not simulated: clock drift between workers
// (every process sees the same virtual time), partial table reads, DynamoDB eventual
// consistency, iterator expiry and Kinesis read throttling by the stream itself, and
// CPU time (code between two blocking points takes no virtual time).
//
// # Scale runs and cost
//
// `make sim-scale SCALE=1000x50` (SHARDSxWORKERS, a comma-separated list; or
// `go test -run TestScale ./internal/sim -sim.scale=1000x50`) runs N workers over M
// shards without random faults through a fixed script (scale.go): (a) cold start until
// every shard is owned and processing, with the failed conditional writes meanwhile;
// (b) a steady-state window (2 virtual minutes, producer paused) over which every store
// request is counted; (c) kill -9 of 10% of the workers until each one's shards were
// taken elsewhere; (d) a rolling restart, one worker at a time (graceful stop, start,
// wait until ownership is balanced again), with the records delivered twice; (e) N to
// 1.1N workers; (f) a reshard M to 2M by splits in four steps. The checkers above run on
// the whole log. The same bubble model of a KCL-style lease manager (baseline.go:
// renew every lease every 3.3 s, scan the lease table every 20 s, take at most one
// lease per 10 s pass) runs over the same table with the same accounting.
//
// Requests are counted below the fault wrappers, by operation (cost.go), with DynamoDB
// capacity units computed from the size of the items package dynamostore's codec writes
// (a Store over a client that captures PutItem items): strongly consistent reads 1 unit
// per 4 KB (a Scan rounded once per 1 MB page), writes 1 unit per KB of the larger of
// the item before and after, failed conditions included; priced at on-demand rates.
package sim
