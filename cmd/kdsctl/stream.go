package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// streamResult is the JSON output of the stream commands.
type streamResult struct {
	Stream     string `json:"stream"`
	Status     string `json:"status"`
	OpenShards int    `json:"open_shards"`
	// From and Steps are set by scale-shards.
	From  int   `json:"from,omitempty"`
	Steps []int `json:"steps,omitempty"`
}

func (r streamResult) human(w io.Writer) {
	fmt.Fprintf(w, "stream %s: %s, %d open shards\n", r.Stream, r.Status, r.OpenShards)
}

// streamName takes the stream name from an optional positional argument, else --stream.
func (e *env) streamName(cmd string, pos []string) (string, error) {
	if err := wantArgs(cmd, pos, 0, 1); err != nil {
		return "", err
	}
	if len(pos) == 1 {
		return pos[0], nil
	}
	if e.stream == "" {
		return "", usageError("%s: no stream name (argument, --stream or STREAM_NAME)", cmd)
	}
	return e.stream, nil
}

func createStream(ctx context.Context, e *env, args []string) error {
	fs := e.flags("create-stream")
	shards := fs.Int("shards", 30, "number of shards")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	name, err := e.streamName("create-stream", pos)
	if err != nil {
		return err
	}
	if *shards < 1 {
		return usageError("create-stream: --shards %d: want at least 1", *shards)
	}
	kc, err := e.kinesis(ctx)
	if err != nil {
		return err
	}
	p := e.progress()
	_, err = kc.CreateStream(ctx, &kinesis.CreateStreamInput{
		StreamName:        aws.String(name),
		ShardCount:        aws.Int32(int32(*shards)),
		StreamModeDetails: &types.StreamModeDetails{StreamMode: types.StreamModeProvisioned},
	})
	var inUse *types.ResourceInUseException
	switch {
	case errors.As(err, &inUse):
		// Idempotent on purpose: `make up` runs it on every start.
		fmt.Fprintf(p, "stream %s already exists\n", name)
	case err != nil:
		return fmt.Errorf("create stream %s: %w", name, err)
	default:
		fmt.Fprintf(p, "creating stream %s with %d shards\n", name, *shards)
	}
	s, err := waitActive(ctx, kc, name, p)
	if err != nil {
		return err
	}
	if open := int(aws.ToInt32(s.OpenShardCount)); open != *shards {
		fmt.Fprintf(e.stderr, "note: stream %s has %d open shards, not %d; use scale-shards to change it\n", name, open, *shards)
	}
	return e.emit(summaryResult(name, s), func(io.Writer) {})
}

func summaryResult(name string, s *types.StreamDescriptionSummary) streamResult {
	return streamResult{Stream: name, Status: string(s.StreamStatus), OpenShards: int(aws.ToInt32(s.OpenShardCount))}
}

func deleteStream(ctx context.Context, e *env, args []string) error {
	fs := e.flags("delete-stream")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	name, err := e.streamName("delete-stream", pos)
	if err != nil {
		return err
	}
	kc, err := e.kinesis(ctx)
	if err != nil {
		return err
	}
	p := e.progress()
	_, err = kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name), EnforceConsumerDeletion: aws.Bool(true)})
	var nf *types.ResourceNotFoundException
	res := streamResult{Stream: name, Status: "DELETED"}
	switch {
	case errors.As(err, &nf):
		// Deleting is idempotent: the stream is gone either way.
		res.Status = "NOT_FOUND"
	case err != nil:
		return fmt.Errorf("delete stream %s: %w", name, err)
	default:
		fmt.Fprintf(p, "deleting stream %s\n", name)
		if err := waitGone(ctx, kc, name, p); err != nil {
			return err
		}
	}
	return e.emit(res, func(w io.Writer) {
		if res.Status == "NOT_FOUND" {
			fmt.Fprintf(w, "stream %s does not exist\n", name)
		}
	})
}

