package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/kds-lease-manager/kds-lease-manager/internal/awsenv"
	"github.com/kds-lease-manager/kds-lease-manager/internal/buildinfo"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
)

// The tests run kdsctl against the real local engines, shared by the test binary.
func TestMain(m *testing.M) { enginetest.Main(m) }

// result is one kdsctl invocation's outcome.
type result struct {
	code           int
	stdout, stderr string
}

// kdsctl runs a command line against the test engines with static test credentials and
// returns the exit status it would have.
func kdsctl(t *testing.T, args ...string) result {
	t.Helper()
	return kdsctlCtx(t.Context(), t, args...)
}

// kdsctlOK is kdsctl that fails the test unless the command exits with status 0.
func kdsctlOK(t *testing.T, args ...string) result {
	t.Helper()
	r := kdsctl(t, args...)
	if r.code != 0 {
		t.Fatalf("kdsctl %s: exit %d", strings.Join(args, " "), r.code)
	}
	return r
}

func kdsctlCtx(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	cfg := enginetest.AWSConfig(t)
	e := newEnv(&out, &errb, awsenv.Static(cfg))
	full := append([]string{"--endpoint", enginetest.Endpoint(), "--region", enginetest.Region}, args...)
	code := exitCode(e.run(ctx, full), &errb)
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("kdsctl %s: exit %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// mustJSON decodes a command's JSON output into v.
func mustJSON(t *testing.T, r result, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // in stdout (help) or stderr (errors)
	}{
		{"no command", nil, 2, "missing command"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown global flag", []string{"--bogus", "leases"}, 2, "bogus"},
		{"unknown command flag", []string{"leases", "--bogus"}, 2, "bogus"},
		{"bad output format", []string{"-o", "yaml", "leases"}, 2, "want table or json"},
		{"bad output format after command", []string{"leases", "-o", "yaml"}, 2, "want table or json"},
		{"extra argument", []string{"metadata", "extra"}, 2, "unexpected arguments: extra"},
		{"create-stream no shards", []string{"create-stream", "s", "--shards", "0"}, 2, "at least 1"},
		{"scale-shards missing count", []string{"scale-shards"}, 2, "missing arguments"},
		{"scale-shards not a number", []string{"scale-shards", "many"}, 2, `"many"`},
		{"produce without end", []string{"produce", "--rate", "10"}, 2, "--duration or --count"},
		{"produce no keys", []string{"produce", "--count", "1", "--keys", "0"}, 2, "--keys 0"},
		{"expect missing max leases", []string{"expect", "--shards", "4"}, 2, "required"},
		{"expect negative unowned", []string{"expect", "--shards", "4", "--max-leases", "2", "--unowned", "-1"}, 2, "negative"},
		{"monitor too fast", []string{"monitor", "--interval", "1ms"}, 2, "at least 500ms"},
		{"dashboard too fast", []string{"dashboard", "--interval", "100ms"}, 2, "at least 500ms"},
		{"dashboard argument", []string{"dashboard", "now"}, 2, "unexpected arguments"},
		{"help for unknown command", []string{"help", "nope"}, 2, `unknown command "nope"`},
		{"help", []string{"help"}, 0, "scale-shards"},
		{"--help", []string{"--help"}, 0, "exit status: 0 success, 1 failure, 2 usage error"},
		{"command --help", []string{"produce", "--help"}, 0, "-keys"},
		{"help command", []string{"help", "expect"}, 0, "-max-leases"},
		{"version", []string{"version"}, 0, "kdsctl " + buildinfo.Read().String()},
		{"version takes no argument", []string{"version", "now"}, 2, "unexpected arguments: now"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := kdsctl(t, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d", r.code, tt.wantCode)
			}
			if !strings.Contains(r.stdout+r.stderr, tt.wantOut) {
				t.Errorf("output lacks %q", tt.wantOut)
			}
			if tt.wantCode == 2 && !strings.Contains(r.stderr, "kdsctl help") {
				t.Errorf("usage error without a pointer to help")
			}
		})
	}
}

// The application and stream default to the worker's variables; the region and the
// endpoints are the SDK's own (per service, as the worker resolves them), --region and
// --endpoint override them.
func TestRunUsesEnvironmentDefaults(t *testing.T) {
	t.Setenv("APP_NAME", "env-app")
	t.Setenv("STREAM_NAME", "env-stream")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:2")
	for _, tc := range []struct {
		flags                     []string
		region, kinesis, dynamodb string
	}{
		{nil, "eu-west-1", "http://127.0.0.1:2", "http://127.0.0.1:1"},
		{[]string{"--region", "eu-north-1", "--endpoint", "http://127.0.0.1:3"}, "eu-north-1", "http://127.0.0.1:3", "http://127.0.0.1:3"},
	} {
		e := newEnv(nil, nil, nil)
		if e.app != "env-app" || e.stream != "env-stream" {
			t.Errorf("defaults %+v do not follow the environment", e)
		}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		e.register(fs)
		if err := fs.Parse(tc.flags); err != nil {
			t.Fatal(err)
		}
		kin, err := e.kinesis(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ddb, err := e.dynamo(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if o := kin.Options(); o.Region != tc.region || aws.ToString(o.BaseEndpoint) != tc.kinesis {
			t.Errorf("%v: Kinesis at %s in %s, want %s in %s", tc.flags, aws.ToString(o.BaseEndpoint), o.Region, tc.kinesis, tc.region)
		}
		if o := ddb.Options(); o.Region != tc.region || aws.ToString(o.BaseEndpoint) != tc.dynamodb {
			t.Errorf("%v: DynamoDB at %s in %s, want %s in %s", tc.flags, aws.ToString(o.BaseEndpoint), o.Region, tc.dynamodb, tc.region)
		}
	}
	t.Setenv("LEASE_TABLE", "env-kcl-app")
	e := newEnv(nil, nil, nil)
	if e.leaseTable != "env-kcl-app" {
		t.Errorf("lease table %q does not follow LEASE_TABLE", e.leaseTable)
	}
	st, err := e.store(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaseTable() != "env-kcl-app" || st.MetaTable() != "env-app_meta" {
		t.Errorf("store tables %s and %s, want env-kcl-app and env-app_meta", st.LeaseTable(), st.MetaTable())
	}
}

// Without credentials kdsctl says how to provide them, as the worker does, instead of
// the SDK's message about the EC2 instance metadata service.
func TestNoCredentialsSaysWhatToSet(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	var out, errb bytes.Buffer
	code := runMain(t.Context(), []string{"--region", "us-east-1", "--endpoint", "http://127.0.0.1:1", "leases"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "no usable AWS credentials: set AWS_ACCESS_KEY_ID") {
		t.Errorf("exit %d, stderr:\n%s", code, errb.String())
	}
}

// The exported entry point maps --help to success like the command line does.
func TestRunHelp(t *testing.T) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := run(ctx, []string{"verify", "--help"}, &out, &errb); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(out.String(), "-records-dir") {
		t.Errorf("help output:\n%s", out.String())
	}
	if code := runMain(ctx, []string{"nope"}, &out, &errb); code != 2 {
		t.Errorf("runMain exit %d, want 2", code)
	}
}
