package main

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
)

func TestScaleSteps(t *testing.T) {
	tests := []struct {
		from, to int
		want     []int
	}{
		{30, 300, []int{60, 120, 240, 300}},
		{300, 30, []int{150, 75, 38, 30}},
		{4, 20, []int{8, 16, 20}},
		{20, 5, []int{10, 5}},
		{1, 2, []int{2}},
		{3, 1, []int{2, 1}},
		{7, 7, nil},
	}
	for _, tt := range tests {
		got := scaleSteps(tt.from, tt.to)
		if !slices.Equal(got, tt.want) {
			t.Errorf("scaleSteps(%d, %d) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
		prev := tt.from
		for _, s := range got {
			if s > 2*prev || 2*s < prev {
				t.Errorf("scaleSteps(%d, %d): step %d -> %d exceeds 2x", tt.from, tt.to, prev, s)
			}
			prev = s
		}
	}
}

// openShards counts the stream's open shards by listing them, independently of the
// summary kdsctl reads.
func openShards(t *testing.T, name string) int {
	t.Helper()
	shards, err := kinesisstream.New(enginetest.Kinesis(t), name).ListShards(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range shards {
		if !s.Closed {
			n++
		}
	}
	return n
}

func TestStreamLifecycleAndScaling(t *testing.T) {
	name := enginetest.UniqueName(t, "scale")
	r := kdsctl(t, "create-stream", name, "--shards", "4")
	if r.code != 0 || !strings.Contains(r.stdout, "ACTIVE, 4 open shards") {
		t.Fatalf("create-stream: exit %d", r.code)
	}
	t.Cleanup(func() {
		// t.Context is done by now; the stream is usually gone already (the test deletes it).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = enginetest.Kinesis(t).DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name)})
	})
	// Again: idempotent, as `make up` relies on.
	if r := kdsctl(t, "create-stream", name, "--shards", "4"); r.code != 0 || !strings.Contains(r.stdout, "already exists") {
		t.Fatalf("second create-stream: exit %d", r.code)
	}

	for _, step := range []struct {
		to    int
		steps []int
	}{
		{20, []int{8, 16, 20}},
		{5, []int{10, 5}},
	} {
		r := kdsctlOK(t, "--stream", name, "scale-shards", "-o", "json", strconv.Itoa(step.to))
		var res streamResult
		mustJSON(t, r, &res)
		if !slices.Equal(res.Steps, step.steps) || res.OpenShards != step.to || res.Status != "ACTIVE" {
			t.Errorf("scale-shards %d: %+v, want steps %v", step.to, res, step.steps)
		}
		if !strings.Contains(r.stderr, "step 1/") {
			t.Errorf("scale-shards %d: no progress on stderr", step.to)
		}
		if got := openShards(t, name); got != step.to {
			t.Errorf("after scale-shards %d: %d open shards", step.to, got)
		}
	}
	if r := kdsctl(t, "--stream", name, "scale-shards", "5"); r.code != 0 || !strings.Contains(r.stdout, "already has 5 open shards") {
		t.Errorf("scale-shards to the current count: exit %d", r.code)
	}

	if r := kdsctl(t, "delete-stream", name); r.code != 0 || !strings.Contains(r.stdout, "gone") {
		t.Fatalf("delete-stream: exit %d", r.code)
	}
	_, err := enginetest.Kinesis(t).DescribeStreamSummary(t.Context(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	if err == nil {
		t.Error("stream still exists after delete-stream")
	}
	if r := kdsctl(t, "delete-stream", name); r.code != 0 || !strings.Contains(r.stdout, "does not exist") {
		t.Errorf("delete-stream of a missing stream: exit %d", r.code)
	}
	if r := kdsctl(t, "--stream", name, "scale-shards", "2"); r.code != 1 {
		t.Errorf("scale-shards of a missing stream: exit %d, want 1", r.code)
	}
}

// The example: one UpdateShardCount call cannot go beyond 2x or below 0.5x.
func TestScaleShardsTenfold(t *testing.T) {
	name := enginetest.UniqueName(t, "tenfold")
	enginetest.CreateStream(t, name, 30)
	for _, n := range []int{300, 30} {
		kdsctlOK(t, "--stream", name, "scale-shards", strconv.Itoa(n))
		if got := openShards(t, name); got != n {
			t.Errorf("after scale-shards %d: %d open shards", n, got)
		}
	}
}