func scaleShards(ctx context.Context, e *env, args []string) error {
	fs := e.flags("scale-shards")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("scale-shards", pos, 1, 1); err != nil {
		return err
	}
	target, err := strconv.Atoi(pos[0])
	if err != nil || target < 1 {
		return usageError("scale-shards: %q: want a shard count of at least 1", pos[0])
	}
	kc, err := e.kinesis(ctx)
	if err != nil {
		return err
	}
	p := e.progress()
	// A stream that is still UPDATING refuses UpdateShardCount.
	s, err := waitActive(ctx, kc, e.stream, io.Discard)
	if err != nil {
		return err
	}
	from := int(aws.ToInt32(s.OpenShardCount))
	steps := scaleSteps(from, target)
	switch len(steps) {
	case 0:
		fmt.Fprintf(p, "stream %s already has %d open shards\n", e.stream, from)
	case 1:
		fmt.Fprintf(p, "scaling stream %s: %d -> %d shards\n", e.stream, from, target)
	default:
		fmt.Fprintf(p, "scaling stream %s: %d -> %d shards in %d steps (at most 2x or 0.5x per call): %v\n",
			e.stream, from, target, len(steps), steps)
	}
	cur := from
	for i, n := range steps {
		start := time.Now()
		fmt.Fprintf(p, "step %d/%d: %d -> %d shards\n", i+1, len(steps), cur, n)
		if s, err = updateShardCount(ctx, kc, e.stream, n, p); err != nil {
			return err
		}
		cur = int(aws.ToInt32(s.OpenShardCount))
		fmt.Fprintf(p, "step %d/%d: done in %s, %d open shards\n", i+1, len(steps), time.Since(start).Round(10*time.Millisecond), cur)
		if cur != n {
			return fmt.Errorf("scale stream %s: asked for %d shards, the stream has %d open", e.stream, n, cur)
		}
	}
	res := summaryResult(e.stream, s)
	res.From, res.Steps = from, steps
	return e.emit(res, res.human)
}

// scaleSteps returns the shard counts to pass to UpdateShardCount, one call each, to get
// from the current count to target: Kinesis refuses more than double or less than half the
// current count in one call.
func scaleSteps(current, target int) []int {
	var steps []int
	for current != target {
		if target > current {
			current = min(target, 2*current)
		} else {
			current = max(target, (current+1)/2)
		}
		steps = append(steps, current)
	}
	return steps
}

// updateShardCount makes one UpdateShardCount call and waits until the stream is ACTIVE.
func updateShardCount(ctx context.Context, kc *kinesis.Client, name string, n int, p io.Writer) (*types.StreamDescriptionSummary, error) {
	for attempt := 1; ; attempt++ {
		_, err := kc.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{
			StreamName:       aws.String(name),
			TargetShardCount: aws.Int32(int32(n)),
			ScalingType:      types.ScalingTypeUniformScaling,
		})
		var inUse *types.ResourceInUseException
		if errors.As(err, &inUse) && attempt < 5 {
			// Someone else's update is in progress: let it finish, then ask again.
			if _, err := waitActive(ctx, kc, name, p); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update shard count of stream %s to %d: %w", name, n, err)
		}
		return waitActive(ctx, kc, name, p)
	}
}

// waitActive polls the stream summary until it is ACTIVE, printing each status change and,
// while it waits, how long it has waited.
func waitActive(ctx context.Context, kc *kinesis.Client, name string, p io.Writer) (*types.StreamDescriptionSummary, error) {
	var s *types.StreamDescriptionSummary
	err := poll(ctx, p, func() (bool, string, error) {
		d, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			return false, "", fmt.Errorf("describe stream %s: %w", name, err)
		}
		s = d.StreamDescriptionSummary
		state := fmt.Sprintf("stream %s: %s, %d open shards", name, s.StreamStatus, aws.ToInt32(s.OpenShardCount))
		return s.StreamStatus == types.StreamStatusActive, state, nil
	})
	return s, err
}

// waitGone polls until the stream no longer exists.
func waitGone(ctx context.Context, kc *kinesis.Client, name string, p io.Writer) error {
	return poll(ctx, p, func() (bool, string, error) {
		d, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) {
			return true, "stream " + name + ": gone", nil
		}
		if err != nil {
			return false, "", fmt.Errorf("describe stream %s: %w", name, err)
		}
		return false, fmt.Sprintf("stream %s: %s", name, d.StreamDescriptionSummary.StreamStatus), nil
	})
}

// poll calls check until it reports done, with a growing delay (fast for the local engine,
// gentle on the AWS API limits). It prints each new state, and a reminder every 10 s.
func poll(ctx context.Context, p io.Writer, check func() (done bool, state string, err error)) error {
	start, last, lastPrint := time.Now(), "", time.Now()
	delay := 50 * time.Millisecond
	for {
		done, state, err := check()
		if err != nil {
			return err
		}
		switch {
		case state != last:
			fmt.Fprintln(p, state)
			last, lastPrint = state, time.Now()
		case time.Since(lastPrint) >= 10*time.Second:
			fmt.Fprintf(p, "%s (waiting %s)\n", state, time.Since(start).Round(time.Second))
			lastPrint = time.Now()
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}
