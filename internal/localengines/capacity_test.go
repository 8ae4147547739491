package localengines_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/internal/localengines"
)

// fakeDynamo answers DynamoDB requests with the ConsumedCapacity a test scripted per
// operation (when the request asked for it), and remembers the bodies it received.
type fakeDynamo struct {
	mu     sync.Mutex
	bodies []string
}

func (f *fakeDynamo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if r.ContentLength != int64(len(b)) {
		http.Error(w, "Content-Length "+strconv.FormatInt(r.ContentLength, 10)+" for "+strconv.Itoa(len(b))+" bytes", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, string(b))
	f.mu.Unlock()
	var req struct {
		TableName              string
		ReturnConsumedCapacity string
		ConsistentRead         bool
	}
	if err := json.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
	out := map[string]any{}
	cc := func(units float64) map[string]any {
		return map[string]any{"TableName": req.TableName, "CapacityUnits": units}
	}
	switch op {
	case "GetItem":
		if req.ConsistentRead {
			out["ConsumedCapacity"] = cc(2)
		} else {
			out["ConsumedCapacity"] = cc(1) // 2 x 4 KB, eventually consistent
		}
	case "PutItem":
		if strings.Contains(string(b), "ConditionExpression") {
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}`)
			return
		}
		out["ConsumedCapacity"] = cc(3)
	case "UpdateItem": // the newer shape, with the read and write units apart
		out["ConsumedCapacity"] = map[string]any{"TableName": req.TableName, "CapacityUnits": 1, "WriteCapacityUnits": 1}
	case "Scan":
		out["ConsumedCapacity"] = cc(0) // dynalite on an empty table
	case "BatchGetItem":
		out["ConsumedCapacity"] = []any{
			map[string]any{"TableName": "a", "CapacityUnits": 1.5},
			map[string]any{"TableName": "b", "CapacityUnits": 4},
		}
	}
	if req.ReturnConsumedCapacity == "" || req.ReturnConsumedCapacity == "NONE" {
		delete(out, "ConsumedCapacity")
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	json.NewEncoder(w).Encode(out)
}

func postBody(t *testing.T, url, target, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", target)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEdgeCapacity(t *testing.T) {
	dyn := &fakeDynamo{}
	dsrv := httptest.NewServer(dyn)
	t.Cleanup(dsrv.Close)
	var kinBodies []string
	ksrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		kinBodies = append(kinBodies, string(b))
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(ksrv.Close)
	edge := localengines.NewEdge(ksrv.URL, dsrv.URL)
	srv := httptest.NewServer(edge)
	t.Cleanup(srv.Close)
	t.Cleanup(edge.CloseIdleConnections)

	const ddb = "DynamoDB_20120810."
	before := edge.Stats()
	steps := []struct{ op, body string }{
		{"GetItem", `{"TableName":"meta","Key":{}}`},                         // eventually consistent: 1
		{"GetItem", ` { "TableName":"meta","ConsistentRead":true,"Key":{}}`}, // 2
		{"GetItem", `{"TableName":"meta","ReturnConsumedCapacity":"NONE"}`},  // NONE is overridden: 1
		{"PutItem", `{"TableName":"meta","Item":{}}`},                        // 3
		{"PutItem", `{"TableName":"leases","Item":{},"ConditionExpression":"x"}`},
		{"UpdateItem", `{"TableName":"leases","ReturnConsumedCapacity":"INDEXES"}`}, // kept
		{"Scan", `{"TableName":"leases","ConsistentRead":true}`},                    // 0 -> 1
		{"Scan", `{"TableName":"leases"}`},                                          // 0 -> 0.5
		{"BatchGetItem", `{"RequestItems":{}}`},
		{"DescribeTable", `{"TableName":"leases"}`}, // takes no ReturnConsumedCapacity
		{"ListTables", `{}`},
	}
	for _, s := range steps {
		code, body := postBody(t, srv.URL, ddb+s.op, s.body)
		if s.op == "PutItem" && strings.Contains(s.body, "Condition") {
			if code != http.StatusBadRequest || !strings.Contains(body, "ConditionalCheckFailed") {
				t.Errorf("conditional put: %d %s", code, body)
			}
			continue
		}
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", s.op, code, body)
		}
	}
	postBody(t, srv.URL, "Kinesis_20131202.ListShards", `{"StreamName":"s"}`)

	// What the engine received: the field added where it was missing or NONE.
	for i, b := range dyn.bodies {
		var m map[string]any
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			t.Fatalf("request %d forwarded as invalid JSON %q: %v", i, b, err)
		}
		want := "TOTAL"
		switch steps[i].op {
		case "UpdateItem":
			want = "INDEXES"
		case "DescribeTable", "ListTables":
			want = ""
		}
		if got, _ := m["ReturnConsumedCapacity"].(string); got != want {
			t.Errorf("%s forwarded as %s, want ReturnConsumedCapacity %q", steps[i].op, b, want)
		}
	}
	if len(kinBodies) != 1 || kinBodies[0] != `{"StreamName":"s"}` {
		t.Errorf("kinesis received %q, want the request unchanged", kinBodies)
	}

	d := edge.Stats().Sub(before)
	want := map[localengines.TableOp]localengines.Capacity{
		{"GetItem", "meta"}:         {Requests: 3, ReadUnits: 4},
		{"PutItem", "meta"}:         {Requests: 1, WriteUnits: 3},
		{"PutItem", "leases"}:       {Requests: 1, WriteUnits: 1, Computed: 1},
		{"UpdateItem", "leases"}:    {Requests: 1, WriteUnits: 1},
		{"Scan", "leases"}:          {Requests: 2, ReadUnits: 1.5, Computed: 2},
		{"BatchGetItem", ""}:        {Requests: 1},
		{"BatchGetItem", "a"}:       {ReadUnits: 1.5},
		{"BatchGetItem", "b"}:       {ReadUnits: 4},
		{"DescribeTable", "leases"}: {Requests: 1},
		{"ListTables", ""}:          {Requests: 1},
	}
	for k, w := range want {
		if got := d.Tables[k]; got != w {
			t.Errorf("%s = %+v, want %+v", k, got, w)
		}
	}
	if len(d.Tables) != len(want) {
		t.Errorf("tables = %v, want %d entries", d.Tables, len(want))
	}
	meta := d.Capacity(func(k localengines.TableOp) bool { return k.Table == "meta" })
	if meta != (localengines.Capacity{Requests: 4, ReadUnits: 4, WriteUnits: 3}) {
		t.Errorf("meta table = %+v", meta)
	}

	// The stats endpoint serves them as JSON.
	if got := fetchStats(t, srv.URL).Tables[localengines.TableOp{Operation: "Scan", Table: "leases"}]; got.ReadUnits != 1.5 {
		t.Errorf("stats endpoint Scan/leases = %+v", got)
	}
}

// However many tables the clients name, the edge keeps a bounded number of counters.
func TestEdgeCapacityBounded(t *testing.T) {
	dsrv := httptest.NewServer(&fakeDynamo{})
	t.Cleanup(dsrv.Close)
	edge := localengines.NewEdge(dsrv.URL, dsrv.URL)
	srv := httptest.NewServer(edge)
	t.Cleanup(srv.Close)
	t.Cleanup(edge.CloseIdleConnections)
	for i := range 5000 {
		postBody(t, srv.URL, "DynamoDB_20120810.DescribeTable", `{"TableName":"t`+strconv.Itoa(i)+`"}`)
	}
	s := edge.Stats()
	if n := len(s.Tables); n > 4097 {
		t.Errorf("%d table counters", n)
	}
	if got := s.Tables[localengines.TableOp{Operation: "DescribeTable", Table: localengines.OtherTables}].Requests; got != 5000-4096 {
		t.Errorf("%s counted %d requests, want %d", localengines.OtherTables, got, 5000-4096)
	}
}
