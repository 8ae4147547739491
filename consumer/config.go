package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Defaults for Config. They are fixed values and do not scale with LeaseDuration; the
// defaults that do (HeartbeatInterval, PollInterval, StartupSettle) are computed from it,
// see Config. DefaultConfig holds the fixed ones.
const (
	DefaultLeaseDuration = 10 * time.Second
	// DefaultPollInterval is PollInterval's default unless LeaseDuration/3 is shorter.
	DefaultPollInterval         = time.Second
	DefaultShardSyncInterval    = 5 * time.Second
	DefaultLeaseScanInterval    = 30 * time.Second
	DefaultIdleTimeBetweenReads = time.Second
	DefaultMinTimeBetweenReads  = 200 * time.Millisecond // Kinesis allows 5 GetRecords/s per shard.
	DefaultMaxRecordsPerGet     = 10000
	DefaultShutdownTimeout      = 20 * time.Second
	DefaultCleanupInterval      = time.Minute
	DefaultFinishedLeaseDelay   = 5 * time.Minute
	DefaultDeadWorkerDelay      = 10 * time.Minute
)

// WorkerCounter says how many workers the application should have. The coordinator
// divides the shards by this number. Without one, the number of live workers (fresh
// heartbeats in the metadata table) is used.
type WorkerCounter interface {
	// DesiredWorkers returns the desired worker count (at least 1).
	DesiredWorkers(ctx context.Context) (int, error)
}

// StaticWorkers is a WorkerCounter that always returns its value.
type StaticWorkers int

// DesiredWorkers implements WorkerCounter.
func (s StaticWorkers) DesiredWorkers(context.Context) (int, error) { return int(s), nil }

