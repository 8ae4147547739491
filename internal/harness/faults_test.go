package harness

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/dynamostore"
	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

const testAttempts = 3

// clientsVia returns SDK clients that talk to the engines through e.
func clientsVia(t *testing.T, e *WorkerEdge) (*kinesis.Client, *dynamodb.Client) {
	t.Helper()
	cfg := enginetest.AWSConfig(t)
	cfg.BaseEndpoint = aws.String(e.URL())
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = testAttempts
			o.MaxBackoff = 20 * time.Millisecond
			o.RateLimiter = noRateLimit{} // many faults in a row must not exhaust the retry budget
		})
	}
	return kinesis.NewFromConfig(cfg), dynamodb.NewFromConfig(cfg)
}

type noRateLimit struct{}

func (noRateLimit) GetToken(context.Context, uint) (func() error, error) {
	return func() error { return nil }, nil
}
func (noRateLimit) AddTokens(uint) error { return nil }

func startTestEdge(t *testing.T, name string) *WorkerEdge {
	t.Helper()
	e, err := StartEdge(name, enginetest.Endpoint(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Close(ctx)
	})
	return e
}

func calls(e *WorkerEdge, svc localengines.Service, op string) int64 {
	return e.Stats().Calls[localengines.Call{Service: svc, Operation: op}]
}

func TestFaultsAsTheSDKSeesThem(t *testing.T) {
	streamName := enginetest.UniqueName(t, "s")
	enginetest.CreateStream(t, streamName, 1)
	e := startTestEdge(t, "w")
	kc, dc := clientsVia(t, e)
	kin := kinesisstream.New(kc, streamName)
	store, err := dynamostore.New(dc, enginetest.UniqueName(t, "app"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	inj := e.Injector()
	// attempts calls call with rule in place and returns how many requests for op the
	// edge saw meanwhile, and the call's error.
	attempts := func(rule Rule, op string, call func() error) (int64, error) {
		remove := inj.Add(rule)
		defer remove()
		before := calls(e, rule.Service, op)
		err := call()
		return calls(e, rule.Service, op) - before, err
	}
	listShards := func() error {
		_, err := kin.ListShards(ctx)
		return err
	}

	t.Run("kinesis throttling", func(t *testing.T) {
		n, err := attempts(Rule{Service: localengines.Kinesis, Operation: "ListShards", Kind: FaultThrottle}, "ListShards", listShards)
		if !errors.Is(err, stream.ErrThrottled) {
			t.Fatalf("ListShards: %v, want stream.ErrThrottled", err)
		}
		if n != testAttempts {
			t.Errorf("edge saw %d ListShards attempts, want %d (the SDK retries throttling)", n, testAttempts)
		}
	})
	for _, code := range []string{CodeProvisionedThroughputExceeded, CodeThrottling} {
		t.Run("dynamodb "+code, func(t *testing.T) {
			n, err := attempts(Rule{Service: localengines.DynamoDB, Operation: "Scan", Kind: FaultThrottle, Code: code}, "Scan", func() error {
				_, err := store.ListLeases(ctx)
				return err
			})
			if !errors.Is(err, dynamostore.ErrThrottled) {
				t.Fatalf("ListLeases: %v, want dynamostore.ErrThrottled", err)
			}
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != code {
				t.Errorf("error code %v, want %s", err, code)
			}
			if n != testAttempts {
				t.Errorf("edge saw %d Scan attempts, want %d", n, testAttempts)
			}
		})
	}
	t.Run("http 500", func(t *testing.T) {
		n, err := attempts(Rule{Service: localengines.DynamoDB, Kind: FaultServerError}, "DescribeTable", func() error {
			_, err := dc.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("x-table")})
			return err
		})
		var re *awshttp.ResponseError
		var apiErr smithy.APIError
		if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError ||
			!errors.As(err, &apiErr) || apiErr.ErrorFault() != smithy.FaultServer {
			t.Fatalf("DescribeTable: %v, want a server fault with status 500", err)
		}
		if n != testAttempts {
			t.Errorf("edge saw %d attempts, want %d (the SDK retries 500s)", n, testAttempts)
		}
	})
	t.Run("dropped connection", func(t *testing.T) {
		n, err := attempts(Rule{Service: localengines.Kinesis, Kind: FaultDrop}, "ListShards", listShards)
		var apiErr smithy.APIError
		if err == nil || errors.As(err, &apiErr) {
			t.Fatalf("ListShards: %v, want a transport error", err)
		}
		if n != testAttempts {
			t.Errorf("edge saw %d attempts, want %d (the SDK retries connection errors)", n, testAttempts)
		}
	})
	t.Run("count", func(t *testing.T) {
		n, err := attempts(Rule{Service: localengines.Kinesis, Kind: FaultThrottle, Count: 2}, "ListShards", listShards)
		if err != nil {
			t.Fatalf("ListShards after 2 throttles within %d attempts: %v", testAttempts, err)
		}
		if n != 3 {
			t.Errorf("edge saw %d attempts, want 3 (two throttled, one through)", n)
		}
		if got := inj.Injected()[Injection{FaultThrottle, localengines.Call{Service: localengines.Kinesis, Operation: "ListShards"}}]; got < 3 {
			t.Errorf("injected %d throttles on ListShards over the subtests, want at least 3", got)
		}
	})
	t.Run("latency", func(t *testing.T) {
		const d = 150 * time.Millisecond
		remove := inj.Add(Rule{Service: localengines.Kinesis, Operation: "ListShards", Kind: FaultLatency, Latency: d})
		defer remove()
		start := time.Now()
		if _, err := kin.ListShards(ctx); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < d {
			t.Errorf("ListShards took %s with %s injected latency", took, d)
		}
	})
	t.Run("probability", func(t *testing.T) {
		in := NewInjector(7)
		remove := in.Add(Rule{Kind: FaultThrottle, Probability: 0.3})
		defer remove()
		call := localengines.Call{Service: localengines.Kinesis, Operation: "GetRecords"}
		hits := 0
		for range 1000 {
			if _, f := in.pick(call); f != nil {
				hits++
			}
		}
		if hits < 200 || hits > 400 {
			t.Errorf("p=0.3 injected %d of 1000", hits)
		}
	})
}

