package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func envOf(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// Every variable's bad value, and every combination the library rejects, is refused at
// start with the variable's name (exit 2 in main), never with a Go field name.
func TestEveryBadSettingNamesItsVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AWS_REGION": "US East 1"}, "AWS_REGION"},
		{map[string]string{"AWS_ENDPOINT_URL": "localhost:4566"}, "AWS_ENDPOINT_URL"},
		{map[string]string{"AWS_ENDPOINT_URL": "ftp://localhost:4566"}, "AWS_ENDPOINT_URL"},
		{map[string]string{"AWS_ENDPOINT_URL": "http://"}, "AWS_ENDPOINT_URL"},
		{map[string]string{"AWS_ENDPOINT_URL": "http://localhost:99999"}, "AWS_ENDPOINT_URL"},
		{map[string]string{"AWS_ENDPOINT_URL_KINESIS": "not a url"}, "AWS_ENDPOINT_URL_KINESIS"},
		{map[string]string{"AWS_ENDPOINT_URL_DYNAMODB": "dynamo:8000"}, "AWS_ENDPOINT_URL_DYNAMODB"},
		{map[string]string{"STREAM_NAME": "my stream"}, "STREAM_NAME"},
		{map[string]string{"ON_PROCESSOR_FAILURE": "ignore"}, "ON_PROCESSOR_FAILURE"},
		{map[string]string{"ON_PROCESSOR_FAILURE": "dead-letter"}, "DEAD_LETTER_STREAM"},
		{map[string]string{"DEAD_LETTER_STREAM": "dead letters"}, "DEAD_LETTER_STREAM"},
		{map[string]string{"PROCESSOR_RETRIES": "-2"}, "PROCESSOR_RETRIES"},
		{map[string]string{"STREAM_NAME": strings.Repeat("s", 129)}, "STREAM_NAME"},
		{map[string]string{"APP_NAME": "ab"}, "APP_NAME"},
		{map[string]string{"APP_NAME": "my app"}, "APP_NAME"},
		{map[string]string{"APP_NAME": strings.Repeat("a", 251)}, "APP_NAME"},
		{map[string]string{"APP_NAME": "app", "WORKER_ID": "app_coordinator"}, "WORKER_ID"},
		{map[string]string{"ENABLE_DYNAMIC_MAX_LEASES": "sometimes"}, "ENABLE_DYNAMIC_MAX_LEASES"},
		{map[string]string{"MAX_LEASES_CAP": "-1"}, "MAX_LEASES_CAP"},
		{map[string]string{"MAX_LEASES_CAP": "10001"}, "MAX_LEASES_CAP"},
		{map[string]string{"MAX_LEASES": "-3"}, "MAX_LEASES"},
		{map[string]string{"MAX_LEASES": "many"}, "MAX_LEASES"},
		{map[string]string{"WORKER_COUNT": "-1"}, "WORKER_COUNT"},
		{map[string]string{"WORKER_COUNT": "3.5"}, "WORKER_COUNT"},
		{map[string]string{"WORKER_COUNT_SOURCE": "dns"}, "WORKER_COUNT_SOURCE"},
		{map[string]string{"WORKER_COUNT_SOURCE": "static"}, "WORKER_COUNT"},
		{map[string]string{"STATEFULSET_NAME": "Workers_1"}, "STATEFULSET_NAME"},
		{map[string]string{"POD_NAMESPACE": "-ns"}, "POD_NAMESPACE"},
		{map[string]string{"LEASE_DURATION": "-10s"}, "LEASE_DURATION"},
		{map[string]string{"HEARTBEAT_INTERVAL": "soon"}, "HEARTBEAT_INTERVAL"},
		{map[string]string{"HEARTBEAT_INTERVAL": "1ms"}, "HEARTBEAT_INTERVAL"},
		{map[string]string{"POLL_INTERVAL": "-1s"}, "POLL_INTERVAL"},
		{map[string]string{"SHARD_SYNC_INTERVAL": "1ns"}, "SHARD_SYNC_INTERVAL"},
		{map[string]string{"IDLE_TIME_BETWEEN_READS": "-1s"}, "IDLE_TIME_BETWEEN_READS"},
		{map[string]string{"SHUTDOWN_TIMEOUT": "100ms"}, "SHUTDOWN_TIMEOUT"},
		{map[string]string{"INITIAL_POSITION": "AT_SEQUENCE_NUMBER"}, "INITIAL_POSITION"},
		{map[string]string{"INITIAL_POSITION": "AT_TIMESTAMP", "INITIAL_TIMESTAMP": "yesterday"}, "INITIAL_TIMESTAMP"},
		{map[string]string{"HEALTH_ADDR": "8080"}, "HEALTH_ADDR"},
		{map[string]string{"HEALTH_ADDR": ":http-alt"}, "HEALTH_ADDR"},
		{map[string]string{"HEALTH_ADDR": ":70000"}, "HEALTH_ADDR"},
		{map[string]string{"DASHBOARD_ADDR": "8090"}, "DASHBOARD_ADDR"},
		{map[string]string{"LOG_FORMAT": "yaml"}, "LOG_FORMAT"},
		{map[string]string{"LOG_LEVEL": "trace"}, "LOG_LEVEL"},
		{map[string]string{"CREATE_TABLES": "maybe"}, "CREATE_TABLES"},
		{map[string]string{"LEASE_TABLE": "kcl app"}, "LEASE_TABLE"},
		{map[string]string{"LEASE_TABLE": "ab"}, "LEASE_TABLE"},
		{map[string]string{"KCL_CHECK": "perhaps"}, "KCL_CHECK"},
		{map[string]string{"KCL_CHECK_WINDOW": "-5s"}, "KCL_CHECK_WINDOW"},
		{map[string]string{"KCL_CHECK_WINDOW": "a while"}, "KCL_CHECK_WINDOW"},
		{map[string]string{"WAIT_FOR_KCL_SHUTDOWN": "yes please"}, "WAIT_FOR_KCL_SHUTDOWN"},
		// Combinations the library rejects: the error names the variable and speaks of
		// the other variables by their names too.
		{map[string]string{"LEASE_DURATION": "10s", "HEARTBEAT_INTERVAL": "5s"}, "HEARTBEAT_INTERVAL"},
		{map[string]string{"LEASE_DURATION": "3s", "POLL_INTERVAL": "2s"}, "POLL_INTERVAL"},
		{map[string]string{"POLL_INTERVAL": "2s", "LEASE_DURATION": "30s", "SHARD_SYNC_INTERVAL": "1s"}, "SHARD_SYNC_INTERVAL"},
		{map[string]string{"ENABLE_DYNAMIC_MAX_LEASES": "false", "MAX_LEASES_CAP": "5", "MAX_LEASES": "6"}, "MAX_LEASES"},
	}
	goNames := []string{"HeartbeatInterval", "LeaseDuration", "PollInterval", "ShardSyncInterval", "AppName", "WorkerID", "StaticMaxLeases", "MaxLeasesCap"}
	for _, tc := range cases {
		_, err := parseSettings(nil, envOf(tc.env), "host", io.Discard)
		if err == nil {
			t.Errorf("%v: accepted", tc.env)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "invalid "+tc.want+" ") {
			t.Errorf("%v: error %q does not name %s", tc.env, msg, tc.want)
		}
		var se *settingError
		if !errors.As(err, &se) {
			t.Errorf("%v: error %q is not a settingError (main exits 2 only for those)", tc.env, msg)
		}
		for _, g := range goNames {
			if strings.Contains(msg, g) {
				t.Errorf("%v: error %q uses the Go field name %s instead of the variable", tc.env, msg, g)
			}
		}
	}
}

