package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseSettings(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	t.Run("defaults", func(t *testing.T) {
		s, err := parseSettings(nil, env(nil), "pod-7", io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if s.StreamName != "test-stream" || s.AppName != "kds-consumer-app" || s.WorkerID != "pod-7" ||
			!s.DynamicMaxLeases || s.MaxLeasesCap != 80 || s.LeaseDuration != 10*time.Second ||
			s.HealthAddr != ":8080" || s.InitialPosition != "TRIM_HORIZON" || !s.CreateTables {
			t.Fatalf("unexpected defaults: %+v", s)
		}
	})
	t.Run("environment, and flags over environment", func(t *testing.T) {
		s, err := parseSettings([]string{"--max-leases-cap", "40"}, env(map[string]string{
			"STREAM_NAME": "orders", "MAX_LEASES_CAP": "20", "ENABLE_DYNAMIC_MAX_LEASES": "false",
			"LEASE_DURATION": "6s", "INITIAL_POSITION": "latest", "WORKER_ID": "w-1",
		}), "host", io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if s.StreamName != "orders" || s.MaxLeasesCap != 40 || s.DynamicMaxLeases || s.LeaseDuration != 6*time.Second ||
			s.InitialPosition != "LATEST" || s.WorkerID != "w-1" {
			t.Fatalf("unexpected settings: %+v", s)
		}
	})
	bad := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"LEASE_DURATION": "abc"}, nil, "LEASE_DURATION"},
		{map[string]string{"LEASE_DURATION": "100ms"}, nil, "LEASE_DURATION"},
		{map[string]string{"MAX_LEASES_CAP": "0"}, nil, "MAX_LEASES_CAP"},
		{map[string]string{"MAX_LEASES_CAP": "ten"}, nil, "MAX_LEASES_CAP"},
		{map[string]string{"MAX_LEASES": "90"}, nil, "MAX_LEASES"},
		{map[string]string{"ENABLE_DYNAMIC_MAX_LEASES": "yes please"}, nil, "ENABLE_DYNAMIC_MAX_LEASES"},
		{map[string]string{"INITIAL_POSITION": "EARLIEST"}, nil, "INITIAL_POSITION"},
		{map[string]string{"INITIAL_POSITION": "AT_TIMESTAMP"}, nil, "INITIAL_TIMESTAMP"},
		{map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{nil, []string{"--worker-id", ""}, "WORKER_ID"},
		{nil, []string{"extra"}, "unexpected argument"},
		{nil, []string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tc := range bad {
		_, err := parseSettings(tc.args, env(tc.env), "host", io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v args %v: error %v, want one naming %s", tc.env, tc.args, err, tc.want)
		}
	}
}

func FuzzParseSettings(f *testing.F) {
	f.Add("10s", "80", "TRIM_HORIZON", "true")
	f.Add("abc", "-1", "AT_TIMESTAMP", "maybe")
	f.Fuzz(func(t *testing.T, lease, cap, pos, dyn string) {
		s, err := parseSettings(nil, func(k string) string {
			return map[string]string{"LEASE_DURATION": lease, "MAX_LEASES_CAP": cap, "INITIAL_POSITION": pos, "ENABLE_DYNAMIC_MAX_LEASES": dyn}[k]
		}, "host", io.Discard)
		if err == nil && (s.LeaseDuration < time.Second || s.MaxLeasesCap < 1) {
			t.Fatalf("accepted invalid settings: %+v", s)
		}
	})
}
