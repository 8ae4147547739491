package dynamostore

import (
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

type item = map[string]types.AttributeValue

// with returns a copy of base with the given attributes set; a nil value deletes one.
func with(base item, kv ...any) item {
	out := maps.Clone(base)
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1].(types.AttributeValue)
	}
	return out
}

func TestLeaseRoundTrip(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.UTC)
	tests := []struct {
		name string
		in   lease.Lease
	}{
		{"free", lease.Lease{ShardID: "shardId-000", Checkpoint: lease.TrimHorizon}},
		{"owned", lease.Lease{ShardID: "shardId-001", Owner: "w1", Epoch: 7, Checkpoint: "4960000000001"}},
		{"at timestamp", lease.Lease{ShardID: "shardId-002", Checkpoint: lease.AtTimestamp, StartTimestamp: ts}},
		{"one parent", lease.Lease{ShardID: "shardId-003", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"shardId-000"}}},
		{"two parents", lease.Lease{ShardID: "shardId-004", Checkpoint: lease.TrimHorizon, ParentShardIDs: []string{"shardId-001", "shardId-002"}}},
		{"children and hash key range", lease.Lease{ShardID: "shardId-005", Checkpoint: lease.ShardEnd, ChildShardIDs: []string{"shardId-006", "shardId-007"},
			StartingHashKey: "0", EndingHashKey: "340282366920938463463374607431768211455"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := encodeLease(tt.in)
			if _, ok := enc[attrLeaseOwner]; ok != (tt.in.Owner != "") {
				t.Errorf("leaseOwner present = %v, want %v", ok, tt.in.Owner != "")
			}
			if _, ok := enc[attrParentShardID]; ok != (len(tt.in.ParentShardIDs) > 0) {
				t.Errorf("parentShardId present = %v with %d parents", ok, len(tt.in.ParentShardIDs))
			}
			got, err := decodeLease(enc)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tt.in)
			}
		})
	}
}

func TestDecodeLeaseParents(t *testing.T) {
	base := encodeLease(lease.Lease{ShardID: "s", Checkpoint: lease.TrimHorizon})
	tests := []struct {
		name string
		attr types.AttributeValue
		want []string
	}{
		{"string set is sorted", &types.AttributeValueMemberSS{Value: []string{"b", "a"}}, []string{"a", "b"}},
		{"list keeps order", &types.AttributeValueMemberL{Value: []types.AttributeValue{strAV("b"), strAV("a")}}, []string{"b", "a"}},
		{"empty list", &types.AttributeValueMemberL{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeLease(with(base, attrParentShardID, tt.attr))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.ParentShardIDs, tt.want) {
				t.Errorf("parents = %q, want %q", got.ParentShardIDs, tt.want)
			}
		})
	}
	// Duplicates would make the string set invalid.
	enc := encodeLease(lease.Lease{ShardID: "s", Checkpoint: "x", ParentShardIDs: []string{"p", "p"}})
	if _, ok := enc[attrLegacyParents]; ok {
		t.Errorf("encoded item has the legacy %s: %v", attrLegacyParents, enc)
	}
	if got := enc[attrParentShardID].(*types.AttributeValueMemberSS).Value; !reflect.DeepEqual(got, []string{"p"}) {
		t.Errorf("encoded parents = %q, want [p]", got)
	}
}

// parentShardId (the KCL's) wins over parentShardIds (written by this project before it
// wrote the KCL's name), which is still read when alone.
func TestDecodeLeaseParentPrecedence(t *testing.T) {
	base := encodeLease(lease.Lease{ShardID: "s", Checkpoint: lease.TrimHorizon})
	kcl := &types.AttributeValueMemberSS{Value: []string{"kcl"}}
	legacy := &types.AttributeValueMemberSS{Value: []string{"legacy"}}
	tests := []struct {
		name string
		item item
		want []string
	}{
		{"KCL name only", with(base, attrParentShardID, kcl), []string{"kcl"}},
		{"legacy name only", with(base, attrLegacyParents, legacy), []string{"legacy"}},
		{"both: the KCL's wins", with(base, attrParentShardID, kcl, attrLegacyParents, legacy), []string{"kcl"}},
		{"neither", base, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeLease(tt.item)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.ParentShardIDs, tt.want) {
				t.Errorf("parents = %q, want %q", got.ParentShardIDs, tt.want)
			}
		})
	}
}

