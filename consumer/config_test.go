package consumer

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	base := Config{AppName: "app", WorkerID: "w0"}
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"defaults are valid", func(*Config) {}, ""},
		{"missing app", func(c *Config) { c.AppName = "" }, "AppName"},
		{"bad table name", func(c *Config) { c.AppName = "my app" }, "AppName"},
		{"missing worker", func(c *Config) { c.WorkerID = "" }, "WorkerID"},
		{"reserved worker id", func(c *Config) { c.WorkerID = "app_coordinator" }, "WorkerID"},
		{"lease too short", func(c *Config) { c.LeaseDuration = 500 * time.Millisecond }, "LeaseDuration"},
		{"heartbeat too slow", func(c *Config) { c.HeartbeatInterval = 5 * time.Second }, "HeartbeatInterval"},
		{"poll too slow", func(c *Config) { c.PollInterval = 4 * time.Second }, "PollInterval"},
		{"sync faster than poll", func(c *Config) { c.ShardSyncInterval = 10 * time.Millisecond }, "ShardSyncInterval"},
		{"cap negative", func(c *Config) { c.MaxLeasesCap = -1 }, "MaxLeasesCap"},
		{"static above cap", func(c *Config) { c.MaxLeasesCap = 10; c.StaticMaxLeases = 11 }, "StaticMaxLeases"},
		{"unknown position", func(c *Config) { c.InitialPosition = "EARLIEST" }, "InitialPosition"},
		{"timestamp missing", func(c *Config) { c.InitialPosition = "AT_TIMESTAMP" }, "InitialTimestamp"},
		{"too many records", func(c *Config) { c.MaxRecordsPerGet = 10001 }, "MaxRecordsPerGet"},
		{"reads too fast", func(c *Config) { c.MinTimeBetweenReads = 100 * time.Millisecond }, "MinTimeBetweenReads"},
		{"unknown failure policy", func(c *Config) { c.OnProcessorFailure = "ignore" }, "OnProcessorFailure"},
		{"negative retries", func(c *Config) { c.ProcessorRetries = -1 }, "ProcessorRetries"},
		{"dead-letter without a dead letter", func(c *Config) { c.OnProcessorFailure = FailureDeadLetter }, "DeadLetter"},
		{"skip", func(c *Config) { c.OnProcessorFailure = FailureSkip }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			got, err := c.withDefaults()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if got.LeaseDuration != DefaultLeaseDuration || got.HeartbeatInterval != DefaultLeaseDuration/3 || got.MaxLeasesCap != 80 {
					t.Fatalf("defaults not applied: %+v", got)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("error = %v, want a ConfigError for %s", err, tc.field)
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q must match ErrInvalidConfig and name %s", err, tc.field)
			}
		})
	}
}

// DefaultConfig holds the fixed defaults only: starting from it is the same as starting
// from zero values, also when a field that others follow (LeaseDuration, MaxLeasesCap)
// is changed afterwards.
func TestDefaultConfigChangesNothing(t *testing.T) {
	for _, edit := range []func(*Config){
		func(*Config) {},
		func(c *Config) { c.LeaseDuration = 2 * time.Second },
		func(c *Config) { c.MaxLeasesCap = 5 },
	} {
		fromZero, fromDefaults := Config{AppName: "app", WorkerID: "w0"}, DefaultConfig()
		fromDefaults.AppName, fromDefaults.WorkerID = "app", "w0"
		edit(&fromZero)
		edit(&fromDefaults)
		a, errA := fromZero.withDefaults()
		b, errB := fromDefaults.withDefaults()
		if errA != nil || errB != nil {
			t.Fatalf("errors %v, %v", errA, errB)
		}
		a.Logger, b.Logger, a.Clock, b.Clock = nil, nil, nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Errorf("from zero values:\n%+v\nfrom DefaultConfig:\n%+v", a, b)
		}
	}
}
