package localengines

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Capacity accounting: the edge measures the DynamoDB capacity units of every request.
//
// For the operations that can report them, it asks the engine for them: it adds
// "ReturnConsumedCapacity":"TOTAL" to the request when the client did not ask (absent or
// "NONE"; "INDEXES" is kept), and reads ConsumedCapacity from the answer. The answer is
// passed on as the engine sent it: the extra field is one the SDKs decode and ignore
// unless asked for, and dynalite's X-Amz-Crc32 covers it.
//
// dynalite (4.x) computes the units as DynamoDB does: 1 read unit per 4 KB of the item
// (of the items read, for a page of Scan or Query), half of it for an eventually
// consistent read, 1 for an absent item; 1 write unit per KB of the larger of the item
// before and after the write. Its item sizes follow DynamoDB's rules (numbers within a
// byte). Where it differs from DynamoDB, the edge computes the units itself and counts
// those requests in Capacity.Computed:
//   - a strongly consistent Scan: dynalite's Scan drops ConsistentRead (its validation
//     does not know the field) and charges every Scan as eventually consistent, half
//     the units; the edge doubles them (exact: dynalite rounds up to 4 KB first);
//   - a write whose condition failed (ConditionalCheckFailedException: dynalite answers
//     before it computes the units; DynamoDB charges the write): 1 write unit, which is
//     exact for items under 1 KB (every lease and metadata item is);
//   - a Scan or Query page that read nothing (dynalite: 0; DynamoDB: at least 1 unit, half
//     for an eventually consistent one).

// capacityOps are the DynamoDB operations that take ReturnConsumedCapacity.
var capacityOps = map[string]bool{
	"GetItem": true, "PutItem": true, "UpdateItem": true, "DeleteItem": true,
	"Query": true, "Scan": true, "BatchGetItem": true, "BatchWriteItem": true,
	"TransactGetItems": true, "TransactWriteItems": true,
	"ExecuteStatement": true, "BatchExecuteStatement": true, "ExecuteTransaction": true,
}

// readOps are the operations whose CapacityUnits are read units.
var readOps = map[string]bool{
	"GetItem": true, "Query": true, "Scan": true, "BatchGetItem": true, "TransactGetItems": true,
}

// conditionalWrites are the operations whose failed condition DynamoDB still charges.
var conditionalWrites = map[string]bool{"PutItem": true, "UpdateItem": true, "DeleteItem": true}

// TableOp is one DynamoDB operation on one table (Table is empty when the request named
// none, e.g. BatchGetItem, whose units are counted per table it read).
type TableOp struct {
	Operation string
	Table     string
}

// OtherTables is the table of TableOp under which the edge counts requests once it
// counts maxTableOps pairs: memory stays bounded however many tables tests create.
const OtherTables = "(other)"

// maxTableOps bounds the (operation, table) pairs the edge counts apart.
const maxTableOps = 4096

// String returns "Operation/Table" ('/' is in neither).
func (o TableOp) String() string { return o.Operation + "/" + o.Table }

// MarshalText lets TableOp be a JSON object key.
func (o TableOp) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText parses the form String returns.
func (o *TableOp) UnmarshalText(b []byte) error {
	op, table, ok := strings.Cut(string(b), "/")
	if !ok || op == "" {
		return fmt.Errorf("table operation %q: want Operation/Table", b)
	}
	*o = TableOp{Operation: op, Table: table}
	return nil
}

// Capacity is what the requests of one TableOp cost, as the engine reported it.
type Capacity struct {
	Requests   int64   `json:"requests"`
	ReadUnits  float64 `json:"read_units"`
	WriteUnits float64 `json:"write_units"`
	// Computed counts the requests whose units the edge computed because the engine does
	// not charge them (see the package's capacity accounting): failed conditional
	// writes, and Scan or Query pages that read nothing.
	Computed int64 `json:"computed,omitempty"`
}

func (c Capacity) add(o Capacity) Capacity {
	return Capacity{c.Requests + o.Requests, c.ReadUnits + o.ReadUnits, c.WriteUnits + o.WriteUnits, c.Computed + o.Computed}
}

func (c Capacity) sub(o Capacity) Capacity {
	return Capacity{c.Requests - o.Requests, c.ReadUnits - o.ReadUnits, c.WriteUnits - o.WriteUnits, c.Computed - o.Computed}
}

// Capacity sums the DynamoDB requests and units of the (operation, table) pairs match
// accepts (nil: all of them).
func (s Stats) Capacity(match func(TableOp) bool) Capacity {
	var c Capacity
	for k, v := range s.Tables {
		if match == nil || match(k) {
			c = c.add(v)
		}
	}
	return c
}

// dynamoRequest is what the edge reads of a DynamoDB request.
type dynamoRequest struct {
	TableName              string
	ReturnConsumedCapacity string
	ConsistentRead         bool
}

// capacityKey is the context key of a request's capacityInfo.
type capacityKey struct{}

// capacityInfo travels with a DynamoDB request to its answer.
type capacityInfo struct {
	op         string
	table      string
	consistent bool
}

