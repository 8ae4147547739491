package harness

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// FaultKind is what an injected fault does to a request.
type FaultKind string

// Fault kinds.
const (
	// FaultThrottle answers HTTP 400 with the service's throttling error, which the SDK
	// classifies as throttling and retries with backoff.
	FaultThrottle FaultKind = "throttle"
	// FaultServerError answers HTTP 500 with the service's internal error.
	FaultServerError FaultKind = "http-500"
	// FaultLatency delays the request by Rule.Latency, then lets it through (or on to the
	// next rule).
	FaultLatency FaultKind = "latency"
	// FaultDrop closes the connection without an answer.
	FaultDrop FaultKind = "drop"
	// FaultHang holds the request until the client gives up, as a network cut does. When
	// the rule is removed, requests still held are delivered late, as a healed network
	// delivers retransmitted packets: the engines see them after the cut.
	FaultHang FaultKind = "hang"
)

// DynamoDB throttling error codes (Rule.Code).
const (
	CodeProvisionedThroughputExceeded = "ProvisionedThroughputExceededException"
	CodeThrottling                    = "ThrottlingException"
)

// Rule selects requests and the fault to inject into them.
type Rule struct {
	// Service and Operation select the calls; empty matches any.
	Service   localengines.Service
	Operation string
	Kind      FaultKind
	// Probability that a matching request gets the fault; 0 means 1 (every request).
	Probability float64
	// Count, if positive, stops the rule after that many injections.
	Count int
	// Latency is the delay of FaultLatency.
	Latency time.Duration
	// Code is the throttling error code for DynamoDB (default
	// ProvisionedThroughputExceededException; Kinesis always uses that code).
	Code string
}

func (r Rule) String() string {
	s := string(r.Kind)
	if r.Kind == FaultThrottle && r.Code != "" {
		s += "(" + r.Code + ")"
	}
	if r.Kind == FaultLatency {
		s += "(" + r.Latency.String() + ")"
	}
	sel := "*"
	if r.Service != "" {
		sel = string(r.Service) + "." + r.Operation
		if r.Operation == "" {
			sel += "*"
		}
	}
	s += " on " + sel
	if r.Probability > 0 && r.Probability < 1 {
		s += fmt.Sprintf(" p=%.2f", r.Probability)
	}
	if r.Count > 0 {
		s += fmt.Sprintf(" count=%d", r.Count)
	}
	return s
}

func (r Rule) matches(c localengines.Call) bool {
	return (r.Service == "" || r.Service == c.Service) && (r.Operation == "" || r.Operation == c.Operation)
}

// Injection identifies what was injected into which call, for the report.
type Injection struct {
	Kind FaultKind
	Call localengines.Call
}

type activeRule struct {
	Rule
	used    int
	release chan struct{} // FaultHang: closed when the rule is removed
}

// Injector decides, request by request, which fault to inject. Rules are added and
// removed at run time; the zero value is not usable, call NewInjector.
type Injector struct {
	mu       sync.Mutex
	rules    []*activeRule
	rng      *rand.Rand
	injected map[Injection]int64
	closed   chan struct{}
	once     sync.Once
}

// NewInjector returns an injector without rules; seed makes the random draws repeatable.
func NewInjector(seed uint64) *Injector {
	return &Injector{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		injected: make(map[Injection]int64),
		closed:   make(chan struct{}),
	}
}

// Add activates r and returns the function that removes it again (idempotent).
func (in *Injector) Add(r Rule) (remove func()) {
	ar := &activeRule{Rule: r, release: make(chan struct{})}
	in.mu.Lock()
	in.rules = append(in.rules, ar)
	in.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			in.mu.Lock()
			in.rules = slices.DeleteFunc(in.rules, func(x *activeRule) bool { return x == ar })
			in.mu.Unlock()
			close(ar.release)
		})
	}
}

// Clear removes every rule; held requests are delivered.
func (in *Injector) Clear() {
	in.mu.Lock()
	rules := in.rules
	in.rules = nil
	in.mu.Unlock()
	for _, r := range rules {
		close(r.release)
	}
}

// Close fails every held request and every request still to come with a dropped
// connection, so that servers can shut down.
func (in *Injector) Close() { in.once.Do(func() { close(in.closed) }) }

// Injected returns how many faults were injected, per kind and call.
func (in *Injector) Injected() map[Injection]int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return maps.Clone(in.injected)
}

// pick returns the latency to add and the terminal fault (nil: none) for one request.
func (in *Injector) pick(call localengines.Call) (delay time.Duration, fault *activeRule) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, r := range in.rules {
		if !r.matches(call) || (r.Count > 0 && r.used >= r.Count) {
			continue
		}
		if p := r.Probability; p > 0 && p < 1 && in.rng.Float64() >= p {
			continue
		}
		r.used++
		in.injected[Injection{Kind: r.Kind, Call: call}]++
		if r.Kind == FaultLatency {
			delay += r.Latency
			continue
		}
		return delay, r
	}
	return delay, nil
}

// Intercept is a localengines.Interceptor that injects the faults.
func (in *Injector) Intercept(w http.ResponseWriter, r *http.Request, call localengines.Call, next http.Handler) {
	delay, fault := in.pick(call)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-in.closed:
			t.Stop()
			dropConnection(w)
			return
		}
	}
	if fault == nil {
		next.ServeHTTP(w, r)
		return
	}
	switch fault.Kind {
	case FaultThrottle:
		writeThrottle(w, call.Service, fault.Code)
	case FaultServerError:
		writeServerError(w, call.Service)
	case FaultDrop:
		dropConnection(w)
	case FaultHang:
		select {
		case <-r.Context().Done(): // the client gave up
		case <-in.closed:
			dropConnection(w)
		case <-fault.release:
			next.ServeHTTP(w, r) // late delivery after the cut healed
		}
	default:
		next.ServeHTTP(w, r)
	}
}

// The SDKs take the error code from __type after its last '#', so the service's own
// namespaced forms are used.
func writeThrottle(w http.ResponseWriter, svc localengines.Service, code string) {
	if svc == localengines.Kinesis {
		writeError(w, svc, http.StatusBadRequest, CodeProvisionedThroughputExceeded, "Rate exceeded for shard (injected by kds harness)")
		return
	}
	if code == "" {
		code = CodeProvisionedThroughputExceeded
	}
	ns := "com.amazonaws.dynamodb.v20120810#"
	if code == CodeThrottling {
		ns = "com.amazon.coral.availability#"
	}
	writeError(w, svc, http.StatusBadRequest, ns+code, "Throughput exceeds the current capacity (injected by kds harness)")
}

func writeServerError(w http.ResponseWriter, svc localengines.Service) {
	if svc == localengines.Kinesis {
		writeError(w, svc, http.StatusInternalServerError, "InternalFailure", "injected by kds harness")
		return
	}
	writeError(w, svc, http.StatusInternalServerError, "com.amazonaws.dynamodb.v20120810#InternalServerError", "injected by kds harness")
}

func writeError(w http.ResponseWriter, svc localengines.Service, status int, typ, msg string) {
	ct := "application/x-amz-json-1.1"
	if svc == localengines.DynamoDB {
		ct = "application/x-amz-json-1.0"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

// dropConnection closes the client's connection without an answer.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 or a wrapped writer: aborting the handler resets the stream instead.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