// Config configures a Worker. The zero value of every optional field means its default;
// DefaultConfig returns the fixed defaults filled in.
//
// Durations and LeaseDuration: the defaults of HeartbeatInterval (LeaseDuration/3),
// PollInterval (the smaller of 1s and LeaseDuration/3) and, through PollInterval,
// StartupSettle scale with LeaseDuration, and so do the timeouts that are not settings:
// every DynamoDB call's deadline (LeaseDuration/2; a heartbeat write's the smaller of
// HeartbeatInterval and LeaseDuration/5), every Kinesis call's and every control-loop pass's (3 x
// LeaseDuration), the margin by which a worker that cannot renew stops early
// (LeaseDuration/5), the grace after ShutdownTimeout (LeaseDuration/5) and the limits of
// Worker.Check and Worker.Alive (3 and 6 x LeaseDuration; a heartbeat write's deadline + 3 x
// HeartbeatInterval). ShardSyncInterval, LeaseScanInterval,
// CleanupInterval, FinishedLeaseDelay, DeadWorkerDelay, IdleTimeBetweenReads,
// MinTimeBetweenReads and ShutdownTimeout are fixed: their defaults stay the same
// whatever LeaseDuration is.
type Config struct {
	// AppName names the application; the lease table is AppName and the metadata table
	// AppName_meta. Required.
	AppName string
	// StreamName is used in logs only; the Stream given to New is what is read. Optional.
	StreamName string
	// WorkerID identifies this worker; it must be unique among live workers and stable
	// across restarts (a Kubernetes pod name). Required.
	WorkerID string

	// LeaseDuration is how long a worker's heartbeat may stay unchanged, as seen on the
	// observer's own clock, before other workers take its leases. A worker that cannot
	// renew stops processing LeaseDuration/5 before this elapses. Every DynamoDB call
	// except a heartbeat write has a deadline of LeaseDuration/2; every Kinesis call and
	// every control-loop pass one of 3 x LeaseDuration (the start-up check of the stream
	// at least 30s). Worker.Check fails when no heartbeat succeeded for 3 x LeaseDuration
	// or no control-loop pass ended for 6 x LeaseDuration. Default 10s; at least 1s.
	LeaseDuration time.Duration
	// HeartbeatInterval is how often a worker renews its heartbeat (the KCL renews its
	// leases as often). Each write has a deadline of the smaller of HeartbeatInterval and
	// LeaseDuration/5, and a failed one is retried after HeartbeatInterval/8, so a renewal
	// survives failed writes: a renewal keeps the worker valid for 4/5 LeaseDuration.
	// Default LeaseDuration/3; must be at most LeaseDuration/3.
	HeartbeatInterval time.Duration
	// PollInterval is how often a worker reads the metadata table and acts on it (take,
	// release, coordinator duty). Default the smaller of 1s and LeaseDuration/3; at most
	// LeaseDuration/3.
	PollInterval time.Duration
	// ShardSyncInterval is how often the coordinator lists the stream's shards. Default
	// 5s, whatever LeaseDuration is; at least PollInterval.
	ShardSyncInterval time.Duration
	// LeaseScanInterval bounds how long a worker below its target goes without reading
	// the lease table when the membership view did not change, and how long a consumer
	// delivers batches without confirming that its lease is still its own (an accepted
	// checkpoint confirms it, else one read of the lease; a consumer with nothing to
	// deliver reads nothing: see the package doc). Default 30s, whatever LeaseDuration is;
	// at least PollInterval.
	LeaseScanInterval time.Duration
	// StartupSettle is how long a new worker waits after registering its heartbeat before
	// its first take, so that workers started together see each other and split the
	// shards evenly at once instead of one worker taking everything and giving most of it
	// back. Default 2*PollInterval.
	StartupSettle time.Duration
	// CleanupInterval is how often the coordinator looks for finished leases and dead
	// workers' records to delete, so that the tables stay as large as the open shards and
	// the workers, across any number of reshards and restarts. Default 1m, whatever
	// LeaseDuration is; at least PollInterval.
	CleanupInterval time.Duration
	// FinishedLeaseDelay is how long a finished lease stays after every child of its shard
	// has a lease (from then on no decision needs it) before it is deleted. Default 5m.
	FinishedLeaseDelay time.Duration
	// DeadWorkerDelay is how long a worker that is gone or expired (on the coordinator's
	// observations) keeps its record before it is deleted. Default 10m; at least
	// LeaseDuration.
	DeadWorkerDelay time.Duration

	// MaxLeasesCap bounds the leases one worker may hold. Default 80.
	MaxLeasesCap int
	// DisableDynamicMaxLeases makes every worker hold up to StaticMaxLeases instead of
	// the coordinator's min(cap, ceil(shards/workers)).
	DisableDynamicMaxLeases bool
	// StaticMaxLeases is the per-worker maximum with dynamic max leases disabled.
	// Default MaxLeasesCap.
	StaticMaxLeases int
	// WorkerCounter gives the desired worker count; nil means live workers.
	WorkerCounter WorkerCounter

	// InitialPosition is where new leases start: lease.TrimHorizon (default),
	// lease.Latest or lease.AtTimestamp (with InitialTimestamp).
	InitialPosition  string
	InitialTimestamp time.Time

	// MaxRecordsPerGet is the GetRecords limit. Default 10000 (the Kinesis maximum).
	MaxRecordsPerGet int
	// IdleTimeBetweenReads is the wait after a GetRecords that returned no records.
	// Default 1s, whatever LeaseDuration is.
	IdleTimeBetweenReads time.Duration
	// MinTimeBetweenReads is the least time between two GetRecords calls on one shard.
	// Default 200ms (Kinesis allows 5 per second per shard); not less than that.
	MinTimeBetweenReads time.Duration
	// CheckpointInterval coalesces checkpoints: at most one write per shard per interval.
	// A checkpoint that comes sooner is accepted and written by the next one after the
	// interval, by the consumer within the interval even if the processor checkpoints no
	// more, or with the lease's release, so planned moves (rebalancing, shutdown) still
	// see no duplicates; a crash or a lost lease replays at most an interval more. Default
	// 0: every checkpoint is written at once.
	CheckpointInterval time.Duration
	// ShutdownTimeout bounds the drain of a graceful shutdown (in-flight batches,
	// checkpoints, releases). A processor that ignores its cancelled context gets
	// LeaseDuration/5 more, then its lease is left to expire. Default 20s, whatever
	// LeaseDuration is; at least 1s.
	ShutdownTimeout time.Duration

	// OnProcessorFailure is what happens to a batch the processor keeps failing on (an
	// error from ProcessRecords other than ErrLeaseLost) once ProcessorRetries retries,
	// with exponential back-off from 100ms to 5s, failed too. Each retry hands over the
	// records after the processor's last accepted checkpoint. Default FailureRetry:
	// retry forever, nothing is ever skipped (as before this setting existed).
	OnProcessorFailure FailurePolicy
	// ProcessorRetries is how many retries of a failing batch come before
	// OnProcessorFailure applies (not with FailureRetry). Default 10 (about 25s of
	// back-off).
	ProcessorRetries int
	// DeadLetter receives the batches FailureDeadLetter gives up on. Required with it.
	DeadLetter DeadLetter

	// Hooks are optional callbacks for metrics and tests.
	Hooks Hooks

	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Clock is the time source. Default the real clock.
	Clock clock.Clock
}

// FailurePolicy says what happens to a batch the processor keeps failing on (see
// Config.OnProcessorFailure).
type FailurePolicy string

