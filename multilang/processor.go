// Package multilang runs record processors written in any language that speaks the KCL
// MultiLang protocol (the protocol of the KCL's MultiLangDaemon, used by the KCL for
// Node.js, Python, Ruby, .NET): one child process per leased shard, JSON lines over its
// standard input and output.
//
// The worker sends initialize (shardId, sequenceNumber, subSequenceNumber),
// processRecords (records with base64 data, partitionKey, sequenceNumber,
// subSequenceNumber, approximateArrivalTimestamp; millisBehindLatest), leaseLost,
// shardEnded and shutdownRequested; the child answers each with
// {"action":"status","responseFor":<action>}. While it handles an action the child may
// ask for checkpoints ({"action":"checkpoint","sequenceNumber":...,
// "subSequenceNumber":...}); each is answered with the same message and an "error" naming
// the failure as the KCL does (ShutdownException after the lease was lost,
// IllegalArgumentException for a bad or backwards sequence number or one after the last
// record delivered,
// KinesisClientLibDependencyException when the lease table could not be written,
// InvalidStateException where no checkpoint is possible). The child's standard error is
// forwarded to the log.
//
// The library's guarantees hold through the protocol: checkpoints go through the fenced
// consumer.Checkpointer, so a child whose lease was lost is refused (ShutdownException)
// and then gets leaseLost. A child that dies, breaks the protocol or does not finish an
// action by its deadline is killed; the batch fails, and the worker hands it again (the
// records after the last checkpoint) to a new child initialized at that checkpoint, so
// nothing is lost. Each shard has its own child and goroutine: a slow child holds back its
// shard only.
package multilang

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Defaults of Config.
const (
	DefaultActionTimeout = time.Minute
	DefaultExitGrace     = 5 * time.Second
	DefaultCancelGrace   = 2 * time.Second
)

// Environment variables a child gets besides the worker's own environment.
const (
	EnvWorkerID = "KDS_WORKER_ID"
	EnvShardID  = "KDS_SHARD_ID"
	// EnvEpoch is the lease epoch the child processes under (see
	// consumer.InitializeInput.Epoch): a child that writes elsewhere can fence with it.
	EnvEpoch = "KDS_LEASE_EPOCH"
)

