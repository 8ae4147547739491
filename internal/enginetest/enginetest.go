// Package enginetest gives integration tests a Kinesis and DynamoDB endpoint: local
// engines started once per test binary (see Main), or an existing endpoint named by
// $KDS_TEST_ENDPOINT (e.g. one started by `make up`).
package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// EndpointEnv names an existing endpoint to test against instead of starting engines.
// Main also sets it for the engines it starts, which is how Endpoint finds them (and how
// subprocesses of the tests would).
const EndpointEnv = "KDS_TEST_ENDPOINT"

// Region is the region the test clients use.
const Region = "us-east-1"

// Main runs the tests of a package against shared engines. Use it as
//
//	func TestMain(m *testing.M) { enginetest.Main(m) }
//
// If the engines cannot start, every test binary using it fails: an integration suite
// that silently skips proves nothing.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit: it starts (or reuses) the engines, runs m (a *testing.M,
// or another helper's runner around it) and returns its exit code.
func Run(m interface{ Run() int }) int {
	if ep := os.Getenv(EndpointEnv); ep != "" {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Engine chatter would drown the test output; Start's errors carry the log tails.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := localengines.Start(ctx, localengines.Options{Logger: logger})
	if err != nil {
		fmt.Fprintf(os.Stderr, "enginetest: cannot start local Kinesis/DynamoDB engines: %v\n"+
			"(set %s to use an already running endpoint, e.g. from `make up`)\n", err, EndpointEnv)
		return 1
	}
	defer func() {
		if err := eng.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "enginetest: stop engines: %v\n", err)
		}
	}()
	if err := os.Setenv(EndpointEnv, eng.Endpoint()); err != nil {
		fmt.Fprintf(os.Stderr, "enginetest: %v\n", err)
		return 1
	}
	defer os.Unsetenv(EndpointEnv)
	code := m.Run()
	if err := eng.Err(); err != nil && code == 0 {
		// An engine crash mid-run can make later tests pass vacuously; fail the binary.
		fmt.Fprintf(os.Stderr, "enginetest: an engine died during the tests: %v\n", err)
		code = 1
	}
	return code
}

// Endpoint returns the edge URL. It panics when neither Main nor $KDS_TEST_ENDPOINT
// provided one, since every caller is a test that cannot run without it.
func Endpoint() string {
	ep := os.Getenv(EndpointEnv)
	if ep == "" {
		panic("enginetest: no endpoint: call enginetest.Main from TestMain or set " + EndpointEnv)
	}
	return ep
}

// AWSConfig returns an SDK config for the test endpoint with static test credentials.
// It ignores the environment's AWS settings so tests never reach real AWS.
func AWSConfig(t testing.TB) aws.Config {
	t.Helper()
	ep := os.Getenv(EndpointEnv)
	if ep == "" {
		t.Fatalf("enginetest: no endpoint: call enginetest.Main from TestMain or set %s", EndpointEnv)
	}
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(ep),
		// A few quick retries ride out a busy engine without hiding real errors for long.
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 4
				o.MaxBackoff = 200 * time.Millisecond
			})
		},
	}
}

// Kinesis returns a Kinesis client for the test endpoint.
func Kinesis(t testing.TB) *kinesis.Client {
	t.Helper()
	return kinesis.NewFromConfig(AWSConfig(t))
}

// DynamoDB returns a DynamoDB client for the test endpoint.
func DynamoDB(t testing.TB) *dynamodb.Client {
	t.Helper()
	return dynamodb.NewFromConfig(AWSConfig(t))
}

// Stats fetches the edge's request counts. Engines are shared by the whole test binary,
// so compare two snapshots (Stats.Sub) around the code being measured, and only where no
// parallel test talks to the same service.
func Stats(t testing.TB) localengines.Stats {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, Endpoint()+localengines.StatsPath, nil)
	if err != nil {
		t.Fatalf("enginetest: stats request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("enginetest: fetch edge stats: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enginetest: fetch edge stats: %s (is %s a kds edge?)", resp.Status, Endpoint())
	}
	var s localengines.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("enginetest: decode edge stats: %v", err)
	}
	return s
}

var unsafeNameChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// UniqueName returns a stream/table/application name for this test alone, since the
// engines are shared by every test in the binary. It is valid for both Kinesis streams
// and DynamoDB tables (at most 128 characters of [a-zA-Z0-9_.-]).
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	suffix := fmt.Sprintf("-%08x", rand.Uint32())
	name := unsafeNameChars.ReplaceAllString(prefix+"-"+t.Name(), "-")
	name = strings.Trim(name, "-")
	if limit := 128 - len(suffix); len(name) > limit {
		name = name[:limit]
	}
	return name + suffix
}

// CreateStream creates a provisioned stream with the given number of shards, waits until
// it is ACTIVE and deletes it when the test ends.
func CreateStream(t testing.TB, name string, shards int) {
	t.Helper()
	client := Kinesis(t)
	ctx := t.Context()
	_, err := client.CreateStream(ctx, &kinesis.CreateStreamInput{
		StreamName:        aws.String(name),
		ShardCount:        aws.Int32(int32(shards)),
		StreamModeDetails: &types.StreamModeDetails{StreamMode: types.StreamModeProvisioned},
	})
	if err != nil {
		t.Fatalf("create stream %q: %v", name, err)
	}
	t.Cleanup(func() {
		// t.Context is already done when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := client.DeleteStream(ctx, &kinesis.DeleteStreamInput{
			StreamName:              aws.String(name),
			EnforceConsumerDeletion: aws.Bool(true),
		})
		var nf *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &nf) {
			t.Errorf("delete stream %q: %v", name, err)
		}
	})
	waiter := kinesis.NewStreamExistsWaiter(client, func(o *kinesis.StreamExistsWaiterOptions) {
		o.MinDelay = 20 * time.Millisecond // the default 10 s dwarfs the engine's instant create
		o.MaxDelay = 500 * time.Millisecond
	})
	if err := waiter.Wait(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(name)}, 30*time.Second); err != nil {
		t.Fatalf("wait for stream %q to become ACTIVE: %v", name, err)
	}
}