func TestDecodeLeaseCorrupt(t *testing.T) {
	base := encodeLease(lease.Lease{ShardID: "shardId-1", Owner: "w", Epoch: 3, Checkpoint: "123"})
	tests := []struct {
		name string
		item item
		want string // substring of the reason
	}{
		{"leaseKey missing", with(base, attrLeaseKey, nil), "leaseKey: missing, expected a string (S)"},
		{"leaseKey number", with(base, attrLeaseKey, numAV(1)), "leaseKey: is a number (N), expected a string (S)"},
		{"leaseKey empty", with(base, attrLeaseKey, strAV("")), "leaseKey: is empty"},
		{"counter missing", with(base, attrLeaseCounter, nil), "leaseCounter: missing, expected an integer (N)"},
		{"counter string", with(base, attrLeaseCounter, strAV("3")), "leaseCounter: is a string (S), expected an integer (N)"},
		{"counter fraction", with(base, attrLeaseCounter, &types.AttributeValueMemberN{Value: "1.5"}), `leaseCounter: is "1.5", expected a 64-bit integer`},
		{"checkpoint missing", with(base, attrCheckpoint, nil), "checkpoint: missing, expected a string (S)"},
		{"checkpoint empty", with(base, attrCheckpoint, strAV("")), "checkpoint: is empty"},
		{"checkpoint bool", with(base, attrCheckpoint, &types.AttributeValueMemberBOOL{Value: true}), "checkpoint: is a boolean (BOOL)"},
		{"owner number", with(base, attrLeaseOwner, numAV(5)), "leaseOwner: is a number (N), expected a string (S)"},
		{"owner empty", with(base, attrLeaseOwner, strAV("")), "leaseOwner: is an empty string"},
		{"owner null", with(base, attrLeaseOwner, &types.AttributeValueMemberNULL{Value: true}), "leaseOwner: is null (NULL)"},
		{"start timestamp string", with(base, attrStartTimestamp, strAV("yesterday")), "startTimestamp: is a string (S), expected an integer (N)"},
		{"parents number", with(base, attrParentShardID, numAV(1)), "parentShardId: is a number (N), expected a string set (SS) or a list of strings (L)"},
		{"parents list of numbers", with(base, attrParentShardID, &types.AttributeValueMemberL{Value: []types.AttributeValue{strAV("a"), numAV(1)}}), "parentShardId: element 1 is a number (N)"},
		{"legacy parents number", with(base, attrLegacyParents, numAV(1)), "parentShardIds: is a number (N), expected a string set (SS)"},
		{"children string", with(base, attrChildShardIDs, strAV("c")), "childShardIds: is a string (S), expected a string set (SS)"},
		{"starting hash key alone", with(base, attrStartingHashKey, strAV("0")), "endingHashKey: missing or empty while startingHashKey is set"},
		{"ending hash key alone", with(base, attrEndingHashKey, strAV("9")), "startingHashKey: missing or empty while endingHashKey is set"},
		{"hash key number", with(base, attrStartingHashKey, numAV(0), attrEndingHashKey, strAV("9")), "startingHashKey: is a number (N), expected a string (S)"},
		{"multi-stream lease", with(base, attrStreamName, strAV("123456789012:stream:1700000000")), "streamName: present: a KCL multi-stream lease"},
		{"newer version", with(base, attrItemVersion, numAV(99)), "written by a newer version (itemVersion 99)"},
		{"version string", with(base, attrItemVersion, strAV("1")), "itemVersion: is a string (S)"},
		{"version zero", with(base, attrItemVersion, numAV(0)), "itemVersion: is 0, expected 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeLease(tt.item)
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("reason %q does not contain %q", err, tt.want)
			}
		})
	}
	// An item without itemVersion (another tool's) is read as version 1.
	if _, err := decodeLease(with(base, attrItemVersion, nil)); err != nil {
		t.Errorf("item without itemVersion: %v", err)
	}
}