// prepareDynamo reads a DynamoDB request, counts it per table, and asks the engine for
// the units it consumes when the client did not. It returns the request to forward.
func (e *Edge) prepareDynamo(r *http.Request, op string, body []byte) *http.Request {
	var req dynamoRequest
	_ = json.Unmarshal(body, &req) // a malformed body is the engine's to reject
	e.countTable(TableOp{op, req.TableName}, Capacity{Requests: 1})
	if !capacityOps[op] {
		return r
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return r // a compressed body is forwarded as it is
	}
	if req.ReturnConsumedCapacity == "" || req.ReturnConsumedCapacity == "NONE" {
		if b, ok := withTotalCapacity(body, req.ReturnConsumedCapacity == ""); ok {
			body = b
			r.Body, r.ContentLength = readCloser(body), int64(len(body))
			r.Header.Set("Content-Length", fmt.Sprint(len(body)))
		}
	}
	info := &capacityInfo{op: op, table: req.TableName, consistent: req.ConsistentRead}
	return r.WithContext(context.WithValue(r.Context(), capacityKey{}, info))
}

// withTotalCapacity returns the JSON object body with "ReturnConsumedCapacity":"TOTAL".
// absent says the field is not in body (else it is, as "NONE", and is replaced).
func withTotalCapacity(body []byte, absent bool) ([]byte, bool) {
	const field = `"ReturnConsumedCapacity":"TOTAL"`
	if !absent {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, false
		}
		for k := range m {
			if strings.EqualFold(k, "ReturnConsumedCapacity") {
				delete(m, k)
			}
		}
		m["ReturnConsumedCapacity"] = json.RawMessage(`"TOTAL"`)
		b, err := json.Marshal(m)
		return b, err == nil
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) < 2 || trimmed[0] != '{' {
		return nil, false // not a JSON object: leave it to the engine to reject
	}
	rest := bytes.TrimSpace(trimmed[1:])
	out := make([]byte, 0, len(trimmed)+len(field)+1)
	out = append(out, '{')
	out = append(out, field...)
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...), true
}

// dynamoResponse is what the edge reads of a DynamoDB answer.
type dynamoResponse struct {
	Type             string          `json:"__type"`
	ConsumedCapacity json.RawMessage // an object, or a list for the batch and transaction operations
}

// consumedCapacity is DynamoDB's ConsumedCapacity (the table's part).
type consumedCapacity struct {
	TableName                                            string
	CapacityUnits, ReadCapacityUnits, WriteCapacityUnits *float64
}

// countResponse counts the units a DynamoDB answer reports (or that the edge computes
// for it).
func (e *Edge) countResponse(resp *http.Response, body []byte) {
	info, _ := resp.Request.Context().Value(capacityKey{}).(*capacityInfo)
	if info == nil {
		return
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return
	}
	var out dynamoResponse
	if err := json.Unmarshal(body, &out); err != nil {
		return
	}
	if resp.StatusCode != http.StatusOK {
		_, typ, _ := strings.Cut(out.Type, "#")
		if typ == "" {
			typ = out.Type
		}
		if typ == "ConditionalCheckFailedException" && conditionalWrites[info.op] && len(out.ConsumedCapacity) == 0 {
			e.countTable(TableOp{info.op, info.table}, Capacity{WriteUnits: 1, Computed: 1})
		}
		return
	}
	var list []consumedCapacity
	switch raw := bytes.TrimSpace(out.ConsumedCapacity); {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
	case raw[0] == '[':
		_ = json.Unmarshal(raw, &list)
	default:
		var one consumedCapacity
		if json.Unmarshal(raw, &one) == nil {
			list = append(list, one)
		}
	}
	for _, cc := range list {
		var c Capacity
		switch {
		case cc.ReadCapacityUnits != nil || cc.WriteCapacityUnits != nil:
			c.ReadUnits, c.WriteUnits = deref(cc.ReadCapacityUnits), deref(cc.WriteCapacityUnits)
		case readOps[info.op]:
			c.ReadUnits = deref(cc.CapacityUnits)
		default:
			c.WriteUnits = deref(cc.CapacityUnits)
		}
		switch {
		case (info.op == "Scan" || info.op == "Query") && c.ReadUnits == 0 && c.WriteUnits == 0:
			c.ReadUnits, c.Computed = minScanUnits(info.consistent), 1
		case info.op == "Scan" && info.consistent && cc.ReadCapacityUnits == nil:
			c.ReadUnits, c.Computed = 2*c.ReadUnits, 1
		}
		table := cc.TableName
		if table == "" {
			table = info.table
		}
		e.countTable(TableOp{info.op, table}, c)
	}
}

// minScanUnits is what DynamoDB charges at least for a Scan or Query page.
func minScanUnits(consistent bool) float64 {
	if consistent {
		return 1
	}
	return 0.5
}

func deref(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

// countTable adds c to k's totals.
func (e *Edge) countTable(k TableOp, c Capacity) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.tables[k]; !ok && len(e.tables) >= maxTableOps {
		k.Table = OtherTables
	}
	e.tables[k] = e.tables[k].add(c)
}
