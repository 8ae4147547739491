package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/multilang"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// settings is the worker's configuration, from flags and the environment (a flag wins
// over its variable): the library's part, without the logger, hooks and worker counter
// that run adds, and the binary's own settings.
type settings struct {
	consumer.Config
	Region, Endpoint string
	// AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB, which the SDK reads itself.
	KinesisEndpoint, DynamoDBEndpoint                string
	WorkerCount                                      int
	WorkerCountSource, StatefulSetName, PodNamespace string
	HealthAddr, LogFormat, LogLevel, RecordLogDir    string
	DashboardAddr                                    string
	DeadLetterStream                                 string
	CreateTables                                     bool
	// LeaseTable names an existing lease table to adopt (a KCL application's) instead
	// of <app>. KCLCheck, KCLCheckWindow and WaitForKCLShutdown shape the start-up check
	// that no KCL worker still renews leases in the lease table (package takeover).
	LeaseTable                   string
	KCLCheck, WaitForKCLShutdown bool
	KCLCheckWindow               time.Duration
	// DemoCheckpoint, DemoRecordDelay and DemoFailOn shape the demo processor (demo.go).
	DemoCheckpoint  string
	DemoRecordDelay time.Duration
	DemoFailOn      string
	// Properties is a KCL MultiLangDaemon .properties file (properties.go); with
	// MultiLangCommand the worker runs that record processor (package multilang)
	// instead of the demo processor, each action bounded by MultiLangTimeout.
	Properties       string
	MultiLangCommand string
	MultiLangTimeout time.Duration
	// Warnings are about the properties file's ignored keys, logged once the logger is up.
	Warnings []string
}

// defaultSettings holds every default: the library's (consumer.DefaultConfig; the fields
// whose default follows another field stay 0) and the binary's own. hostname is the
// default worker id (the pod name in Kubernetes).
func defaultSettings(hostname string) settings {
	s := settings{Config: consumer.DefaultConfig(), HealthAddr: ":8080",
		LogFormat: "text", LogLevel: "info", CreateTables: true, KCLCheck: true, DemoCheckpoint: "batch",
		MultiLangTimeout: multilang.DefaultActionTimeout}
	s.StreamName, s.AppName, s.WorkerID = "test-stream", "kds-consumer-app", hostname
	return s
}