// The heartbeat combination reports both variables with their values.
func TestHeartbeatAboveALeaseThirdIsExplained(t *testing.T) {
	_, err := parseSettings(nil, envOf(map[string]string{"LEASE_DURATION": "9s", "HEARTBEAT_INTERVAL": "4s"}), "host", io.Discard)
	if err == nil {
		t.Fatal("HEARTBEAT_INTERVAL 4s with LEASE_DURATION 9s accepted")
	}
	for _, want := range []string{"HEARTBEAT_INTERVAL", `"4s"`, "LEASE_DURATION/3", "3s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The boundary is allowed.
	if _, err := parseSettings(nil, envOf(map[string]string{"LEASE_DURATION": "9s", "HEARTBEAT_INTERVAL": "3s"}), "host", io.Discard); err != nil {
		t.Errorf("HEARTBEAT_INTERVAL = LEASE_DURATION/3 refused: %v", err)
	}
}

// An endpoint with user information is refused without echoing the password.
func TestEndpointWithCredentialsIsRefusedWithoutEchoingThem(t *testing.T) {
	_, err := parseSettings(nil, envOf(map[string]string{"AWS_ENDPOINT_URL": "http://AKIDSECRETUSER:pa55w0rdSECRET@localhost:4566"}), "host", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "AWS_ENDPOINT_URL") {
		t.Fatalf("err = %v, want one naming AWS_ENDPOINT_URL", err)
	}
	if strings.Contains(err.Error(), "pa55w0rdSECRET") || strings.Contains(err.Error(), "AKIDSECRETUSER") {
		t.Fatalf("error echoes the endpoint's credentials: %v", err)
	}
}

// Accepted settings are always accepted by the library too: nothing reaches
// consumer.New that it would refuse after the worker already touched AWS.
func FuzzSettingsAgreeWithLibrary(f *testing.F) {
	f.Add("10s", "2500ms", "1s", "5s", "80", "0", "true", "app-1", "w-0")
	f.Add("9s", "4s", "0s", "0s", "5", "6", "false", "ab", "app-1_coordinator")
	f.Add("1s", "0s", "400ms", "300ms", "1", "1", "false", "x.y_z", "")
	f.Fuzz(func(t *testing.T, lease, hb, poll, sync, capV, static, dyn, app, worker string) {
		env := map[string]string{"LEASE_DURATION": lease, "HEARTBEAT_INTERVAL": hb, "POLL_INTERVAL": poll,
			"SHARD_SYNC_INTERVAL": sync, "MAX_LEASES_CAP": capV, "MAX_LEASES": static,
			"ENABLE_DYNAMIC_MAX_LEASES": dyn, "APP_NAME": app, "WORKER_ID": worker}
		s, err := parseSettings(nil, envOf(env), "host", io.Discard)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid ") {
				t.Fatalf("error without a setting name: %v", err)
			}
			return
		}
		if err := s.Config.Validate(); err != nil {
			t.Fatalf("settings accepted but the library refuses them: %v (%+v)", err, s)
		}
	})
}