func TestWorkerCodec(t *testing.T) {
	w := lease.WorkerRecord{
		WorkerID:    "w1",
		Incarnation: "inc-1",
		Heartbeat:   42,
		State:       lease.WorkerActive,
		LeasesHeld:  3,
		LastSeen:    time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
		StartedAt:   time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	enc := encodeWorker(w)
	got, err := decodeWorker(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, w) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, w)
	}

	tests := []struct {
		name string
		item item
		want string
	}{
		{"worker_id missing", with(enc, attrWorkerID, nil), "worker_id: missing"},
		{"heartbeat string", with(enc, attrHeartbeat, strAV("1")), "heartbeat: is a string (S), expected an integer (N)"},
		{"heartbeat missing", with(enc, attrHeartbeat, nil), "heartbeat: missing"},
		{"state missing", with(enc, attrState, nil), "state: missing"},
		{"incarnation number", with(enc, attrIncarnation, numAV(1)), "incarnation: is a number (N)"},
		{"leases_held fraction", with(enc, attrLeasesHeld, &types.AttributeValueMemberN{Value: "2.5"}), "leases_held: is \"2.5\""},
		{"last_seen garbage", with(enc, attrLastSeen, strAV("noon")), `last_seen: is "noon", expected an RFC 3339 timestamp`},
		{"started_at missing", with(enc, attrStartedAt, nil), "started_at: missing"},
		{"newer version", with(enc, attrItemVersion, numAV(2)), "written by a newer version (itemVersion 2)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeWorker(tt.item)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCoordinatorCodec(t *testing.T) {
	c := lease.CoordinatorRecord{
		CoordinatorID:         "w1",
		Epoch:                 4,
		Version:               9,
		MaxLeasesPerWorker:    5,
		TargetLeasesPerWorker: 6,
		ShardCount:            10,
		WorkerCount:           2,
		LiveWorkers:           1,
		Cap:                   8,
		UnownedShards:         1,
		RecommendedWorkers:    3,
		LeaseGeneration:       12,
		UpdatedAt:             time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	enc := encodeCoordinator("app_coordinator", c)
	if v := enc[attrWorkerID].(*types.AttributeValueMemberS).Value; v != "app_coordinator" {
		t.Errorf("worker_id = %q", v)
	}
	got, err := decodeCoordinator(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
	}

	// No coordinator: absent attribute, and an empty string written by another tool.
	free := c
	free.CoordinatorID = ""
	enc2 := encodeCoordinator("k", free)
	if _, ok := enc2[attrCoordinatorID]; ok {
		t.Error("empty coordinator id was encoded")
	}
	for _, it := range []item{enc2, with(enc2, attrCoordinatorID, strAV(""))} {
		if got, err := decodeCoordinator(it); err != nil || got.CoordinatorID != "" {
			t.Errorf("decode free record = %+v, %v", got, err)
		}
	}

	tests := []struct {
		name string
		item item
		want string
	}{
		{"epoch missing", with(enc, attrEpoch, nil), "epoch: missing"},
		{"version string", with(enc, attrVersion, strAV("1")), "version: is a string (S)"},
		{"cap missing", with(enc, attrCap, nil), "cap: missing"},
		{"coordinator_id number", with(enc, attrCoordinatorID, numAV(1)), "coordinator_id: is a number (N)"},
		{"updated_at missing", with(enc, attrUpdatedAt, nil), "updated_at: missing"},
		{"lease_generation list", with(enc, attrLeaseGeneration, &types.AttributeValueMemberL{}), "lease_generation: is a list (L)"},
		{"newer version", with(enc, attrItemVersion, numAV(99)), "written by a newer version (itemVersion 99)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeCoordinator(tt.item)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestKeyForReport(t *testing.T) {
	tests := []struct {
		item item
		want string
	}{
		{item{attrLeaseKey: strAV("shard-1")}, "shard-1"},
		{item{}, "(item without leaseKey)"},
		{item{attrLeaseKey: numAV(3)}, "(item with leaseKey of type a number (N))"},
	}
	for _, tt := range tests {
		if got := keyForReport(tt.item, attrLeaseKey); got != tt.want {
			t.Errorf("keyForReport(%v) = %q, want %q", tt.item, got, tt.want)
		}
	}
}

func TestExprBuilder(t *testing.T) {
	e := newExpr()
	if e.attrNames() != nil || e.attrValues() != nil {
		t.Error("empty builder must return nil maps: DynamoDB rejects empty ones")
	}
	a, b := e.name("state"), e.name("state")
	if a != b {
		t.Errorf("same attribute got placeholders %q and %q", a, b)
	}
	if e.name("cap") == a {
		t.Error("different attributes share a placeholder")
	}
	if v1, v2 := e.value(numAV(1)), e.value(numAV(1)); v1 == v2 {
		t.Error("values share a placeholder")
	}
	if len(e.attrNames()) != 2 || len(e.attrValues()) != 2 {
		t.Errorf("names %v values %v", e.attrNames(), e.attrValues())
	}
}

func TestWrapErr(t *testing.T) {
	tests := []struct {
		code string
		want error
	}{
		{"ResourceNotFoundException", ErrTableNotFound},
		{"AccessDeniedException", ErrAccessDenied},
		{"ProvisionedThroughputExceededException", ErrThrottled},
		{"ThrottlingException", ErrThrottled},
		{"RequestLimitExceeded", ErrThrottled},
		{"ValidationException", nil},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			orig := &smithy.GenericAPIError{Code: tt.code, Message: "m"}
			err := wrapErr("GetItem", "tbl", orig)
			if !errors.Is(err, orig) {
				t.Error("original error lost")
			}
			if !strings.Contains(err.Error(), `"tbl"`) {
				t.Errorf("message %q does not name the table", err)
			}
			for _, s := range []error{ErrTableNotFound, ErrAccessDenied, ErrThrottled} {
				if errors.Is(err, s) != (s == tt.want) {
					t.Errorf("errors.Is(%v) = %v", s, !(s == tt.want))
				}
			}
		})
	}
}

func TestNewValidatesName(t *testing.T) {
	for _, app := range []string{"", "ab", "has space", strings.Repeat("a", 251)} {
		if _, err := New(nopClient{}, app); err == nil {
			t.Errorf("New(%q) accepted an invalid name", app)
		}
	}
	st, err := New(nopClient{}, "orders-app")
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaseTable() != "orders-app" || st.MetaTable() != "orders-app_meta" || st.CoordinatorKey() != "orders-app_coordinator" {
		t.Errorf("names: %q %q %q", st.LeaseTable(), st.MetaTable(), st.CoordinatorKey())
	}
}

// nopClient satisfies DynamoDB for tests that never call it.
type nopClient struct{ DynamoDB }