// table binds every environment variable and its flag to where its value goes in s.
// Adding a setting is adding a row; the default --help shows is what s holds before
// parsing. A row checks only what the library does not: the value's form, and the
// binary's own settings. Everything consumer.Config validates is left to it.
func table(s *settings) []setting {
	c := &s.Config
	return []setting{
		stringVar(&s.Region, "AWS_REGION", "region", "AWS region (default: the SDK's, e.g. the AWS_PROFILE's region)", checkRegion),
		urlVar(&s.Endpoint, "AWS_ENDPOINT_URL", "endpoint", "endpoint for Kinesis and DynamoDB (e.g. http://localhost:4566); AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL_DYNAMODB also work"),
		urlVar(&s.KinesisEndpoint, "AWS_ENDPOINT_URL_KINESIS", "", "Kinesis endpoint, over AWS_ENDPOINT_URL"),
		urlVar(&s.DynamoDBEndpoint, "AWS_ENDPOINT_URL_DYNAMODB", "", "DynamoDB endpoint, over AWS_ENDPOINT_URL"),
		stringVar(&c.StreamName, "STREAM_NAME", "stream", "Kinesis stream to consume", checkStreamName),
		stringVar(&c.AppName, "APP_NAME", "app", "application name: lease table <app> (unless LEASE_TABLE), metadata table <app>_meta"),
		stringVar(&s.LeaseTable, "LEASE_TABLE", "lease-table", "an existing lease table to use instead of <app>, such as a KCL application's (docs/migrating-from-kcl.md); never created", checkTableName),
		stringVar(&c.WorkerID, "WORKER_ID", "worker-id", "unique, stable worker id (default: host name, i.e. the pod name)"),
		notVar(&c.DisableDynamicMaxLeases, "ENABLE_DYNAMIC_MAX_LEASES", "enable-dynamic-max-leases", "coordinator computes min(cap, ceil(shards/workers)); false: use MAX_LEASES"),
		intVar(&c.MaxLeasesCap, 1, 10000, "MAX_LEASES_CAP", "max-leases-cap", "upper bound on leases per worker"),
		intVar(&c.StaticMaxLeases, 0, 10000, "MAX_LEASES", "max-leases", "static max leases per worker when dynamic max leases is disabled (0: the cap)"),
		intVar(&s.WorkerCount, 0, 100000, "WORKER_COUNT", "worker-count", "static desired worker count (with WORKER_COUNT_SOURCE=static)"),
		choiceVar(&s.WorkerCountSource, "WORKER_COUNT_SOURCE", "worker-count-source", "where the desired worker count comes from: heartbeat (live workers), kubernetes (the StatefulSet's replicas) or static (WORKER_COUNT); default static when WORKER_COUNT is set, else heartbeat", "heartbeat", "kubernetes", "static"),
		stringVar(&s.StatefulSetName, "STATEFULSET_NAME", "statefulset-name", "the workers' StatefulSet (default: WORKER_ID without its ordinal)", checkKubeName),
		stringVar(&s.PodNamespace, "POD_NAMESPACE", "pod-namespace", "the workers' namespace (default: the pod's ServiceAccount namespace)", checkKubeName),
		durationVar(&c.LeaseDuration, "LEASE_DURATION", "lease-duration", "how long a silent worker keeps its leases; the heartbeat and poll defaults and the call timeouts follow it (0: the default)"),
		intervalVar(&c.HeartbeatInterval, "HEARTBEAT_INTERVAL", "heartbeat-interval", "heartbeat renewal interval (0: LEASE_DURATION/3)"),
		intervalVar(&c.PollInterval, "POLL_INTERVAL", "poll-interval", fmt.Sprintf("metadata poll interval (0: the smaller of %s and LEASE_DURATION/3)", consumer.DefaultPollInterval)),
		intervalVar(&c.ShardSyncInterval, "SHARD_SYNC_INTERVAL", "shard-sync-interval", "coordinator's shard listing interval"),
		intervalVar(&c.CleanupInterval, "CLEANUP_INTERVAL", "cleanup-interval", "how often the coordinator deletes finished leases and dead workers' records"),
		durationVar(&c.FinishedLeaseDelay, "FINISHED_LEASE_DELAY", "finished-lease-delay", "how long a finished lease stays after all its children have leases, before it is deleted"),
		durationVar(&c.DeadWorkerDelay, "DEAD_WORKER_DELAY", "dead-worker-delay", "how long a gone or expired worker's record stays before it is deleted (at least LEASE_DURATION)"),
		durationVar(&c.IdleTimeBetweenReads, "IDLE_TIME_BETWEEN_READS", "idle-time-between-reads", "wait after an empty GetRecords"),
		intVar(&c.MaxRecordsPerGet, 1, 10000, "MAX_RECORDS_PER_GET", "max-records-per-get", "GetRecords limit per call"),
		durationVar(&c.CheckpointInterval, "CHECKPOINT_INTERVAL", "checkpoint-interval", "at most one checkpoint write per shard per interval; the rest are kept and written with the next write or the lease's release (0: every checkpoint is written)"),
		durationVar(&c.ShutdownTimeout, "SHUTDOWN_TIMEOUT", "shutdown-timeout", "bound on the graceful drain"),
		choiceVar(&c.OnProcessorFailure, "ON_PROCESSOR_FAILURE", "on-processor-failure", "what happens to a batch the record processor keeps failing on after PROCESSOR_RETRIES retries: retry (forever, nothing skipped), stop (the shard, lease held, kds_shards_stopped alerts), skip (the rest of the batch, logged and counted) or dead-letter (to DEAD_LETTER_STREAM)",
			consumer.FailureRetry, consumer.FailureStop, consumer.FailureSkip, consumer.FailureDeadLetter),
		intVar(&c.ProcessorRetries, 0, 1000, "PROCESSOR_RETRIES", "processor-retries", "retries of a failing batch, with back-off from 100ms to 5s, before ON_PROCESSOR_FAILURE applies (0: the default)"),
		stringVar(&s.DeadLetterStream, "DEAD_LETTER_STREAM", "dead-letter-stream", "Kinesis stream that receives the batches ON_PROCESSOR_FAILURE=dead-letter gives up on", checkOptionalStreamName),
		upperVar(&c.InitialPosition, "INITIAL_POSITION", "initial-position", "where new leases start: TRIM_HORIZON, LATEST or AT_TIMESTAMP"),
		timeVar(&c.InitialTimestamp, "INITIAL_TIMESTAMP", "initial-timestamp", "RFC 3339 time for AT_TIMESTAMP").
			onlyIf(func() bool { return c.InitialPosition == lease.AtTimestamp }),
		stringVar(&s.HealthAddr, "HEALTH_ADDR", "health-addr", "address of /live, /health, /ready, /metrics", checkListenAddr),
		stringVar(&s.DashboardAddr, "DASHBOARD_ADDR", "dashboard-addr", "serve the live dashboard page (as kdsctl dashboard) on this address, e.g. 127.0.0.1:8090 (default: off)", checkOptionalListenAddr),
		choiceVar(&s.LogFormat, "LOG_FORMAT", "log-format", "text or json", "text", "json"),
		choiceVar(&s.LogLevel, "LOG_LEVEL", "log-level", "debug, info, warn or error", "debug", "info", "warn", "error"),
		stringVar(&s.RecordLogDir, "RECORD_LOG_DIR", "record-log-dir", "demo processor: append every processed record to <dir>/<worker>.jsonl (for verification)"),
		boolVar(&s.CreateTables, "CREATE_TABLES", "create-tables", "create the lease and metadata tables when missing"),
		boolVar(&s.KCLCheck, "KCL_CHECK", "kcl-check", "before taking any lease, refuse to start while lease owners that are not workers of this application (a KCL fleet) still renew leases in the lease table"),
		intervalVar(&s.KCLCheckWindow, "KCL_CHECK_WINDOW", "kcl-check-window", "how long the KCL check watches the lease counters; longer than the KCL's renewal interval (0: LEASE_DURATION)"),
		boolVar(&s.WaitForKCLShutdown, "WAIT_FOR_KCL_SHUTDOWN", "wait-for-kcl-shutdown", "when KCL workers still renew leases, wait until they stop (logging each round) instead of refusing to start"),
		choiceVar(&s.DemoCheckpoint, "DEMO_CHECKPOINT", "demo-checkpoint", "demo processor: checkpoint after every batch (Checkpoint of its last sequence number) or after every record (CheckpointRecord: inside KPL aggregates too)", "batch", "record"),
		durationVar(&s.DemoRecordDelay, "DEMO_RECORD_DELAY", "demo-record-delay", "demo processor: pause after each record (and its checkpoint), to simulate slow processing"),
		stringVar(&s.DemoFailOn, "DEMO_FAIL_ON", "demo-fail-on", "demo processor: fail every batch at a record whose data is this (to try ON_PROCESSOR_FAILURE)"),
		stringVar(&s.Properties, "KCL_PROPERTIES", "properties", "a KCL MultiLangDaemon .properties file: its keys (executableName, streamName, applicationName, ...) set the settings they map onto, under flags and variables"),
		stringVar(&s.MultiLangCommand, "MULTILANG_COMMAND", "multilang-command", "run this KCL MultiLang record processor (command and arguments, split on spaces; the KCL's executableName), one process per shard, instead of the demo processor"),
		durationVar(&s.MultiLangTimeout, "MULTILANG_TIMEOUT", "multilang-timeout", "deadline of each MultiLang action (the KCL's timeoutInSeconds): a record processor that misses it is killed and restarted from the last checkpoint"),
	}
}

