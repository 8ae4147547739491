package localengines_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dyntypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

func startEngines(t *testing.T) *localengines.Engines {
	t.Helper()
	start := time.Now()
	e, err := localengines.Start(t.Context(), localengines.Options{})
	if err != nil {
		t.Fatalf("start engines: %v", err)
	}
	t.Logf("engines up in %v at %s", time.Since(start), e.Endpoint())
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

func sdkConfig(endpoint string) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(endpoint),
	}
}

func TestEnginesThroughEdge(t *testing.T) {
	e := startEngines(t)
	ctx := t.Context()
	cfg := sdkConfig(e.Endpoint())

	kin := kinesis.NewFromConfig(cfg)
	if _, err := kin.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String("edge-test"), ShardCount: aws.Int32(2)}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	streams, err := kin.ListStreams(ctx, &kinesis.ListStreamsInput{})
	if err != nil {
		t.Fatalf("ListStreams: %v", err)
	}
	if len(streams.StreamNames) != 1 || streams.StreamNames[0] != "edge-test" {
		t.Errorf("streams = %v", streams.StreamNames)
	}

	dyn := dynamodb.NewFromConfig(cfg)
	if _, err := dyn.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String("edge-test"),
		BillingMode:          dyntypes.BillingModePayPerRequest,
		AttributeDefinitions: []dyntypes.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: dyntypes.ScalarAttributeTypeS}},
		KeySchema:            []dyntypes.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: dyntypes.KeyTypeHash}},
	}); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	tables, err := dyn.ListTables(ctx, &dynamodb.ListTablesInput{})
	if err != nil {
		t.Fatalf("ListTables: %v", err)
	}
	if len(tables.TableNames) != 1 || tables.TableNames[0] != "edge-test" {
		t.Errorf("tables = %v", tables.TableNames)
	}

	stats := e.Edge().Stats()
	for _, c := range []localengines.Call{
		{Service: localengines.Kinesis, Operation: "CreateStream"},
		{Service: localengines.Kinesis, Operation: "ListStreams"},
		{Service: localengines.DynamoDB, Operation: "CreateTable"},
		{Service: localengines.DynamoDB, Operation: "ListTables"},
	} {
		if stats.Calls[c] != 1 {
			t.Errorf("stats[%v] = %d, want 1 (all: %v)", c, stats.Calls[c], stats.Calls)
		}
	}

	t.Run("aws cli", func(t *testing.T) {
		awsCLI, err := exec.LookPath("aws")
		if err != nil {
			t.Skip("aws CLI not on PATH; the SDK checks above cover the edge")
		}
		for _, args := range [][]string{{"kinesis", "list-streams"}, {"dynamodb", "list-tables"}} {
			cmd := exec.CommandContext(ctx, awsCLI, append([]string{"--endpoint-url", e.Endpoint(), "--output", "json"}, args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AWS_ACCESS_KEY_ID=test",
				"AWS_SECRET_ACCESS_KEY=test", "AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER="}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("aws %v: %v\n%s", args, err, out)
			}
			if !strings.Contains(string(out), "edge-test") {
				t.Errorf("aws %v output lacks edge-test:\n%s", args, out)
			}
		}
	})

	t.Run("close stops processes", func(t *testing.T) {
		kinAddr := strings.TrimPrefix(e.KinesisURL(), "http://")
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if err := e.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if c, err := net.DialTimeout("tcp", kinAddr, time.Second); err == nil {
			c.Close()
			t.Errorf("kinesis-local still answers at %s after Close", kinAddr)
		}
		select {
		case <-e.Done():
		default:
			t.Error("Done not closed after Close")
		}
	})
}

func TestStartEdgePortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = localengines.Start(t.Context(), localengines.Options{EdgeAddr: l.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "edge cannot listen") {
		t.Fatalf("err = %v, want a port-in-use error", err)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("err does not wrap EADDRINUSE: %v", err)
	}
}

// fakeInstall writes stand-in engines that pass the install check and run script.
func fakeInstall(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	for _, m := range []struct{ name, entry, version string }{
		{"kinesis-local", "main.js", localengines.KinesisLocalVersion},
		{"dynalite", "cli.js", localengines.DynaliteVersion},
	} {
		mod := filepath.Join(dir, "node_modules", m.name)
		if err := os.MkdirAll(mod, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mod, "package.json"), []byte(`{"version":"`+m.version+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mod, m.entry), []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStartEngineExitsEarly(t *testing.T) {
	dir := fakeInstall(t, `console.error("boom: cannot do the thing"); process.exit(3);`)
	_, err := localengines.Start(t.Context(), localengines.Options{Dir: dir})
	if err == nil {
		t.Fatal("Start succeeded with a crashing engine")
	}
	for _, want := range []string{"kinesis-local exited (exit status 3)", "boom: cannot do the thing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err lacks %q: %v", want, err)
		}
	}
}

func TestStartEngineNeverAnswers(t *testing.T) {
	dir := fakeInstall(t, `console.log("sleeping"); setInterval(() => {}, 1000);`)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := localengines.Start(ctx, localengines.Options{Dir: dir, StartTimeout: 500 * time.Millisecond})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "sleeping") {
		t.Fatalf("err = %v, want a timeout with the log tail", err)
	}
}

func TestInstallIdempotent(t *testing.T) {
	dir := localengines.DefaultDir()
	start := time.Now()
	if err := localengines.Install(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("first Install took %v", time.Since(start))
	start = time.Now()
	if err := localengines.Install(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("second Install took %v; it should notice the engines are installed", d)
	}
}

func TestDefaultDirHonorsEnv(t *testing.T) {
	t.Setenv("KDS_CACHE_DIR", "/somewhere/else")
	if got := localengines.DefaultDir(); got != "/somewhere/else" {
		t.Errorf("DefaultDir = %q", got)
	}
}

// TestInstallFresh installs into an empty directory from two goroutines at once. It needs
// the npm registry, so it runs only when KDS_TEST_NPM_INSTALL=1.
func TestInstallFresh(t *testing.T) {
	if os.Getenv("KDS_TEST_NPM_INSTALL") != "1" {
		t.Skip("set KDS_TEST_NPM_INSTALL=1 to test a fresh npm install")
	}
	dir := t.TempDir()
	start := time.Now()
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- localengines.Install(t.Context(), dir) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("fresh install took %v", time.Since(start))
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil || !strings.Contains(string(b), `"kinesis-local": "`+localengines.KinesisLocalVersion+`"`) {
		t.Errorf("package.json does not pin the versions: %v\n%s", err, b)
	}
}