// Config says how to run the record processor children.
type Config struct {
	// Command is the executable and its arguments (the KCL's executableName, split on
	// spaces).
	Command []string
	// Dir is the children's working directory; the worker's if empty.
	Dir string
	// Env is added to the worker's environment for every child ("KEY=value").
	Env []string
	// WorkerID is passed to the children as KDS_WORKER_ID.
	WorkerID string
	// ActionTimeout is the deadline of each action (the child's status answer, its
	// checkpoint requests included): a child that misses it is killed and the batch
	// retried on a new one. DefaultActionTimeout if 0.
	ActionTimeout time.Duration
	// ExitGrace is how long a child may take to exit once its standard input is closed
	// after its last action, before it is killed. DefaultExitGrace if 0.
	ExitGrace time.Duration
	// CancelGrace is how long an action in flight may still run once the worker cancels
	// it (the lease lost, a hard stop): its checkpoints are refused meanwhile. Then the
	// child is killed. DefaultCancelGrace if 0.
	CancelGrace time.Duration
	Logger      *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ActionTimeout <= 0 {
		c.ActionTimeout = DefaultActionTimeout
	}
	if c.ExitGrace <= 0 {
		c.ExitGrace = DefaultExitGrace
	}
	if c.CancelGrace <= 0 {
		c.CancelGrace = DefaultCancelGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Factory makes the processors of a worker and keeps track of the children they stop.
type Factory struct {
	cfg     Config
	closing sync.WaitGroup
}

// NewFactory returns a Factory whose processors each drive a child running cfg.Command.
func NewFactory(cfg Config) (*Factory, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("multilang: no command to run")
	}
	if cfg.Dir == "" || filepath.IsAbs(cfg.Command[0]) || !strings.Contains(cfg.Command[0], "/") {
		// Found now rather than at every lease: a worker that cannot run it must not start.
		if _, err := exec.LookPath(cfg.Command[0]); err != nil {
			return nil, fmt.Errorf("multilang: %w", err)
		}
	}
	return &Factory{cfg: cfg.withDefaults()}, nil
}

// Processor returns the processor of a shard; it is a consumer.ProcessorFactory.
func (f *Factory) Processor(shardID string) consumer.RecordProcessor {
	return &Processor{cfg: f.cfg, shardID: shardID, log: f.cfg.Logger.With("shard", shardID), closing: &f.closing}
}

// Wait waits until every child its processors stopped has exited (or was killed, after
// ExitGrace): call it before the worker's process exits.
func (f *Factory) Wait() { f.closing.Wait() }

// Processor is the consumer.RecordProcessor of one shard: it drives a child process.
// The worker calls it from one goroutine.
type Processor struct {
	cfg     Config
	shardID string
	log     *slog.Logger
	closing *sync.WaitGroup // the children being stopped
	init    consumer.InitializeInput
	child   *child
	// starts counts the children started; lastEnd says why the last one ended.
	starts  int
	lastEnd string
	// last is the last record of the last batch the child finished: a checkpoint
	// request without a sequence number at shutdown covers up to it.
	last *stream.Record
}

// Initialize starts the child and initializes it at the lease's checkpoint.
func (p *Processor) Initialize(ctx context.Context, in consumer.InitializeInput) error {
	p.init = in
	return p.ensureChild(ctx, lease.ExtendedSequenceNumber{SequenceNumber: in.Checkpoint, SubSequenceNumber: in.CheckpointSubSequenceNumber})
}

// ensureChild starts a child initialized at cp unless one runs.
func (p *Processor) ensureChild(ctx context.Context, cp lease.ExtendedSequenceNumber) error {
	if p.child != nil {
		select {
		case <-p.child.exited:
			// It died between actions: no need to fail a batch to notice.
			p.child.kill()
			p.lastEnd = "exited between actions (" + p.child.exitState() + ")"
			p.child = nil
		default:
			return nil
		}
	}
	env := []string{EnvWorkerID + "=" + p.cfg.WorkerID, EnvShardID + "=" + p.shardID, EnvEpoch + "=" + strconv.FormatInt(p.init.Epoch, 10)}
	c, err := startChild(p.cfg.Command, p.cfg.Dir, append(env, p.cfg.Env...), p.log)
	if err != nil {
		return err
	}
	p.starts++
	if p.starts > 1 {
		c.log.Warn("record processor restarted from the last checkpoint", "checkpoint", cp.String(), "restarts", p.starts-1, "previous", p.lastEnd)
	} else {
		c.log.Info("record processor started", "checkpoint", cp.String(), "epoch", p.init.Epoch)
	}
	p.child = c
	msg := initializeMsg{Action: actionInitialize, ShardID: p.shardID, SequenceNumber: cp.SequenceNumber, SubSequenceNumber: cp.SubSequenceNumber}
	if _, err := p.exchange(ctx, actionInitialize, msg, nil); err != nil {
		return err
	}
	return nil
}

// ProcessRecords hands the batch to the child (a new one, initialized at the last
// checkpoint, if the previous one failed) and serves its checkpoints until it is done.
func (p *Processor) ProcessRecords(ctx context.Context, in consumer.ProcessRecordsInput) error {
	if err := p.ensureChild(ctx, in.Checkpointer.LastExtendedSequenceNumber()); err != nil {
		return err
	}
	last := in.Records[len(in.Records)-1]
	start := time.Now()
	lost, err := p.exchange(ctx, actionProcessRecords, newProcessRecords(in), newCheckpoints(in.Checkpointer, &last, false))
	if err != nil {
		return err
	}
	p.last = &last
	p.log.Debug("record processor processed a batch", "records", len(in.Records), "took", time.Since(start))
	return lost
}

// ShardEnded asks the child to finish the shard. A checkpoint request without a
// sequence number is accepted: the worker records SHARD_END once the child answers.
func (p *Processor) ShardEnded(ctx context.Context, cp consumer.Checkpointer) error {
	if err := p.ensureChild(ctx, cp.LastExtendedSequenceNumber()); err != nil {
		return err
	}
	lost, err := p.exchange(ctx, actionShardEnded, actionMsg{actionShardEnded}, newCheckpoints(cp, p.last, true))
	if err != nil {
		return err
	}
	p.closeChild("shard ended")
	return lost
}

// ShutdownRequested gives the child its chance to checkpoint before the lease is
// released; a checkpoint request without a sequence number covers the last batch it
// finished. Without a running child (the last one failed) there is nothing to do: the
// next owner starts at the last checkpoint.
func (p *Processor) ShutdownRequested(ctx context.Context, cp consumer.Checkpointer) error {
	if p.child == nil {
		return nil
	}
	lost, err := p.exchange(ctx, actionShutdownRequested, actionMsg{actionShutdownRequested}, newCheckpoints(cp, p.last, false))
	if err != nil {
		return err
	}
	p.closeChild("shutdown requested")
	return lost
}

// LeaseLost tells the child, which may no longer checkpoint, and ends it.
func (p *Processor) LeaseLost(ctx context.Context) {
	if p.child == nil {
		return
	}
	if _, err := p.exchange(ctx, actionLeaseLost, actionMsg{actionLeaseLost}, nil); err != nil {
		p.log.Warn("record processor failed on leaseLost", "err", err)
		return
	}
	p.closeChild("lease lost")
}

// closeChild ends the child after its last action without waiting for it: it answered,
// so the worker may release the lease at once (a planned handover waits for nothing
// else); its standard input is closed and it is killed if it has not exited after
// ExitGrace.
func (p *Processor) closeChild(why string) {
	c, grace := p.child, p.cfg.ExitGrace
	p.child, p.lastEnd = nil, why
	p.closing.Go(func() {
		c.close(grace)
		c.log.Info("record processor stopped", "reason", why, "exit", c.exitState())
	})
}

func recordPosition(r stream.Record) lease.ExtendedSequenceNumber {
	return lease.ExtendedSequenceNumber{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
}

// errNotDelivered refuses a checkpoint after the last record delivered, as the KCL does:
// it would skip records.
var errNotDelivered = errors.New("checkpoint after the last record delivered")

// checkpoints serves an action's checkpoint requests.
type checkpoints struct {
	cp consumer.Checkpointer
	// limit is the last position the child may checkpoint: the last record delivered.
	limit lease.ExtendedSequenceNumber
	// last is the record a request without a sequence number checkpoints at.
	last *stream.Record
	// shardEnd: a request without a sequence number is the shard's end, which the worker
	// records when the action succeeds.
	shardEnd bool
}

// newCheckpoints serves an action's checkpoints up to last, the last record delivered to
// the child (nil: none since the last checkpoint, which is then the limit).
func newCheckpoints(cp consumer.Checkpointer, last *stream.Record, shardEnd bool) *checkpoints {
	cps := &checkpoints{cp: cp, last: last, shardEnd: shardEnd}
	if last != nil {
		cps.limit = recordPosition(*last)
	} else {
		cps.limit = cp.LastExtendedSequenceNumber()
	}
	return cps
}

// exchange sends msg and serves the child until it answers with the status for action,
// by the action's deadline. Any failure kills the child and is returned as err. lost is
// the checkpointer's error when it refused a checkpoint because the lease was lost: the
// child was told (ShutdownException) and finished the action.
func (p *Processor) exchange(ctx context.Context, action string, msg any, cps *checkpoints) (lost error, err error) {
	c := p.child
	start := time.Now()
	deadline := start.Add(p.cfg.ActionTimeout)
	fail := func(err error) error {
		c.kill()
		p.child = nil
		p.lastEnd = fmt.Sprintf("%s: %v (%s)", action, err, c.exitState())
		err = fmt.Errorf("multilang: shard %s: record processor (pid %d) failed during %s: %w (%s)", p.shardID, c.pid, action, err, c.exitState())
		c.log.Error("record processor failed: killed; the worker retries from the last checkpoint with a new one", "action", action, "err", err)
		if lost != nil {
			// The lease was lost first: the worker must stop the shard, not retry.
			return fmt.Errorf("%w; then %w", lost, err)
		}
		return err
	}
	line, err := json.Marshal(msg)
	if err != nil {
		return nil, fail(err)
	}
	if err := c.send(line, deadline); err != nil {
		return nil, fail(err)
	}
	canceled := false
	for {
		m, err := c.next(ctx, deadline)
		switch {
		case err == nil:
		case errors.Is(err, errExited):
			return lost, fail(err)
		case ctx.Err() != nil:
			// The lease is lost or the worker stops hard: let the child finish the action
			// for a short while; its checkpoints are refused.
			canceled = true
			deadline = minTime(deadline, time.Now().Add(p.cfg.CancelGrace))
			ctx = context.WithoutCancel(ctx)
			continue
		case errors.Is(err, context.DeadlineExceeded) && canceled:
			return lost, fail(fmt.Errorf("no answer within %s after the action was canceled", p.cfg.CancelGrace))
		case errors.Is(err, context.DeadlineExceeded):
			return lost, fail(fmt.Errorf("no answer within %s (the action deadline)", p.cfg.ActionTimeout))
		default:
			return lost, fail(err)
		}
		if m.Action == actionStatus {
			if m.ResponseFor != action {
				return lost, fail(fmt.Errorf("%w: status for %q while waiting for %q", errProtocol, m.ResponseFor, action))
			}
			c.log.Debug("record processor finished", "action", action, "took", time.Since(start))
			if canceled && lost == nil {
				lost = fmt.Errorf("multilang: shard %s: %w while the record processor handled %s", p.shardID, consumer.ErrLeaseLost, action)
			}
			return lost, nil
		}
		reply, cpErr := p.checkpoint(ctx, canceled, m, cps)
		if errors.Is(cpErr, consumer.ErrLeaseLost) && lost == nil {
			lost = cpErr
		}
		line, err := json.Marshal(reply)
		if err != nil {
			return lost, fail(err)
		}
		if err := c.send(line, deadline); err != nil {
			return lost, fail(err)
		}
	}
}

// checkpoint serves one checkpoint request and returns the answer and the checkpointer's
// error.
func (p *Processor) checkpoint(ctx context.Context, canceled bool, m childMsg, cps *checkpoints) (checkpointReply, error) {
	reply := checkpointReply{Action: actionCheckpoint, SequenceNumber: m.SequenceNumber, SubSequenceNumber: m.SubSequenceNumber}
	var err error
	switch {
	case cps == nil:
		reply.Error = ErrorInvalidState
		p.log.Warn("record processor asked for a checkpoint where none is possible", "seq", m.SequenceNumber)
		return reply, nil
	case canceled || ctx.Err() != nil:
		// The action was canceled: the lease is lost or the worker stops hard. Either
		// way this tenure checkpoints no more.
		err = fmt.Errorf("multilang: shard %s: checkpoint after the action was canceled: %w", p.shardID, consumer.ErrLeaseLost)
	case m.SequenceNumber == nil && cps.shardEnd:
		return reply, nil // SHARD_END is written when shardEnded succeeds.
	case m.SequenceNumber == nil && cps.last == nil:
		return reply, nil // Nothing delivered since the last checkpoint.
	case m.SequenceNumber == nil:
		err = cps.cp.CheckpointRecord(ctx, *cps.last)
	case beyond(lease.ExtendedSequenceNumber{SequenceNumber: *m.SequenceNumber, SubSequenceNumber: deref(m.SubSequenceNumber)}, cps.limit):
		err = fmt.Errorf("multilang: shard %s: %w: %s is after %s", p.shardID, errNotDelivered, *m.SequenceNumber, cps.limit)
	case m.SubSequenceNumber != nil:
		err = cps.cp.CheckpointRecord(ctx, stream.Record{SequenceNumber: *m.SequenceNumber, SubSequenceNumber: *m.SubSequenceNumber})
	default:
		err = cps.cp.Checkpoint(ctx, *m.SequenceNumber)
	}
	reply.Error = checkpointError(err)
	if err != nil {
		p.log.Warn("record processor's checkpoint refused", "err", err, "answer", reply.Error)
	}
	return reply, err
}

// beyond reports whether v is after limit (both sequence numbers).
func beyond(v, limit lease.ExtendedSequenceNumber) bool {
	c, ok := v.Compare(limit)
	return ok && c > 0
}

func deref(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
