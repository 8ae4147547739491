package localengines_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// backend answers with its own name, so a test can see where the edge sent a request.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Seen-Host", r.Host)
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(s.Close)
	return s
}

func newTestEdge(t *testing.T) (*localengines.Edge, *httptest.Server) {
	t.Helper()
	kin, dyn := backend(t, "kinesis"), backend(t, "dynamodb")
	edge := localengines.NewEdge(kin.URL, dyn.URL)
	srv := httptest.NewServer(edge)
	t.Cleanup(srv.Close)
	t.Cleanup(edge.CloseIdleConnections)
	return edge, srv
}

func post(t *testing.T, url string, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestEdgeRouting(t *testing.T) {
	const (
		kinAuth = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=x"
		dynAuth = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x"
	)
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		want    string // backend name, or "" for a 400
	}{
		{"kinesis target", "/", map[string]string{"X-Amz-Target": "Kinesis_20131202.ListShards"}, "kinesis"},
		{"dynamodb target", "/", map[string]string{"X-Amz-Target": "DynamoDB_20120810.GetItem"}, "dynamodb"},
		{"target beats auth", "/", map[string]string{"X-Amz-Target": "DynamoDB_20120810.GetItem", "Authorization": kinAuth}, "dynamodb"},
		{"cbor", "/", map[string]string{"Content-Type": "application/x-amz-cbor-1.1"}, "kinesis"},
		{"cbor with params", "/", map[string]string{"Content-Type": "Application/X-Amz-Cbor-1.1; charset=x"}, "kinesis"},
		{"kinesis auth", "/", map[string]string{"Authorization": kinAuth}, "kinesis"},
		{"dynamodb auth", "/", map[string]string{"Authorization": dynAuth}, "dynamodb"},
		{"presigned", "/?X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fdynamodb%2Faws4_request", nil, "dynamodb"},
		{"unknown target", "/", map[string]string{"X-Amz-Target": "Logs_20140328.PutLogEvents"}, ""},
		{"other service auth", "/", map[string]string{"Authorization": strings.Replace(kinAuth, "kinesis", "s3", 1)}, ""},
		{"nothing", "/", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newTestEdge(t)
			resp := post(t, srv.URL+tt.path, tt.headers)
			if tt.want == "" {
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("status = %d, want 400", resp.StatusCode)
				}
				var body map[string]string
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
					t.Fatal(err)
				}
				if body["__type"] != "UnknownServiceException" || !strings.Contains(body["message"], "X-Amz-Target") {
					t.Errorf("error body = %+v", body)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if got := resp.Header.Get("X-Backend"); got != tt.want {
				t.Errorf("routed to %q, want %q", got, tt.want)
			}
			if got, want := resp.Header.Get("X-Seen-Host"), strings.TrimPrefix(srv.URL, "http://"); got != want {
				t.Errorf("backend saw Host %q, want the client's %q", got, want)
			}
		})
	}
}

func TestEdgeStats(t *testing.T) {
	edge, srv := newTestEdge(t)
	post(t, srv.URL, map[string]string{"X-Amz-Target": "DynamoDB_20120810.GetItem"})
	before := edge.Stats()
	for range 3 {
		post(t, srv.URL, map[string]string{"X-Amz-Target": "DynamoDB_20120810.GetItem"})
	}
	post(t, srv.URL, map[string]string{"X-Amz-Target": "DynamoDB_20120810.PutItem"})
	post(t, srv.URL, map[string]string{"X-Amz-Target": "Kinesis_20131202.GetRecords"})
	post(t, srv.URL, nil)

	s := edge.Stats()
	get := localengines.Call{Service: localengines.DynamoDB, Operation: "GetItem"}
	if got := s.Calls[get]; got != 4 {
		t.Errorf("GetItem = %d, want 4", got)
	}
	if got := s.Service(localengines.DynamoDB); got != 5 {
		t.Errorf("dynamodb total = %d, want 5", got)
	}
	if s.Unrouted != 1 {
		t.Errorf("unrouted = %d, want 1", s.Unrouted)
	}
	d := s.Sub(before)
	if d.Calls[get] != 3 || d.Service(localengines.DynamoDB) != 4 || d.Service(localengines.Kinesis) != 1 {
		t.Errorf("delta = %v", d)
	}

	// The stats endpoint serves the same numbers as JSON.
	if remote := fetchStats(t, srv.URL); remote.Calls[get] != 4 || remote.Unrouted != 1 {
		t.Errorf("stats endpoint = %+v", remote)
	}
}

func TestEdgeInterceptor(t *testing.T) {
	edge, srv := newTestEdge(t)
	var seen []localengines.Call
	edge.Interceptor = func(w http.ResponseWriter, r *http.Request, call localengines.Call, next http.Handler) {
		seen = append(seen, call)
		if call.Operation == "PutRecord" {
			http.Error(w, "injected", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	}
	if resp := post(t, srv.URL, map[string]string{"X-Amz-Target": "Kinesis_20131202.PutRecord"}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("intercepted status = %d", resp.StatusCode)
	}
	if resp := post(t, srv.URL, map[string]string{"X-Amz-Target": "Kinesis_20131202.GetRecords"}); resp.Header.Get("X-Backend") != "kinesis" {
		t.Errorf("passed-through request not proxied")
	}
	if len(seen) != 2 || seen[0].String() != "kinesis.PutRecord" {
		t.Errorf("interceptor saw %v", seen)
	}
}

func TestEdgeErrors(t *testing.T) {
	t.Run("bad url", func(t *testing.T) {
		srv := httptest.NewServer(localengines.NewEdge("127.0.0.1:1", "http://127.0.0.1:1"))
		defer srv.Close()
		resp := post(t, srv.URL, map[string]string{"X-Amz-Target": "Kinesis_20131202.ListShards"})
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(b), "kinesis engine URL") {
			t.Errorf("got %d %s", resp.StatusCode, b)
		}
	})
	t.Run("engine down", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		edge := localengines.NewEdge(dead.URL, dead.URL)
		edge.Logger = slog.New(slog.DiscardHandler)
		srv := httptest.NewServer(edge)
		defer srv.Close()
		resp := post(t, srv.URL, map[string]string{"X-Amz-Target": "DynamoDB_20120810.GetItem"})
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "dynamodb engine") {
			t.Errorf("got %d %s", resp.StatusCode, b)
		}
	})
}

// A client killed while sending its request must not hand the engine a request torn off
// mid-body (dynalite throws on it and exits): the edge forwards only complete requests.
func TestEdgeForwardsOnlyCompleteRequests(t *testing.T) {
	var seen, torn atomic.Int64
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if _, err := io.ReadAll(r.Body); err != nil {
			torn.Add(1)
		}
	}))
	t.Cleanup(engine.Close)
	srv := httptest.NewServer(localengines.NewEdge(engine.URL, engine.URL))
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListShards\r\nContent-Length: 1000\r\n\r\n{\"StreamName\":")
	time.Sleep(100 * time.Millisecond)
	conn.Close() // killed halfway through the body
	time.Sleep(300 * time.Millisecond)
	if seen.Load() != 0 || torn.Load() != 0 {
		t.Fatalf("the engine got %d requests (%d torn off mid-body); want none", seen.Load(), torn.Load())
	}
}

// fetchStats reads the edge's stats endpoint at base.
func fetchStats(t *testing.T, base string) localengines.Stats {
	t.Helper()
	resp, err := http.Get(base + localengines.StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var remote localengines.Stats
	if err := json.NewDecoder(resp.Body).Decode(&remote); err != nil {
		t.Fatal(err)
	}
	return remote
}