func TestCutOffOneWorker(t *testing.T) {
	streamName := enginetest.UniqueName(t, "s")
	enginetest.CreateStream(t, streamName, 1)
	cut, other := startTestEdge(t, "cut"), startTestEdge(t, "other")
	kc, _ := clientsVia(t, cut)
	okc, _ := clientsVia(t, other)

	heal := cut.CutOff()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := kinesisstream.New(kc, streamName).ListShards(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cut-off worker's ListShards: %v, want it to hang until its deadline", err)
	}
	if _, err := kinesisstream.New(okc, streamName).ListShards(t.Context()); err != nil {
		t.Fatalf("the other worker's ListShards: %v, want it to go through", err)
	}
	// A request held while cut is delivered once the cut heals.
	held := make(chan error, 1)
	go func() {
		_, err := kinesisstream.New(kc, streamName).ListShards(t.Context())
		held <- err
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-held:
		t.Fatalf("request went through a cut: %v", err)
	default:
	}
	heal()
	if err := <-held; err != nil {
		t.Fatalf("held request after heal: %v", err)
	}
	if n := cut.Injector().Injected()[Injection{FaultHang, localengines.Call{Service: localengines.Kinesis, Operation: "ListShards"}}]; n < 2 {
		t.Errorf("cut edge held %d requests, want 2", n)
	}
	if n := calls(other, localengines.Kinesis, "ListShards"); n != 1 {
		t.Errorf("other edge counted %d ListShards, want 1", n)
	}
}