const (
	// FailureRetry retries the batch until it succeeds, the lease moves or the worker
	// stops: nothing is skipped, and the shard waits for the processor.
	FailureRetry FailurePolicy = "retry"
	// FailureStop stops reading the shard, with an error log and the shard in
	// Status.StoppedShards (alert on it): the lease stays held, so no other worker takes
	// it and fails the same way, and nothing after the batch is read. A restart of the
	// worker, or the lease moving in a rebalance, retries the batch.
	FailureStop FailurePolicy = "stop"
	// FailureSkip drops the rest of the batch with an error log naming its first and
	// last sequence numbers, and checkpoints past it (the processor never sees those
	// records again).
	FailureSkip FailurePolicy = "skip"
	// FailureDeadLetter hands the rest of the batch to Config.DeadLetter, retrying that
	// until it succeeds, then checkpoints past it.
	FailureDeadLetter FailurePolicy = "dead-letter"
)

// DeadLetter stores the records of batches FailureDeadLetter gives up on.
type DeadLetter interface {
	// Put stores records of shardID, on which the processor failed with cause. The
	// records must be durable when it returns nil: the shard is checkpointed past them.
	Put(ctx context.Context, shardID string, records []stream.Record, cause error) error
}

// DefaultProcessorRetries is ProcessorRetries's default.
const DefaultProcessorRetries = 10

// ConfigError names the setting that is wrong and why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("invalid setting %s: %s", e.Field, e.Reason) }

// ErrInvalidConfig is matched by every *ConfigError with errors.Is.
var ErrInvalidConfig = errors.New("invalid configuration")

// Is makes errors.Is(err, ErrInvalidConfig) true for configuration errors.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Validate checks the configuration as New does, with every unset field at its default,
// without doing any I/O. The error is a *ConfigError naming the field.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// DefaultConfig returns a Config holding every default that does not depend on another
// field: LeaseDuration, ShardSyncInterval, LeaseScanInterval, CleanupInterval,
// FinishedLeaseDelay, DeadWorkerDelay, MaxLeasesCap,
// InitialPosition, MaxRecordsPerGet, IdleTimeBetweenReads, MinTimeBetweenReads and
// ShutdownTimeout. The fields whose default is computed from another one
// (HeartbeatInterval and PollInterval from LeaseDuration, StartupSettle from
// PollInterval, StaticMaxLeases from MaxLeasesCap) stay zero, so that they follow it
// when it is changed; AppName and WorkerID, which are required, stay empty. New fills a
// zero field with the same value, so starting from DefaultConfig changes nothing.
func DefaultConfig() Config {
	return Config{
		LeaseDuration:        DefaultLeaseDuration,
		ShardSyncInterval:    DefaultShardSyncInterval,
		LeaseScanInterval:    DefaultLeaseScanInterval,
		CleanupInterval:      DefaultCleanupInterval,
		FinishedLeaseDelay:   DefaultFinishedLeaseDelay,
		DeadWorkerDelay:      DefaultDeadWorkerDelay,
		MaxLeasesCap:         lease.DefaultCap,
		InitialPosition:      lease.TrimHorizon,
		MaxRecordsPerGet:     DefaultMaxRecordsPerGet,
		IdleTimeBetweenReads: DefaultIdleTimeBetweenReads,
		MinTimeBetweenReads:  DefaultMinTimeBetweenReads,
		ShutdownTimeout:      DefaultShutdownTimeout,
		OnProcessorFailure:   FailureRetry,
		ProcessorRetries:     DefaultProcessorRetries,
	}
}

// withDefaults returns a copy with every unset field set to its default, then validated.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	// Every fixed default has one home, DefaultConfig; then those that follow other fields.
	fillZero(&c, d)
	orDefault(&c.HeartbeatInterval, c.LeaseDuration/3)
	orDefault(&c.PollInterval, min(DefaultPollInterval, c.LeaseDuration/3))
	orDefault(&c.StartupSettle, 2*c.PollInterval)
	orDefault(&c.StaticMaxLeases, c.MaxLeasesCap)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return c, c.validate()
}

// fillZero sets every zero field of c to d's value of it.
func fillZero(c *Config, d Config) {
	cv, dv := reflect.ValueOf(c).Elem(), reflect.ValueOf(d)
	for i := range cv.NumField() {
		if f := cv.Field(i); f.IsZero() {
			f.Set(dv.Field(i))
		}
	}
}