// setting binds one environment variable, and its flag, to the variable its value goes
// to.
type setting struct {
	env, flag, help string // no flag: the environment only
	target          any    // a pointer to the bound variable
	def             string // the default --help shows: the bound variable's value before parsing
	// set parses a value (without surrounding spaces) into target, or says why it cannot.
	set  func(v string) (reason string)
	show func(v string) string // the value as messages show it, if not as it is
}

// bind binds p: parse reads a value, or says why it cannot.
func bind[T any](p *T, def, env, flag, help string, parse func(string) (T, string)) setting {
	return setting{env: env, flag: flag, help: help, target: p, def: def, set: func(v string) string {
		x, why := parse(v)
		if why == "" {
			*p = x
		}
		return why
	}}
}

// onlyIf makes the setting count only when cond holds once the rows above it are parsed.
func (r setting) onlyIf(cond func() bool) setting {
	set := r.set
	r.set = func(v string) string {
		if !cond() {
			return ""
		}
		return set(v)
	}
	return r
}

// fail is the error for the value v of this setting.
func (r setting) fail(v, reason string) error {
	if r.show != nil {
		v = r.show(v)
	}
	return &settingError{env: r.env, flag: r.flag, value: v, reason: reason}
}

func stringVar(p *string, env, flag, help string, checks ...func(string) string) setting {
	return bind(p, *p, env, flag, help, func(v string) (string, string) {
		why := ""
		for _, check := range checks {
			why = cmp.Or(why, check(v))
		}
		return v, why
	})
}

