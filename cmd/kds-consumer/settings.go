package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// settings is the worker's configuration, from flags and the environment (a flag wins
// over its variable).
type settings struct {
	Region            string
	Endpoint          string
	StreamName        string
	AppName           string
	WorkerID          string
	DynamicMaxLeases  bool
	MaxLeasesCap      int
	StaticMaxLeases   int
	WorkerCount       int
	WorkerCountSource string
	StatefulSetName   string
	PodNamespace      string
	LeaseDuration     time.Duration
	HeartbeatInterval time.Duration
	PollInterval      time.Duration
	ShardSyncInterval time.Duration
	IdleBetweenReads  time.Duration
	MaxRecordsPerGet  int
	ShutdownTimeout   time.Duration
	InitialPosition   string
	InitialTimestamp  time.Time
	HealthAddr        string
	LogFormat         string
	LogLevel          string
	RecordLogDir      string
	CreateTables      bool
}

// errHelp is returned after --help printed the usage.
var errHelp = errors.New("help requested")

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

// Names the library's configuration errors use, mapped to the worker's flags, so that a
// consumer.ConfigError is reported with the variable the operator sets.
var flagOfField = map[string]string{
	"AppName":              "app",
	"WorkerID":             "worker-id",
	"LeaseDuration":        "lease-duration",
	"HeartbeatInterval":    "heartbeat-interval",
	"PollInterval":         "poll-interval",
	"ShardSyncInterval":    "shard-sync-interval",
	"MaxLeasesCap":         "max-leases-cap",
	"StaticMaxLeases":      "max-leases",
	"InitialPosition":      "initial-position",
	"InitialTimestamp":     "initial-timestamp",
	"IdleTimeBetweenReads": "idle-time-between-reads",
	"ShutdownTimeout":      "shutdown-timeout",
}

// fieldNames rewrites field names inside a ConfigError's reason to variable names.
var fieldNames = strings.NewReplacer(
	"LeaseDuration", "LEASE_DURATION",
	"PollInterval", "POLL_INTERVAL",
	"MaxLeasesCap", "MAX_LEASES_CAP",
	"InitialPosition", "INITIAL_POSITION",
)

// consumerConfig is the library configuration the settings describe, without the
// logger, hooks and worker counter that run adds.
func consumerConfig(s settings) consumer.Config {
	return consumer.Config{
		AppName:                 s.AppName,
		StreamName:              s.StreamName,
		WorkerID:                s.WorkerID,
		LeaseDuration:           s.LeaseDuration,
		HeartbeatInterval:       s.HeartbeatInterval,
		PollInterval:            s.PollInterval,
		ShardSyncInterval:       s.ShardSyncInterval,
		IdleTimeBetweenReads:    s.IdleBetweenReads,
		MaxRecordsPerGet:        s.MaxRecordsPerGet,
		ShutdownTimeout:         s.ShutdownTimeout,
		MaxLeasesCap:            s.MaxLeasesCap,
		DisableDynamicMaxLeases: !s.DynamicMaxLeases,
		StaticMaxLeases:         s.StaticMaxLeases,
		InitialPosition:         s.InitialPosition,
		InitialTimestamp:        s.InitialTimestamp,
	}
}

