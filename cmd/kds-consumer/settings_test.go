package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/consumer"
	"github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo"
)

func TestParseSettings(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	t.Run("defaults", func(t *testing.T) {
		s, err := parseSettings(nil, env(nil), "pod-7", io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if s.StreamName != "test-stream" || s.AppName != "kds-consumer-app" || s.WorkerID != "pod-7" ||
			s.DisableDynamicMaxLeases || s.MaxLeasesCap != 80 || s.LeaseDuration != 10*time.Second ||
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
		if s.StreamName != "orders" || s.MaxLeasesCap != 40 || !s.DisableDynamicMaxLeases || s.LeaseDuration != 6*time.Second ||
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
		// LEASE_DURATION 0 is the library's default.
		if err == nil && (s.LeaseDuration != 0 && s.LeaseDuration < time.Second || s.MaxLeasesCap < 1) {
			t.Fatalf("accepted invalid settings: %+v", s)
		}
	})
}

// A valid value, other than the default, for every setting.
var sampleValue = map[string]string{
	"AWS_REGION": "eu-west-3", "AWS_ENDPOINT_URL": "http://localhost:4566",
	"AWS_ENDPOINT_URL_KINESIS": "http://kinesis:4567", "AWS_ENDPOINT_URL_DYNAMODB": "http://dynamodb:8000",
	"STREAM_NAME": "orders", "APP_NAME": "orders-app", "WORKER_ID": "w-1", "ENABLE_DYNAMIC_MAX_LEASES": "false",
	"MAX_LEASES_CAP": "40", "MAX_LEASES": "7", "WORKER_COUNT": "3", "WORKER_COUNT_SOURCE": "kubernetes",
	"STATEFULSET_NAME": "workers", "POD_NAMESPACE": "streams", "LEASE_DURATION": "20s",
	"HEARTBEAT_INTERVAL": "2s", "POLL_INTERVAL": "500ms", "SHARD_SYNC_INTERVAL": "10s",
	"IDLE_TIME_BETWEEN_READS": "2s", "MAX_RECORDS_PER_GET": "500", "SHUTDOWN_TIMEOUT": "30s",
	"CLEANUP_INTERVAL": "2m", "FINISHED_LEASE_DELAY": "1m", "DEAD_WORKER_DELAY": "20m", "CHECKPOINT_INTERVAL": "2s",
	"INITIAL_POSITION": "LATEST", "HEALTH_ADDR": ":9090", "DASHBOARD_ADDR": "127.0.0.1:8091", "LOG_FORMAT": "json", "LOG_LEVEL": "debug",
	"RECORD_LOG_DIR": "/var/records", "CREATE_TABLES": "false", "DEMO_CHECKPOINT": "record", "DEMO_RECORD_DELAY": "250ms",
	"ON_PROCESSOR_FAILURE": "skip", "PROCESSOR_RETRIES": "3", "DEAD_LETTER_STREAM": "orders-dead-letters", "DEMO_FAIL_ON": "poison",
	"KCL_PROPERTIES": "testdata/app.properties", "MULTILANG_COMMAND": "node app.js", "MULTILANG_TIMEOUT": "30s",
	"LEASE_TABLE": "orders-kcl-app", "KCL_CHECK": "false", "KCL_CHECK_WINDOW": "30s", "WAIT_FOR_KCL_SHUTDOWN": "true",
	// Read only with AT_TIMESTAMP (the sample of INITIAL_POSITION is LATEST).
	"INITIAL_TIMESTAMP": "2026-01-02T15:04:05Z",
}

// What row env of the table bound to s holds.
func boundValue(t *testing.T, s *settings, env string) any {
	t.Helper()
	for _, r := range table(s) {
		if r.env == env {
			return reflect.ValueOf(r.target).Elem().Interface()
		}
	}
	t.Fatalf("no row for %s", env)
	return nil
}

// Every row parses a value of its own, from its variable or its flag, and the flag wins.
func TestEverySettingParsesAndItsFlagWins(t *testing.T) {
	base, err := parseSettings(nil, envOf(nil), "host", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defaults := defaultSettings("host")
	for _, r := range table(&defaults) {
		t.Run(r.env, func(t *testing.T) {
			v, ok := sampleValue[r.env]
			if !ok {
				t.Fatalf("no sample value for %s: add one", r.env)
			}
			env := map[string]string{r.env: v}
			if r.env == "INITIAL_TIMESTAMP" {
				env["INITIAL_POSITION"] = "AT_TIMESTAMP"
			}
			s, err := parseSettings(nil, envOf(env), "host", io.Discard)
			if err != nil {
				t.Fatalf("%s=%s refused: %v", r.env, v, err)
			}
			fromEnv := boundValue(t, &s, r.env)
			if def := boundValue(t, &base, r.env); reflect.DeepEqual(fromEnv, def) {
				t.Errorf("%s=%s left the default %v", r.env, v, def)
			}
			if r.flag == "" {
				return
			}
			// The flag, set to the default (or another value where the default is no
			// value), beats the variable.
			fv := r.def
			if r.env == "INITIAL_TIMESTAMP" {
				fv = "2020-01-01T00:00:00Z"
			}
			args := []string{"--" + r.flag + "=" + fv}
			s, err = parseSettings(args, envOf(env), "host", io.Discard)
			if err != nil {
				t.Fatalf("%v with %s=%s refused: %v", args, r.env, v, err)
			}
			if got := boundValue(t, &s, r.env); reflect.DeepEqual(got, fromEnv) {
				t.Errorf("%v with %s=%s: got the variable's %v", args, r.env, v, got)
			}
		})
	}
}

// Names are unique, and every consumer.Config field an operator can set has exactly one
// row; the others are listed here on purpose.
func TestSettingsTableCoversConfig(t *testing.T) {
	notSettable := map[string]bool{"LeaseScanInterval": true, "StartupSettle": true, "MinTimeBetweenReads": true,
		"WorkerCounter": true, "Hooks": true, "Logger": true, "Clock": true,
		"DeadLetter": true} // DEAD_LETTER_STREAM names the stream run connects
	var s settings
	envs, flags, fields := map[string]int{}, map[string]int{}, map[string]int{}
	for _, r := range table(&s) {
		envs[r.env]++
		if r.flag != "" {
			flags[r.flag]++
		}
		if f := configField(&s.Config, r.target); f != "" {
			fields[f]++
		}
		if r.env == "" || r.help == "" {
			t.Errorf("row %+v lacks a variable or help", r)
		}
		if err := s.invalid(r.target, "v", "why"); !strings.Contains(err.Error(), "invalid "+r.env+" ") {
			t.Errorf("an error about the field bound to %s reads %q", r.env, err)
		}
	}
	for name, n := range envs {
		if n > 1 {
			t.Errorf("variable %s has %d rows", name, n)
		}
	}
	for name, n := range flags {
		if n > 1 {
			t.Errorf("flag --%s has %d rows", name, n)
		}
	}
	for f := range reflect.TypeFor[consumer.Config]().Fields() {
		if n := fields[f.Name]; n != 1 && !notSettable[f.Name] {
			t.Errorf("consumer.Config.%s has %d rows, want 1 (or list it as not settable)", f.Name, n)
		} else if n != 0 && notSettable[f.Name] {
			t.Errorf("consumer.Config.%s has a row but is listed as not settable", f.Name)
		}
	}
}

// --help shows the library's defaults, and every variable.
func TestHelpShowsTheLibraryDefaults(t *testing.T) {
	var out strings.Builder
	if _, err := parseSettings([]string{"--help"}, envOf(nil), "host", &out); err != errHelp {
		t.Fatalf("err = %v, want errHelp", err)
	}
	d := consumer.DefaultConfig()
	for _, want := range []string{
		"[LEASE_DURATION] (default \"" + d.LeaseDuration.String() + "\")",
		"[SHUTDOWN_TIMEOUT] (default \"" + d.ShutdownTimeout.String() + "\")",
		"[SHARD_SYNC_INTERVAL] (default \"" + d.ShardSyncInterval.String() + "\")",
		"[MAX_LEASES_CAP] (default \"" + strconv.Itoa(d.MaxLeasesCap) + "\")",
		"[INITIAL_POSITION] (default \"" + d.InitialPosition + "\")",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
	for _, r := range table(&settings{}) {
		if r.flag != "" && !strings.Contains(out.String(), "["+r.env+"]") {
			t.Errorf("--help does not name %s", r.env)
		}
	}
}

// LEASE_DURATION=0 means the library's default, as for every other duration.
func TestZeroLeaseDurationIsTheDefault(t *testing.T) {
	s, err := parseSettings(nil, envOf(map[string]string{"LEASE_DURATION": "0s"}), "host", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.LeaseDuration != 0 || s.Config.Validate() != nil {
		t.Fatalf("LeaseDuration %s, Validate %v; want 0, which the library fills in", s.LeaseDuration, s.Config.Validate())
	}
}

// A library refusal reported while other settings are also wrong: every error is named.
func TestLibraryRefusalReportedWithOtherErrors(t *testing.T) {
	_, err := parseSettings(nil, envOf(map[string]string{"LOG_FORMAT": "xml", "MAX_LEASES_CAP": "5", "MAX_LEASES": "6"}), "host", io.Discard)
	for _, want := range []string{"invalid LOG_FORMAT ", `invalid MAX_LEASES (--max-leases) = "6"`, "MAX_LEASES_CAP (5)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// --help and a version request exit 0 (with the build on stdout); bad settings exit 2
// naming the setting on stderr.
func TestInvocationsThatRunNoWorker(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--help"}, 0, "", ""},
		{[]string{"--version"}, 0, "kds-consumer " + buildinfo.Read().String() + "\n", ""},
		{[]string{"version"}, 0, "kds-consumer " + buildinfo.Read().String() + "\n", ""},
		{[]string{"--lease-duration", "soon"}, 2, "", "kds-consumer: invalid LEASE_DURATION (--lease-duration)"},
		{[]string{"versions"}, 2, "", `kds-consumer: unexpected argument "versions"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseSettings(tc.args, envOf(nil), "host", io.Discard)
			if err == nil {
				t.Fatal("parseSettings accepted it")
			}
			var stdout, stderr strings.Builder
			if code := settingsExit(err, &stdout, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if stdout.String() != tc.stdout || !strings.HasPrefix(stderr.String(), tc.stderr) || tc.stderr == "" && stderr.Len() > 0 {
				t.Errorf("stdout %q, stderr %q; want stdout %q, stderr starting %q", stdout.String(), stderr.String(), tc.stdout, tc.stderr)
			}
		})
	}
}

// A KCL .properties file sets the settings its keys map onto, under variables and flags;
// keys without an equivalent are warned about, bad values refused with the file's line.
func TestPropertiesFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sample := "testdata/app.properties"
	atTimestamp := write("ts.properties", "initialPositionInStreamExtended = 1767225600\nkinesisEndpoint = kinesis.eu-west-1.amazonaws.com\n")
	badMillis := write("bad.properties", "streamName = s\nfailoverTimeMillis = ten seconds\n")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(settings) bool
		warns   []string
		wantErr string
	}{
		{name: "the KCL sample, by flag", args: []string{"--properties", sample},
			check: func(s settings) bool {
				return s.MultiLangCommand == "node sample_kcl_app.js" && s.StreamName == "kclnodejssample" &&
					s.AppName == "kclnodejssample" && s.InitialPosition == "TRIM_HORIZON" && s.Region == "eu-west-1" &&
					s.LeaseDuration == 15*time.Second && s.MaxLeasesCap == 12 && s.MaxRecordsPerGet == 2500 &&
					s.IdleTimeBetweenReads == 500*time.Millisecond && s.ShardSyncInterval == time.Minute && s.MultiLangTimeout == 90*time.Second &&
					s.LeaseTable == "kclnodejssample-leases"
			},
			warns: []string{"line 5: AWSCredentialsProvider ignored: credentials come from", "line 6: processingLanguage ignored: no equivalent",
				"line 15: somethingElse ignored: unknown key"}},
		{name: "variables and flags win over the file", args: []string{"-properties=" + sample, "--max-records-per-get", "100"},
			env: map[string]string{"STREAM_NAME": "orders"},
			check: func(s settings) bool {
				return s.StreamName == "orders" && s.MaxRecordsPerGet == 100 && s.AppName == "kclnodejssample"
			}},
		{name: "by variable; AT_TIMESTAMP in Unix seconds, an endpoint without a scheme", env: map[string]string{"KCL_PROPERTIES": atTimestamp},
			check: func(s settings) bool {
				return s.InitialPosition == "AT_TIMESTAMP" && s.InitialTimestamp.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) &&
					s.KinesisEndpoint == "https://kinesis.eu-west-1.amazonaws.com" && s.MultiLangCommand == ""
			}},
		{name: "a bad value names the file's line", env: map[string]string{"KCL_PROPERTIES": badMillis},
			wantErr: `invalid KCL_PROPERTIES (--properties) = "` + badMillis + `": line 2: failoverTimeMillis = "ten seconds": want a whole number of milliseconds`},
		{name: "a missing file", args: []string{"--properties", filepath.Join(dir, "none")}, wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseSettings(tt.args, envOf(tt.env), "host", io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(s) {
				t.Errorf("unexpected settings: %+v", s)
			}
			for _, w := range tt.warns {
				if !slices.ContainsFunc(s.Warnings, func(got string) bool { return strings.Contains(got, w) }) {
					t.Errorf("warnings %q lack %q", s.Warnings, w)
				}
			}
		})
	}
}

// The README's settings section names every variable the worker reads, and every
// variable it names is one (the AWS SDK's own variables aside).
func TestTheReadmeNamesEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "## Worker configuration")
	if start < 0 {
		t.Fatal("README.md has no \"## Worker configuration\" section")
	}
	section = section[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var s settings
	rows := map[string]bool{}
	for _, r := range table(&s) {
		rows[r.env] = true
		if !strings.Contains(section, "`"+r.env+"`") {
			t.Errorf("README.md's settings section does not name `%s`", r.env)
		}
	}
	sdk := map[string]bool{"AWS_ACCESS_KEY_ID": true, "AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true, "AWS_PROFILE": true}
	for _, m := range regexp.MustCompile("`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`").FindAllStringSubmatch(section, -1) {
		if name := m[1]; !rows[name] && !sdk[name] && !strings.HasPrefix(name, "TRIM_") && name != "AT_TIMESTAMP" {
			t.Errorf("README.md names `%s`, which the worker does not read", name)
		}
	}
}
