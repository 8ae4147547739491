package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// Access is one AWS action on one resource, as IAM would see it. Resource is the table
// or stream name from the request, or empty when the request does not name it
// (GetRecords carries only a shard iterator, a paged ListShards only a token).
type Access struct {
	Action   string // e.g. "dynamodb:GetItem"
	Service  localengines.Service
	Resource string
}

// WorkerEdge is one worker's own edge listener in front of the shared engines: its
// requests can be faulted (or cut off) without touching anyone else's, and they are
// counted per operation and per resource.
type WorkerEdge struct {
	name     string
	url      string
	edge     *localengines.Edge
	injector *Injector
	srv      *http.Server
	done     chan struct{}

	mu       sync.Mutex
	accesses map[Access]int64
}

// StartEdge listens on a free loopback port and proxies both services to upstream (an
// engines edge such as localengines.Engines.Endpoint(), which routes them again).
func StartEdge(name, upstream string, seed uint64, log *slog.Logger) (*WorkerEdge, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("edge %s: listen: %w", name, err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &WorkerEdge{
		name:     name,
		url:      "http://" + ln.Addr().String(),
		edge:     localengines.NewEdge(upstream, upstream),
		injector: NewInjector(seed),
		done:     make(chan struct{}),
		accesses: make(map[Access]int64),
	}
	e.edge.Logger = log
	e.edge.Interceptor = func(w http.ResponseWriter, r *http.Request, call localengines.Call, next http.Handler) {
		e.record(r, call)
		e.injector.Intercept(w, r, call, next)
	}
	e.srv = &http.Server{Handler: e.edge, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		defer close(e.done)
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("edge stopped", "edge", name, "err", err)
		}
	}()
	return e, nil
}

// Name is the edge's (worker's) name.
func (e *WorkerEdge) Name() string { return e.name }

// URL is the endpoint to give the worker (AWS_ENDPOINT_URL).
func (e *WorkerEdge) URL() string { return e.url }

// Injector holds the edge's fault rules.
func (e *WorkerEdge) Injector() *Injector { return e.injector }

// Stats counts the requests the edge received, faulted or not.
func (e *WorkerEdge) Stats() localengines.Stats { return e.edge.Stats() }

// Accesses returns every action and resource the edge saw, with counts.
func (e *WorkerEdge) Accesses() map[Access]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.accesses)
}

// CutOff makes every request of the worker hang until its client gives up, and returns
// the function that heals the cut.
func (e *WorkerEdge) CutOff() (heal func()) { return e.injector.Add(Rule{Kind: FaultHang}) }

// Close stops the edge, failing requests it still holds.
func (e *WorkerEdge) Close(ctx context.Context) error {
	e.injector.Close()
	err := e.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, e.srv.Close())
	}
	e.edge.CloseIdleConnections()
	<-e.done
	return err
}

// maxPeek bounds how much of a request body is read to find the resource name; the
// workers' requests are small, and a larger body is passed on untouched.
const maxPeek = 64 << 10

func (e *WorkerEdge) record(r *http.Request, call localengines.Call) {
	a := Access{Action: string(call.Service) + ":" + call.Operation, Service: call.Service}
	if r.Body != nil && r.ContentLength >= 0 && r.ContentLength <= maxPeek {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPeek+1))
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		if err == nil {
			a.Resource = resourceOf(body)
		}
	}
	e.mu.Lock()
	e.accesses[a]++
	e.mu.Unlock()
}

// resourceOf extracts the table or stream a JSON request names.
func resourceOf(body []byte) string {
	var v struct {
		TableName, StreamName, StreamARN string
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	switch {
	case v.TableName != "":
		return v.TableName
	case v.StreamName != "":
		return v.StreamName
	case v.StreamARN != "":
		// arn:aws:kinesis:region:account:stream/NAME
		for i := len(v.StreamARN) - 1; i >= 0; i-- {
			if v.StreamARN[i] == '/' {
				return v.StreamARN[i+1:]
			}
		}
	}
	return ""
}