var (
	streamNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)
	regionRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*[a-z0-9]$`)
	dnsLabelRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// checkEndpoint returns why an endpoint URL is unusable, or "".
func checkEndpoint(v string) string {
	u, err := url.Parse(v)
	switch {
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

// parseSettings reads args and the environment through getenv. hostname is the default
// worker id (the pod name in Kubernetes).
func parseSettings(args []string, getenv func(string) string, hostname string, out io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("kds-consumer", flag.ContinueOnError)
	fs.SetOutput(out)
	type spec struct {
		env, name, def, usage string
	}
	specs := []spec{
		{"AWS_REGION", "region", "us-east-1", "AWS region"},
		{"AWS_ENDPOINT_URL", "endpoint", "", "endpoint for Kinesis and DynamoDB (e.g. http://localhost:4566); AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL_DYNAMODB also work"},
		{"STREAM_NAME", "stream", "test-stream", "Kinesis stream to consume"},
		{"APP_NAME", "app", "kds-consumer-app", "application name: lease table <app>, metadata table <app>_meta"},
		{"WORKER_ID", "worker-id", hostname, "unique, stable worker id (default: host name, i.e. the pod name)"},
		{"ENABLE_DYNAMIC_MAX_LEASES", "enable-dynamic-max-leases", "true", "coordinator computes min(cap, ceil(shards/workers)); false: use MAX_LEASES"},
		{"MAX_LEASES_CAP", "max-leases-cap", "80", "upper bound on leases per worker"},
		{"MAX_LEASES", "max-leases", "0", "static max leases per worker when dynamic max leases is disabled (0: the cap)"},
		{"WORKER_COUNT", "worker-count", "0", "static desired worker count (with WORKER_COUNT_SOURCE=static)"},
		{"WORKER_COUNT_SOURCE", "worker-count-source", "", "where the desired worker count comes from: heartbeat (live workers), kubernetes (the StatefulSet's replicas) or static (WORKER_COUNT); default static when WORKER_COUNT is set, else heartbeat"},
		{"STATEFULSET_NAME", "statefulset-name", "", "the workers' StatefulSet (default: WORKER_ID without its ordinal)"},
		{"POD_NAMESPACE", "pod-namespace", "", "the workers' namespace (default: the pod's ServiceAccount namespace)"},
		{"LEASE_DURATION", "lease-duration", "10s", "how long a silent worker keeps its leases"},
		{"HEARTBEAT_INTERVAL", "heartbeat-interval", "0s", "heartbeat renewal interval (0: lease duration / 4)"},
		{"POLL_INTERVAL", "poll-interval", "0s", "metadata poll interval (0: 1s)"},
		{"SHARD_SYNC_INTERVAL", "shard-sync-interval", "0s", "coordinator's shard listing interval (0: 5s)"},
		{"IDLE_TIME_BETWEEN_READS", "idle-time-between-reads", "0s", "wait after an empty GetRecords (0: 1s)"},
		{"MAX_RECORDS_PER_GET", "max-records-per-get", "10000", "GetRecords limit per call (1 to 10000)"},
		{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "0s", "bound on the graceful drain (0: 20s)"},
		{"INITIAL_POSITION", "initial-position", "TRIM_HORIZON", "where new leases start: TRIM_HORIZON, LATEST or AT_TIMESTAMP"},
		{"INITIAL_TIMESTAMP", "initial-timestamp", "", "RFC 3339 time for AT_TIMESTAMP"},
		{"HEALTH_ADDR", "health-addr", ":8080", "address of /health, /ready"},
		{"LOG_FORMAT", "log-format", "text", "text or json"},
		{"LOG_LEVEL", "log-level", "info", "debug, info, warn or error"},
		{"RECORD_LOG_DIR", "record-log-dir", "", "demo processor: append every processed record to <dir>/<worker>.jsonl (for verification)"},
		{"CREATE_TABLES", "create-tables", "true", "create the lease and metadata tables when missing"},
	}
	raw := make(map[string]*string, len(specs))
	for _, sp := range specs {
		def := sp.def
		if v := getenv(sp.env); v != "" {
			def = v
		}
		raw[sp.name] = fs.String(sp.name, def, sp.usage+" ["+sp.env+"]")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return s, errHelp
		}
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q (all settings are --flags or environment variables)", fs.Arg(0))
	}
	envOf := make(map[string]string, len(specs))
	for _, sp := range specs {
		envOf[sp.name] = sp.env
	}
	var errs []error
	bad := func(name, reason string) {
		errs = append(errs, &settingError{env: envOf[name], flag: name, value: *raw[name], reason: reason})
	}
	str := func(name string) string { return strings.TrimSpace(*raw[name]) }
	boolean := func(name string) bool {
		v, err := strconv.ParseBool(str(name))
		if err != nil {
			bad(name, "want true or false")
		}
		return v
	}
	integer := func(name string, lo, hi int) int {
		v, err := strconv.Atoi(str(name))
		if err != nil || v < lo || v > hi {
			bad(name, fmt.Sprintf("want a whole number from %d to %d", lo, hi))
		}
		return v
	}
	duration := func(name string, lo time.Duration) time.Duration {
		v, err := time.ParseDuration(str(name))
		if err != nil {
			bad(name, "want a duration such as 10s or 500ms")
		} else if v != 0 && v < lo {
			bad(name, fmt.Sprintf("at least %s (or 0 for the default)", lo))
		}
		return v
	}
	s.Region = str("region")
	s.Endpoint = str("endpoint")
	s.StreamName = str("stream")
	s.AppName = str("app")
	s.WorkerID = str("worker-id")
	s.DynamicMaxLeases = boolean("enable-dynamic-max-leases")
	s.MaxLeasesCap = integer("max-leases-cap", 1, 10000)
	s.StaticMaxLeases = integer("max-leases", 0, 10000)
	s.WorkerCount = integer("worker-count", 0, 100000)
	s.WorkerCountSource = strings.ToLower(str("worker-count-source"))
	s.StatefulSetName = str("statefulset-name")
	s.PodNamespace = str("pod-namespace")
	s.LeaseDuration = duration("lease-duration", time.Second)
	s.HeartbeatInterval = duration("heartbeat-interval", 10*time.Millisecond)
	s.PollInterval = duration("poll-interval", 10*time.Millisecond)
	s.ShardSyncInterval = duration("shard-sync-interval", 10*time.Millisecond)
	s.IdleBetweenReads = duration("idle-time-between-reads", 0)
	s.MaxRecordsPerGet = integer("max-records-per-get", 1, 10000)
	s.ShutdownTimeout = duration("shutdown-timeout", time.Second)
	s.InitialPosition = strings.ToUpper(str("initial-position"))
	s.HealthAddr = str("health-addr")
	s.LogFormat = str("log-format")
	s.LogLevel = strings.ToLower(str("log-level"))
	s.RecordLogDir = str("record-log-dir")
	s.CreateTables = boolean("create-tables")

	if s.Region == "" {
		bad("region", "must not be empty")
	}
	if s.StreamName == "" || len(s.StreamName) > 128 {
		bad("stream", "a stream name has 1 to 128 characters")
	}
	if s.WorkerID == "" {
		bad("worker-id", "must not be empty (no host name to default to)")
	}
	if s.LeaseDuration == 0 {
		bad("lease-duration", "must be set")
	}
	switch s.InitialPosition {
	case lease.TrimHorizon, lease.Latest:
	case lease.AtTimestamp:
		t, err := time.Parse(time.RFC3339, str("initial-timestamp"))
		if err != nil {
			bad("initial-timestamp", "AT_TIMESTAMP needs an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		s.InitialTimestamp = t
	default:
		bad("initial-position", "want TRIM_HORIZON, LATEST or AT_TIMESTAMP")
	}
	if s.LogFormat != "text" && s.LogFormat != "json" {
		bad("log-format", "want text or json")
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "want debug, info, warn or error")
	}
	switch s.WorkerCountSource {
	case "":
		s.WorkerCountSource = "heartbeat"
		if s.WorkerCount > 0 {
			s.WorkerCountSource = "static"
		}
	case "heartbeat", "kubernetes":
	case "static":
		if s.WorkerCount < 1 {
			bad("worker-count", "WORKER_COUNT_SOURCE=static needs a WORKER_COUNT of at least 1")
		}
	default:
		bad("worker-count-source", "want heartbeat, kubernetes or static")
	}
	if s.StaticMaxLeases > s.MaxLeasesCap {
		bad("max-leases", fmt.Sprintf("must not exceed MAX_LEASES_CAP (%d)", s.MaxLeasesCap))
	}
	if s.Region != "" && !regionRE.MatchString(s.Region) {
		bad("region", "want a region name such as us-east-1")
	}
	if s.Endpoint != "" {
		if why := checkEndpoint(s.Endpoint); why != "" {
			// The value may hold user:password; do not echo it.
			errs = append(errs, &settingError{env: "AWS_ENDPOINT_URL", flag: "endpoint", value: redactURL(s.Endpoint), reason: why})
		}
	}
	for _, env := range []string{"AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"} {
		if v := strings.TrimSpace(getenv(env)); v != "" {
			if why := checkEndpoint(v); why != "" {
				errs = append(errs, &settingError{env: env, value: redactURL(v), reason: why})
			}
		}
	}
	if s.StreamName != "" && len(s.StreamName) <= 128 && !streamNameRE.MatchString(s.StreamName) {
		bad("stream", "a stream name has only letters, digits, '_', '-' and '.'")
	}
	if _, port, err := net.SplitHostPort(s.HealthAddr); err != nil {
		bad("health-addr", "want host:port or :port, such as :8080")
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("health-addr", "the port must be a number from 0 to 65535")
	}
	for _, name := range []string{"statefulset-name", "pod-namespace"} {
		if v := str(name); v != "" && !dnsLabelRE.MatchString(v) {
			bad(name, "want a Kubernetes name: lower-case letters, digits and '-', at most 63 characters")
		}
	}
	if len(errs) == 0 {
		// The combinations the library checks (HEARTBEAT_INTERVAL at most
		// LEASE_DURATION/3, ...), reported with the variable's name.
		if err := consumerConfig(s).Validate(); err != nil {
			var ce *consumer.ConfigError
			if errors.As(err, &ce) && flagOfField[ce.Field] != "" {
				bad(flagOfField[ce.Field], fieldNames.Replace(ce.Reason))
			} else {
				errs = append(errs, err)
			}
		}
	}
	return s, errors.Join(errs...)
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
