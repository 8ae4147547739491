package localengines

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Service is an AWS service the edge can route to.
type Service string

// Services behind the edge.
const (
	Kinesis  Service = "kinesis"
	DynamoDB Service = "dynamodb"
)

// Target prefixes of the AWS JSON protocols (the X-Amz-Target header is "<prefix>.<Operation>").
const (
	kinesisTargetPrefix  = "Kinesis_20131202"
	dynamoDBTargetPrefix = "DynamoDB_20120810"
	cborContentType      = "application/x-amz-cbor-1.1"
)

// StatsPath is the edge's own endpoint: GET returns Stats as JSON. AWS JSON-protocol
// requests always POST to "/", so it cannot clash with them.
const StatsPath = "/_kds/stats"

// Call identifies one AWS API call: the service and, when the request named it, the
// operation (e.g. {DynamoDB, "GetItem"}).
type Call struct {
	Service   Service
	Operation string
}

// String returns "service.Operation", or just the service when the operation is unknown.
func (c Call) String() string {
	if c.Operation == "" {
		return string(c.Service)
	}
	return string(c.Service) + "." + c.Operation
}

// MarshalText lets Call be a JSON object key.
func (c Call) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses the form String returns.
func (c *Call) UnmarshalText(b []byte) error {
	svc, op, _ := strings.Cut(string(b), ".")
	if svc == "" {
		return fmt.Errorf("call %q: empty service", b)
	}
	*c = Call{Service: Service(svc), Operation: op}
	return nil
}

// Stats counts the requests the edge received, per call, and what the DynamoDB requests
// cost per operation and table (see capacity.go). Take two snapshots and Sub them to get
// the requests in between.
type Stats struct {
	Calls map[Call]int64 `json:"calls"`
	// Tables counts the DynamoDB requests per operation and table, with the capacity
	// units the engine reported for them.
	Tables map[TableOp]Capacity `json:"tables,omitempty"`
	// Unrouted counts requests the edge could not attribute to a service.
	Unrouted int64 `json:"unrouted"`
}

// Service returns the number of requests to svc, over all operations.
func (s Stats) Service(svc Service) int64 {
	var n int64
	for c, v := range s.Calls {
		if c.Service == svc {
			n += v
		}
	}
	return n
}

// Sub returns the requests counted in s but not yet in earlier.
func (s Stats) Sub(earlier Stats) Stats {
	d := Stats{Calls: make(map[Call]int64, len(s.Calls)), Tables: make(map[TableOp]Capacity, len(s.Tables)),
		Unrouted: s.Unrouted - earlier.Unrouted}
	for c, v := range s.Calls {
		if n := v - earlier.Calls[c]; n != 0 {
			d.Calls[c] = n
		}
	}
	for k, v := range s.Tables {
		if c := v.sub(earlier.Tables[k]); c != (Capacity{}) {
			d.Tables[k] = c
		}
	}
	return d
}

// Interceptor sees every routed request before it is proxied. It may answer the request
// itself (to inject a fault, say) or pass it on with next.ServeHTTP(w, r).
type Interceptor func(w http.ResponseWriter, r *http.Request, call Call, next http.Handler)

// Edge is an http.Handler that serves both engines on one endpoint, like LocalStack's edge
// port: it routes each request by its X-Amz-Target header (falling back to a CBOR content
// type, which only Kinesis clients use, and to the SigV4 credential scope) and counts the
// calls.
type Edge struct {
	// Interceptor, if set, is called for every routed request. Set it before serving.
	Interceptor Interceptor
	// Logger receives proxy errors; slog.Default() if nil. Set it before serving.
	Logger *slog.Logger

	proxies   map[Service]http.Handler
	transport *http.Transport
	err       error // invalid backend URL: reported on every request

	mu       sync.Mutex
	calls    map[Call]int64
	tables   map[TableOp]Capacity
	unrouted int64
}

// NewEdge returns an edge that proxies Kinesis calls to kinesisURL and DynamoDB calls to
// dynamoURL (e.g. "http://127.0.0.1:4567"). An invalid URL makes every request fail with
// a 500 naming it.
func NewEdge(kinesisURL, dynamoURL string) *Edge {
	// The default transport keeps only two idle connections per host, which under load
	// tests means a new TCP connection for most requests.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	// Requests are not cancelled with their clients (see Rewrite); this bounds an engine
	// that never answers.
	tr.ResponseHeaderTimeout = 2 * time.Minute
	e := &Edge{
		proxies:   make(map[Service]http.Handler, 2),
		transport: tr,
		calls:     make(map[Call]int64),
		tables:    make(map[TableOp]Capacity),
	}
	for svc, raw := range map[Service]string{Kinesis: kinesisURL, DynamoDB: dynamoURL} {
		target, err := url.Parse(raw)
		if err == nil && (target.Scheme == "" || target.Host == "") {
			err = errors.New("want scheme and host, e.g. http://127.0.0.1:4567")
		}
		if err != nil {
			e.err = errors.Join(e.err, fmt.Errorf("%s engine URL %q: %w", svc, raw, err))
			continue
		}
		e.proxies[svc] = e.newProxy(svc, target)
	}
	return e
}

