package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kds-lease-manager/kds-lease-manager/clock"
	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// unreachable turns a transport failure of the first call to a service (nothing
// listening, a name that does not resolve, no answer in time) into a message naming the
// endpoint and region and the settings to check. Service errors, which name the table
// or stream already, are returned unchanged.
func unreachable(service, region, endpoint string, timeout time.Duration, err error) error {
	if err == nil || errors.Is(err, context.Canceled) || !isTransport(err) || strings.Contains(err.Error(), "cannot reach") {
		return err
	}
	where := "endpoint " + endpoint
	if endpoint == "" {
		where = "the AWS endpoint"
	}
	how := "nothing answered"
	if errors.Is(err, context.DeadlineExceeded) {
		how = fmt.Sprintf("no answer within %s", timeout)
	}
	return fmt.Errorf("cannot reach %s at %s in region %s (%s): check AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_%s) and AWS_REGION: %w",
		service, where, region, how, strings.ToUpper(service), err)
}

func isTransport(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var sendErr *smithyhttp.RequestSendError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &sendErr) || errors.Is(err, context.DeadlineExceeded)
}

// streamWait is how waitForStream backs off: first, doubling up to most, each check
// bounded by timeout.
type streamWait struct {
	first, most, timeout time.Duration
}

// defaultStreamWait checks after 1 s, then every 2, 4, ... up to 30 s.
func defaultStreamWait() streamWait {
	return streamWait{first: time.Second, most: 30 * time.Second, timeout: 30 * time.Second}
}

// waitForStream returns once check finds the stream, waiting with back-off while it is
// missing or being created (the chart's init job, or an operator, may create it after
// the workers start) and logging each wait with the reason, which names the stream,
// region and endpoint. Any other failure is returned at once. It returns ctx's error
// when ctx ends first.
func waitForStream(ctx context.Context, check func(context.Context) error, bw streamWait, log *slog.Logger) error {
	delay := bw.first
	for waited := false; ; waited = true {
		cctx, cancel := context.WithTimeout(ctx, bw.timeout)
		err := check(cctx)
		cancel()
		switch {
		case err == nil:
			if waited {
				log.Info("the stream is ready; starting")
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, stream.ErrStreamNotFound) && !errors.Is(err, kinesisstream.ErrStreamCreating):
			return err
		}
		log.Warn("waiting for the stream (not ready: /ready stays false)", "err", err, "retry_in", delay)
		if err := clock.Sleep(ctx, clock.Real{}, delay); err != nil {
			return err
		}
		delay = min(2*delay, bw.most)
	}
}
