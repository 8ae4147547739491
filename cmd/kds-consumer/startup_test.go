package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/kinesisstream"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// The worker waits for a stream that is missing or being created, backing off (1, 2, 4
// s ... up to the most) and saying why each time; any other failure ends the wait at
// once, and so does the end of its context.
func TestWaitForStream(t *testing.T) {
	missing := fmt.Errorf(`stream "orders" not found in region eu-west-3: create it or set STREAM_NAME: %w`, stream.ErrStreamNotFound)
	creating := fmt.Errorf(`stream "orders" is still being created: %w`, kinesisstream.ErrStreamCreating)
	denied := fmt.Errorf("cannot describe stream: %w", stream.ErrAccessDenied)
	bw := streamWait{first: time.Second, most: 4 * time.Second, timeout: time.Second}
	for _, tc := range []struct {
		name    string
		answers []error // then nil
		want    error
		waited  time.Duration
		logged  []string
	}{
		{"there already", nil, nil, 0, nil},
		{"missing, then being created, then there", []error{missing, missing, creating, creating}, nil, 1*time.Second + 2*time.Second + 4*time.Second + 4*time.Second,
			[]string{`not found in region eu-west-3: create it or set STREAM_NAME`, "is still being created", "retry_in=4s", "the stream is ready"}},
		{"access denied ends the wait", []error{missing, denied}, stream.ErrAccessDenied, time.Second, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs strings.Builder
				log := slog.New(slog.NewTextHandler(&logs, nil))
				calls := 0
				check := func(ctx context.Context) error {
					if _, ok := ctx.Deadline(); !ok {
						t.Error("a check without a deadline")
					}
					calls++
					if calls <= len(tc.answers) {
						return tc.answers[calls-1]
					}
					return nil
				}
				start := time.Now()
				err := waitForStream(t.Context(), check, bw, log)
				if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if got := time.Since(start); got != tc.waited {
					t.Errorf("waited %s, want %s", got, tc.waited)
				}
				for _, want := range tc.logged {
					if !strings.Contains(logs.String(), want) {
						t.Errorf("log lacks %q:\n%s", want, logs.String())
					}
				}
			})
		})
	}
	t.Run("stopped while waiting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := waitForStream(ctx, func(context.Context) error { return missing }, bw, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the context's", err)
			}
		})
	})
}