func (e *Edge) newProxy(svc Service, target *url.URL) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// A client that gives up (a timeout, a cut connection) must not abort the
			// engine's request halfway: dynalite can crash on a socket torn down while it
			// answers. Real services also finish a request the client abandoned.
			pr.Out = pr.Out.WithContext(context.WithoutCancel(pr.In.Context()))
			pr.SetURL(target)
			// Keep the Host the client signed, so the request stays as the client sent it.
			pr.Out.Host = pr.In.Host
		},
		Transport: e.transport,
		// Read the engine's whole answer before passing it on: a client gone mid-answer
		// must not make the edge close the engine's connection before it finished.
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			resp.Body = readCloser(body)
			if svc == DynamoDB {
				e.countResponse(resp, body)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nobody to answer
			}
			e.log().Warn("edge: engine request failed", "service", svc, "target", target.String(), "err", err)
			writeAWSError(w, http.StatusBadGateway, "ServiceUnavailable",
				fmt.Sprintf("kds edge: %s engine at %s did not answer: %v", svc, target, err))
		},
	}
}

func (e *Edge) log() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

// maxRequestBody bounds what the edge buffers of one request (Kinesis and DynamoDB
// requests are at most a few MiB).
const maxRequestBody = 64 << 20

// ServeHTTP routes one request to its engine.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == StatsPath && r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e.Stats())
		return
	}
	if e.err != nil {
		writeAWSError(w, http.StatusInternalServerError, "InternalFailure", "kds edge misconfigured: "+e.err.Error())
		return
	}
	call, ok := classify(r)
	if !ok {
		e.mu.Lock()
		e.unrouted++
		e.mu.Unlock()
		writeAWSError(w, http.StatusBadRequest, "UnknownServiceException", fmt.Sprintf(
			"kds edge: cannot tell whether this request is for Kinesis or DynamoDB (X-Amz-Target %q, Content-Type %q): "+
				"send an X-Amz-Target starting with %s. or %s., or sign it with SigV4 for service kinesis or dynamodb",
			r.Header.Get("X-Amz-Target"), r.Header.Get("Content-Type"), kinesisTargetPrefix, dynamoDBTargetPrefix))
		return
	}
	// Read the whole request before the engine sees any of it: a client killed halfway
	// through sending (kill -9, a cut) must never leave the engine with a request torn
	// off mid-body, which crashes dynalite ("aborted" thrown from its request handler).
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return // The client went away before its request was complete: nothing to forward.
	}
	if len(body) > maxRequestBody {
		writeAWSError(w, http.StatusRequestEntityTooLarge, "SerializationException", "kds edge: request body over 64 MiB")
		return
	}
	r.Body, r.ContentLength = readCloser(body), int64(len(body))
	e.mu.Lock()
	e.calls[call]++
	e.mu.Unlock()
	if call.Service == DynamoDB && call.Operation != "" {
		r = e.prepareDynamo(r, call.Operation, body)
	}

	next := e.proxies[call.Service]
	if e.Interceptor != nil {
		e.Interceptor(w, r, call, next)
		return
	}
	next.ServeHTTP(w, r)
}

// Stats returns a snapshot of the request counts.
func (e *Edge) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Calls: maps.Clone(e.calls), Tables: maps.Clone(e.tables), Unrouted: e.unrouted}
}

func readCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

// CloseIdleConnections closes the edge's idle connections to the engines.
func (e *Edge) CloseIdleConnections() { e.transport.CloseIdleConnections() }

// classify works out which service (and operation) a request is for.
func classify(r *http.Request) (Call, bool) {
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		prefix, op, _ := strings.Cut(target, ".")
		switch prefix {
		case kinesisTargetPrefix:
			return Call{Kinesis, op}, true
		case dynamoDBTargetPrefix:
			return Call{DynamoDB, op}, true
		}
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.EqualFold(strings.TrimSpace(ct), cborContentType) {
		return Call{Service: Kinesis}, true
	}
	cred := credentialScope(r.Header.Get("Authorization"))
	if cred == "" {
		cred = r.URL.Query().Get("X-Amz-Credential") // presigned URL
	}
	// Credential scope: <key>/<date>/<region>/<service>/aws4_request
	if parts := strings.Split(cred, "/"); len(parts) == 5 {
		switch Service(parts[3]) {
		case Kinesis:
			return Call{Service: Kinesis}, true
		case DynamoDB:
			return Call{Service: DynamoDB}, true
		}
	}
	return Call{}, false
}

// credentialScope extracts the Credential value from a SigV4 Authorization header.
func credentialScope(auth string) string {
	_, params, ok := strings.Cut(auth, " ")
	if !ok {
		return ""
	}
	for p := range strings.SplitSeq(params, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "Credential="); ok {
			return v
		}
	}
	return ""
}

// writeAWSError answers in the AWS JSON protocol's error shape, which every SDK decodes.
func writeAWSError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}
