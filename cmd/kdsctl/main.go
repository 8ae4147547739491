// Command kdsctl is the operator tool for a kds-lease-manager deployment: it creates
// streams and shows the metadata and lease tables.
//
//	kdsctl [flags] create-stream NAME --shards N
//	kdsctl [flags] metadata
//	kdsctl [flags] leases
//	kdsctl [flags] monitor [--interval 10s]
//
// Flags default to the worker's environment: AWS_ENDPOINT_URL, AWS_REGION, APP_NAME,
// STREAM_NAME. Exit status: 0 success, 1 failure, 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
)

const usage = `usage: kdsctl [--endpoint URL] [--region R] [--app APP] [--stream NAME] COMMAND

commands:
  create-stream NAME --shards N   create a stream and wait until it is ACTIVE
  metadata                        the metadata table: workers and the coordinator item
  leases                          one row per shard lease, and leases per worker
  monitor [--interval 10s]        refresh workers, coordinator and leases until Ctrl+C
`

// errUsage marks errors that exit with status 2.
var errUsage = errors.New("usage")

type env struct {
	endpoint, region, app, stream string
	out                           io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "kdsctl:", err)
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "kdsctl:", err)
		os.Exit(1)
	}
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := env{out: stdout}
	fs := flag.NewFlagSet("kdsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.StringVar(&e.endpoint, "endpoint", getenv("AWS_ENDPOINT_URL", ""), "AWS endpoint [AWS_ENDPOINT_URL]")
	fs.StringVar(&e.region, "region", getenv("AWS_REGION", "us-east-1"), "AWS region [AWS_REGION]")
	fs.StringVar(&e.app, "app", getenv("APP_NAME", "kds-consumer-app"), "application name [APP_NAME]")
	fs.StringVar(&e.stream, "stream", getenv("STREAM_NAME", "test-stream"), "stream name [STREAM_NAME]")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: missing command", errUsage)
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "create-stream":
		return createStream(ctx, e, rest, stderr)
	case "metadata":
		return metadata(ctx, e)
	case "leases":
		return leases(ctx, e)
	case "monitor":
		return monitor(ctx, e, rest, stderr)
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func (e env) awsConfig(ctx context.Context) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(e.region))
	if err != nil {
		return cfg, fmt.Errorf("load AWS configuration: %w", err)
	}
	return cfg, nil
}

func (e env) kinesis(ctx context.Context) (*kinesis.Client, error) {
	cfg, err := e.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
	}), nil
}

func (e env) store(ctx context.Context) (*dynamostore.Store, error) {
	cfg, err := e.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	client := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if e.endpoint != "" {
			o.BaseEndpoint = aws.String(e.endpoint)
		}
	})
	return dynamostore.New(client, e.app)
}