func upperVar(p *string, env, flag, help string) setting {
	return bind(p, *p, env, flag, help, func(v string) (string, string) { return strings.ToUpper(v), "" })
}

// choiceVar binds one of choices, in any case; empty only when the default is empty.
func choiceVar[T ~string](p *T, env, flag, help string, choices ...T) setting {
	def := *p
	return bind(p, string(def), env, flag, help, func(v string) (T, string) {
		if c := T(strings.ToLower(v)); c == "" && def == "" || slices.Contains(choices, c) {
			return c, ""
		}
		names := make([]string, len(choices))
		for i, c := range choices {
			names[i] = string(c)
		}
		return T(v), "want " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	})
}

// urlVar binds an endpoint URL, or nothing; messages do not show its user information.
func urlVar(p *string, env, flag, help string) setting {
	r := stringVar(p, env, flag, help, checkEndpoint)
	r.show = redactURL
	return r
}

func boolVar(p *bool, env, flag, help string) setting { return boolBinding(p, false, env, flag, help) }

// notVar binds a bool that says the opposite of its setting.
func notVar(p *bool, env, flag, help string) setting { return boolBinding(p, true, env, flag, help) }

func boolBinding(p *bool, not bool, env, flag, help string) setting {
	return bind(p, strconv.FormatBool(*p != not), env, flag, help, func(v string) (bool, string) {
		b, err := strconv.ParseBool(v)
		return b != not, reasonIf(err != nil, "want true or false")
	})
}

func intVar(p *int, lo, hi int, env, flag, help string) setting {
	return bind(p, strconv.Itoa(*p), env, flag, help, func(v string) (int, string) {
		n, err := strconv.Atoi(v)
		return n, reasonIf(err != nil || n < lo || n > hi, fmt.Sprintf("want a whole number from %d to %d", lo, hi))
	})
}

// minInterval is the shortest interval an operator may set: shorter ones only load
// DynamoDB. The library leaves that to its caller.
const minInterval = 10 * time.Millisecond

func durationVar(p *time.Duration, env, flag, help string) setting {
	return durationBinding(p, 0, env, flag, help)
}

// intervalVar binds an interval: 0 (the library's default) or at least minInterval.
func intervalVar(p *time.Duration, env, flag, help string) setting {
	return durationBinding(p, minInterval, env, flag, help)
}

func durationBinding(p *time.Duration, least time.Duration, env, flag, help string) setting {
	return bind(p, p.String(), env, flag, help, func(v string) (time.Duration, string) {
		d, err := time.ParseDuration(v)
		if err != nil {
			return d, "want a duration such as 10s or 500ms"
		}
		return d, reasonIf(least > 0 && d != 0 && d < least, fmt.Sprintf("at least %s (or 0 for the default)", least))
	})
}