// orDefault sets *v to def when *v is the zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (c Config) validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.AppName == "":
		return bad("AppName", "must not be empty")
	case len(c.AppName) > 250:
		return bad("AppName", "%d characters; DynamoDB table names allow at most 255 including the _meta suffix", len(c.AppName))
	case !validTableName(c.AppName):
		return bad("AppName", "%q may contain only letters, digits, '_', '-' and '.' (it names DynamoDB tables)", c.AppName)
	case c.WorkerID == "":
		return bad("WorkerID", "must not be empty")
	case c.WorkerID == c.AppName+"_coordinator":
		return bad("WorkerID", "%q is reserved for the coordinator item", c.WorkerID)
	case c.LeaseDuration < time.Second:
		return bad("LeaseDuration", "%s is too short; at least 1s", c.LeaseDuration)
	case c.HeartbeatInterval <= 0 || c.HeartbeatInterval > c.LeaseDuration/3:
		return bad("HeartbeatInterval", "%s must be positive and at most LeaseDuration/3 (%s)", c.HeartbeatInterval, c.LeaseDuration/3)
	case c.PollInterval <= 0 || c.PollInterval > c.LeaseDuration/3:
		return bad("PollInterval", "%s must be positive and at most LeaseDuration/3 (%s)", c.PollInterval, c.LeaseDuration/3)
	case c.ShardSyncInterval < c.PollInterval:
		return bad("ShardSyncInterval", "%s must be at least PollInterval (%s)", c.ShardSyncInterval, c.PollInterval)
	case c.LeaseScanInterval < c.PollInterval:
		return bad("LeaseScanInterval", "%s must be at least PollInterval (%s)", c.LeaseScanInterval, c.PollInterval)
	case c.StartupSettle < 0:
		return bad("StartupSettle", "%s must not be negative", c.StartupSettle)
	case c.CleanupInterval < c.PollInterval:
		return bad("CleanupInterval", "%s must be at least PollInterval (%s)", c.CleanupInterval, c.PollInterval)
	case c.FinishedLeaseDelay < 0:
		return bad("FinishedLeaseDelay", "%s must not be negative", c.FinishedLeaseDelay)
	case c.DeadWorkerDelay < c.LeaseDuration:
		return bad("DeadWorkerDelay", "%s must be at least LeaseDuration (%s)", c.DeadWorkerDelay, c.LeaseDuration)
	case c.MaxLeasesCap < 1:
		return bad("MaxLeasesCap", "%d must be at least 1", c.MaxLeasesCap)
	case c.StaticMaxLeases < 1 || c.StaticMaxLeases > c.MaxLeasesCap:
		return bad("StaticMaxLeases", "%d must be between 1 and MaxLeasesCap (%d)", c.StaticMaxLeases, c.MaxLeasesCap)
	case c.InitialPosition != lease.TrimHorizon && c.InitialPosition != lease.Latest && c.InitialPosition != lease.AtTimestamp:
		return bad("InitialPosition", "%q must be TRIM_HORIZON, LATEST or AT_TIMESTAMP", c.InitialPosition)
	case c.InitialPosition == lease.AtTimestamp && c.InitialTimestamp.IsZero():
		return bad("InitialTimestamp", "must be set when InitialPosition is AT_TIMESTAMP")
	case c.MaxRecordsPerGet < 1 || c.MaxRecordsPerGet > 10000:
		return bad("MaxRecordsPerGet", "%d must be between 1 and 10000", c.MaxRecordsPerGet)
	case c.IdleTimeBetweenReads < 0:
		return bad("IdleTimeBetweenReads", "%s must not be negative", c.IdleTimeBetweenReads)
	case c.MinTimeBetweenReads < DefaultMinTimeBetweenReads:
		return bad("MinTimeBetweenReads", "%s is below 200ms; Kinesis allows 5 GetRecords per second per shard", c.MinTimeBetweenReads)
	case c.CheckpointInterval < 0:
		return bad("CheckpointInterval", "%s must not be negative", c.CheckpointInterval)
	case c.ShutdownTimeout < time.Second:
		return bad("ShutdownTimeout", "%s is too short; at least 1s", c.ShutdownTimeout)
	case c.OnProcessorFailure != FailureRetry && c.OnProcessorFailure != FailureStop && c.OnProcessorFailure != FailureSkip && c.OnProcessorFailure != FailureDeadLetter:
		return bad("OnProcessorFailure", "%q must be retry, stop, skip or dead-letter", c.OnProcessorFailure)
	case c.ProcessorRetries < 0:
		return bad("ProcessorRetries", "%d must not be negative", c.ProcessorRetries)
	case c.OnProcessorFailure == FailureDeadLetter && c.DeadLetter == nil:
		return bad("DeadLetter", "must be set when OnProcessorFailure is dead-letter")
	}
	return nil
}

func validTableName(s string) bool {
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
		if !ok {
			return false
		}
	}
	return len(s) >= 3
}