// A failure repeated on every retry is logged once per window, with the count of lines
// left out; other lines, and the same failure from another shard, pass.
func TestRepeatFilterThrottlesRepeatedFailures(t *testing.T) {
	var buf bytes.Buffer
	f := newRepeatFilter(slog.NewJSONHandler(&buf, nil), time.Minute)
	now := time.Unix(1000, 0)
	f.now = func() time.Time { return now }
	log := slog.New(f).With("worker", "w1")
	s0, s1 := log.With("shard", "s0"), log.With("shard", "s1")
	for range 50 {
		s0.Warn("get records failed; backing off", "err", errors.New("stream \"x\" not found"))
		s1.Warn("get records failed; backing off", "err", errors.New("stream \"x\" not found"))
		log.Info("lease taken")
		now = now.Add(time.Second)
	}
	now = now.Add(time.Minute)
	s0.Warn("get records failed; backing off", "err", errors.New("stream \"x\" not found"))
	count := map[string]int{}
	var repeated float64
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		key, _ := m["msg"].(string)
		if s, ok := m["shard"].(string); ok {
			key += "/" + s
		}
		count[key]++
		if r, ok := m["repeated"].(float64); ok {
			repeated = r
		}
	}
	if count["get records failed; backing off/s0"] != 2 || count["get records failed; backing off/s1"] != 1 {
		t.Errorf("failure lines %v, want 2 for s0 (first and after the window) and 1 for s1", count)
	}
	if count["lease taken"] != 50 {
		t.Errorf("%d info lines, want all 50 (only failures are throttled)", count["lease taken"])
	}
	if repeated != 49 {
		t.Errorf("repeated = %v, want 49 lines left out", repeated)
	}
}

// Nothing listening at the endpoint: the message names the service, endpoint, region
// and the variables to check.
func TestUnreachableNamesEndpoint(t *testing.T) {
	err := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	got := unreachable("DynamoDB", "eu-west-3", "http://127.0.0.1:1", time.Minute, errors.Join(errors.New("dynamostore: DescribeTable"), err))
	for _, want := range []string{"cannot reach DynamoDB", "http://127.0.0.1:1", "eu-west-3", "AWS_ENDPOINT_URL", "AWS_REGION"} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	timeout := unreachable("Kinesis", "us-east-1", "", 30*time.Second, context.DeadlineExceeded)
	if !strings.Contains(timeout.Error(), "no answer within 30s") || !strings.Contains(timeout.Error(), "the AWS endpoint") {
		t.Errorf("timeout message %q", timeout)
	}
	service := errors.New(`dynamostore: DescribeTable: table "x": dynamodb table not found`)
	if got := unreachable("DynamoDB", "r", "e", time.Minute, service); got != service {
		t.Errorf("a service error was rewritten: %v", got)
	}
}