// timeVar binds an RFC 3339 time, or nothing (the zero time).
func timeVar(p *time.Time, env, flag, help string) setting {
	def := ""
	if !p.IsZero() {
		def = p.Format(time.RFC3339)
	}
	return bind(p, def, env, flag, help, func(v string) (time.Time, string) {
		if v == "" {
			return time.Time{}, ""
		}
		t, err := time.Parse(time.RFC3339, v)
		return t, reasonIf(err != nil, "AT_TIMESTAMP needs an RFC 3339 time such as 2026-01-02T15:04:05Z")
	})
}

// reasonIf returns reason if bad, else "".
func reasonIf(bad bool, reason string) string {
	if bad {
		return reason
	}
	return ""
}

// errHelp is returned after --help printed the usage; errVersion when the build was
// asked for (--version, or the argument "version").
var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// settingError names the bad setting by its variable and flag.
type settingError struct {
	env, flag, value, reason string
}

func (e *settingError) Error() string {
	if e.flag == "" {
		return fmt.Sprintf("invalid %s = %q: %s", e.env, e.value, e.reason)
	}
	return fmt.Sprintf("invalid %s (--%s) = %q: %s", e.env, e.flag, e.value, e.reason)
}

// parseSettings reads args and the environment through getenv. hostname is the default
// worker id (the pod name in Kubernetes).
func parseSettings(args []string, getenv func(string) string, hostname string, out io.Writer) (settings, error) {
	s := defaultSettings(hostname)
	if path := propertiesPath(args, getenv); path != "" {
		props, warnings, err := readProperties(path)
		if err != nil {
			return s, &settingError{env: "KCL_PROPERTIES", flag: "properties", value: path, reason: err.Error()}
		}
		s.Warnings = warnings
		env := getenv
		getenv = func(k string) string {
			if v := env(k); v != "" {
				return v
			}
			return props[k]
		}
	}
	rows := table(&s)
	fs := flag.NewFlagSet("kds-consumer", flag.ContinueOnError)
	fs.SetOutput(out)
	raw := make([]*string, len(rows))
	for i, r := range rows {
		v := r.def
		if e := getenv(r.env); e != "" {
			v = e
		}
		raw[i] = &v
		if r.flag != "" {
			raw[i] = fs.String(r.flag, v, r.help+" ["+r.env+"]")
		}
	}
	version := fs.Bool("version", false, "print the build (version, revision, Go version) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return s, errHelp
		}
		return s, err
	}
	if *version || fs.NArg() == 1 && fs.Arg(0) == "version" {
		return s, errVersion
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q (all settings are --flags or environment variables)", fs.Arg(0))
	}
	var errs []error
	configParsed := true
	for i, r := range rows {
		if why := r.set(strings.TrimSpace(*raw[i])); why != "" {
			errs = append(errs, r.fail(*raw[i], why))
			configParsed = configParsed && configField(&s.Config, r.target) == ""
		}
	}
	switch s.WorkerCountSource {
	case "":
		s.WorkerCountSource = "heartbeat"
		if s.WorkerCount > 0 {
			s.WorkerCountSource = "static"
		}
	case "static":
		if s.WorkerCount < 1 {
			errs = append(errs, s.invalid(&s.WorkerCount, strconv.Itoa(s.WorkerCount), "WORKER_COUNT_SOURCE=static needs a WORKER_COUNT of at least 1"))
		}
	}
	if s.OnProcessorFailure == consumer.FailureDeadLetter {
		if s.DeadLetterStream == "" {
			errs = append(errs, s.invalid(&s.DeadLetterStream, "", "ON_PROCESSOR_FAILURE=dead-letter needs a dead-letter stream"))
		} else {
			s.Config.DeadLetter = unconnected{} // run connects it.
		}
	}
	if configParsed {
		// The library's rules (HEARTBEAT_INTERVAL at most LEASE_DURATION/3, MAX_LEASES
		// at most MAX_LEASES_CAP, ...), reported with the variables' names; not when a
		// value it would see is one the operator did not give.
		if err := s.Config.Validate(); err != nil {
			errs = append(errs, configError(err, &s.Config, rows, raw))
		}
	}
	return s, errors.Join(errs...)
}

