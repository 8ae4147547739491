package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

func createStream(ctx context.Context, e env, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("create-stream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	shards := fs.Int("shards", 30, "number of shards")
	// Accept the name before or after the flags.
	var name string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		name = e.stream
	}
	if *shards < 1 {
		return fmt.Errorf("%w: --shards %d: want at least 1", errUsage, *shards)
	}
	kc, err := e.kinesis(ctx)
	if err != nil {
		return err
	}
	_, err = kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(int32(*shards))})
	var inUse *types.ResourceInUseException
	switch {
	case errors.As(err, &inUse):
		fmt.Fprintf(e.out, "stream %s already exists\n", name)
	case err != nil:
		return fmt.Errorf("create stream %s: %w", name, err)
	default:
		fmt.Fprintf(e.out, "creating stream %s with %d shards\n", name, *shards)
	}
	return waitActive(ctx, kc, name, e.out)
}

// waitActive polls the stream summary until it is ACTIVE, printing each status change.
func waitActive(ctx context.Context, kc *kinesis.Client, name string, out io.Writer) error {
	last := types.StreamStatus("")
	for {
		d, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("describe stream %s: %w", name, err)
		}
		s := d.StreamDescriptionSummary
		if s.StreamStatus != last {
			last = s.StreamStatus
			fmt.Fprintf(out, "stream %s: %s, %d open shards\n", name, last, aws.ToInt32(s.OpenShardCount))
		}
		if last == types.StreamStatusActive {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