// invalid is the error for the value v of the setting bound to target, a field of s.
func (s *settings) invalid(target any, v, reason string) error {
	for _, r := range table(s) {
		if r.target == target {
			return r.fail(v, reason)
		}
	}
	panic("kds-consumer: no setting is bound to this field")
}

// configError reports the library's refusal of c as the setting bound to the field it
// names, with every field its reason mentions named by its variable too.
func configError(err error, c *consumer.Config, rows []setting, raw []*string) error {
	var ce *consumer.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	var names []string // field, variable, ...: longest field first, so none is cut short
	at := -1
	for i, r := range rows {
		if field := configField(c, r.target); field != "" {
			names = append(names, field, r.env)
			if field == ce.Field {
				at = i
			}
		}
	}
	if at < 0 {
		return err
	}
	pairs := slices.Collect(slices.Chunk(names, 2))
	slices.SortFunc(pairs, func(a, b []string) int { return cmp.Compare(len(b[0]), len(a[0])) })
	reason := strings.NewReplacer(slices.Concat(pairs...)...).Replace(ce.Reason)
	return rows[at].fail(*raw[at], reason)
}

// configField is the name of c's field that target points to, or "".
func configField(c *consumer.Config, target any) string {
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		if v.Type().Field(i).IsExported() && v.Field(i).Addr().Interface() == target {
			return v.Type().Field(i).Name
		}
	}
	return ""
}

var (
	streamNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	regionRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*[a-z0-9]$`)
	dnsLabelRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

func checkRegion(v string) string {
	if v != "" && !regionRE.MatchString(v) {
		return "want a region name such as us-east-1"
	}
	return ""
}

func checkOptionalStreamName(v string) string {
	if v == "" {
		return ""
	}
	return checkStreamName(v)
}

// unconnected stands for the dead-letter stream until run connects it, so that the
// library's rules are checked at parse time.
type unconnected struct{}

func (unconnected) Put(context.Context, string, []stream.Record, error) error {
	return errors.New("kds-consumer: dead-letter stream not connected")
}

func checkStreamName(v string) string {
	switch {
	case v == "" || len(v) > 128:
		return "a stream name has 1 to 128 characters"
	case !streamNameRE.MatchString(v):
		return "a stream name has only letters, digits, '_', '-' and '.'"
	}
	return ""
}

// checkTableName accepts a DynamoDB table name, or nothing.
func checkTableName(v string) string {
	if v != "" && !dynamostore.ValidTableName(v) {
		return "want a DynamoDB table name: 3 to 255 letters, digits, '_', '-' and '.'"
	}
	return ""
}

// checkKubeName accepts a Kubernetes object name, or nothing.
func checkKubeName(v string) string {
	if v != "" && !dnsLabelRE.MatchString(v) {
		return "want a Kubernetes name: lower-case letters, digits and '-', at most 63 characters"
	}
	return ""
}

func checkListenAddr(v string) string {
	if _, port, err := net.SplitHostPort(v); err != nil {
		return "want host:port or :port, such as :8080"
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "the port must be a number from 0 to 65535"
	}
	return ""
}

func checkOptionalListenAddr(v string) string {
	if v == "" {
		return ""
	}
	return checkListenAddr(v)
}

// checkEndpoint returns why an endpoint URL is unusable, or "" (also for none).
func checkEndpoint(v string) string {
	u, err := url.Parse(v)
	switch {
	case v == "":
		return ""
	case err != nil:
		return "not a URL: " + err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return "want an http:// or https:// URL such as http://localhost:4566"
	case u.Host == "" || u.Hostname() == "":
		return "the URL has no host"
	case u.User != nil:
		return "credentials do not belong in the endpoint URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "the port must be a number from 1 to 65535"
		}
	}
	return ""
}

// redactURL removes the user information from a URL for messages.
func redactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(v, "@"); i >= 0 {
			return "(redacted)@" + v[i+1:]
		}
		return v
	}
	u.User = nil
	return u.String()
}
