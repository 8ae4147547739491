package dynamostore

import (
	"encoding/binary"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// fuzzAttrs are the attribute names the decoders read, plus one they do not.
var fuzzAttrs = []string{
	attrItemVersion, attrLeaseKey, attrLeaseOwner, attrLeaseCounter, attrCheckpoint, attrCheckpointSub, attrMillisBehind,
	attrStartTimestamp, attrParentShardID, attrWorkerID, attrIncarnation, attrHeartbeat, attrState,
	attrLeasesHeld, attrLastSeen, attrStartedAt, attrCoordinatorID, attrEpoch, attrVersion, attrMaxLeases,
	attrTargetLeases, attrShardCount, attrWorkerCount, attrLiveWorkers, attrCap, attrUnownedShards,
	attrRecommendedWorkers, attrLeaseGeneration, attrUpdatedAt, "unknown",
	attrLegacyParents, attrChildShardIDs, attrOwnerSwitches, attrStartingHashKey, attrEndingHashKey, attrStreamName,
}

// itemFromBytes builds an attribute map from fuzz bytes: a sequence of (attribute,
// type, length-prefixed value) triples. Every DynamoDB type can appear under every name.
func itemFromBytes(data []byte) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{}
	for len(data) >= 3 {
		name := fuzzAttrs[int(data[0])%len(fuzzAttrs)]
		kind := data[1]
		n := min(int(data[2]), len(data)-3)
		val := string(data[3 : 3+n])
		data = data[3+n:]
		var v types.AttributeValue
		switch kind % 10 {
		case 0:
			v = &types.AttributeValueMemberS{Value: val}
		case 1:
			v = &types.AttributeValueMemberN{Value: val}
		case 2:
			v = &types.AttributeValueMemberB{Value: []byte(val)}
		case 3:
			v = &types.AttributeValueMemberBOOL{Value: n%2 == 0}
		case 4:
			v = &types.AttributeValueMemberNULL{Value: true}
		case 5:
			v = &types.AttributeValueMemberSS{Value: strings.Split(val, ",")}
		case 6:
			v = &types.AttributeValueMemberNS{Value: strings.Split(val, ",")}
		case 7:
			var l []types.AttributeValue
			for _, p := range strings.Split(val, ",") {
				if strings.HasPrefix(p, "#") {
					l = append(l, &types.AttributeValueMemberN{Value: p[1:]})
				} else {
					l = append(l, &types.AttributeValueMemberS{Value: p})
				}
			}
			v = &types.AttributeValueMemberL{Value: l}
		case 8:
			v = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{val: &types.AttributeValueMemberS{Value: val}}}
		case 9:
			v = nil // an interface holding no value, as a broken client could produce
		}
		item[name] = v
	}
	return item
}

// The decoders never panic on any item, and whatever they accept is sane: a decoded
// coordinator record never has negative values or a maximum above its cap.
func FuzzDecodeItem(f *testing.F) {
	for _, it := range []map[string]types.AttributeValue{
		encodeLease(lease.Lease{ShardID: "s", Owner: "w", Epoch: 3, Checkpoint: "12", ParentShardIDs: []string{"p"}, MillisBehindLatest: 5, StartTimestamp: time.UnixMilli(1)}),
		encodeWorker(lease.WorkerRecord{WorkerID: "w", Incarnation: "i", Heartbeat: 2, State: lease.WorkerActive, LastSeen: time.Unix(1, 0), StartedAt: time.Unix(2, 0)}),
		encodeCoordinator("app_coordinator", lease.CoordinatorRecord{CoordinatorID: "w", Epoch: 1, MaxLeasesPerWorker: 3, Cap: 80, ShardCount: 6}),
	} {
		f.Add(bytesFromItem(it))
	}
	f.Add([]byte{18, 1, 2, '-', '5', 23, 1, 2, '8', '0'})
	f.Fuzz(func(t *testing.T, data []byte) {
		item := itemFromBytes(data)
		if l, err := decodeLease(item); err == nil && (l.ShardID == "" || l.Checkpoint == "") {
			t.Fatalf("lease without key or checkpoint accepted: %+v", l)
		}
		if w, err := decodeWorker(item); err == nil && (w.WorkerID == "" || w.State == "") {
			t.Fatalf("worker without id or state accepted: %+v", w)
		}
		c, err := decodeCoordinator(item)
		if err != nil {
			return
		}
		if c.MaxLeasesPerWorker < 0 || c.TargetLeasesPerWorker < 0 || c.Cap < 0 || c.ShardCount < 0 || c.WorkerCount < 0 ||
			c.LiveWorkers < 0 || c.UnownedShards < 0 || c.RecommendedWorkers < 0 ||
			c.MaxLeasesPerWorker > c.Cap || c.TargetLeasesPerWorker > c.Cap {
			t.Fatalf("nonsense coordinator values accepted: %+v", c)
		}
	})
}

// bytesFromItem is the inverse of itemFromBytes for S, N and SS attributes (seeds).
func bytesFromItem(item map[string]types.AttributeValue) []byte {
	var out []byte
	for name, v := range item {
		idx := slices.Index(fuzzAttrs, name)
		var kind byte
		var val string
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			kind, val = 0, v.Value
		case *types.AttributeValueMemberN:
			kind, val = 1, v.Value
		case *types.AttributeValueMemberSS:
			kind, val = 5, strings.Join(v.Value, ",")
		default:
			continue
		}
		out = append(out, byte(idx), kind, byte(len(val)))
		out = append(out, val...)
	}
	return out
}

// Valid leases round-trip exactly through their item.
func FuzzLeaseRoundTrip(f *testing.F) {
	f.Add("shardId-000000000001", "w-1", int64(3), "49590338271490256608559692538361571095921575989136588898", int64(4), int64(1700000000000), "shardId-0,shardId-1", int64(250), "", "", "")
	f.Add("s", "", int64(0), lease.TrimHorizon, int64(0), int64(0), "", int64(0), "", "", "")
	f.Add("shardId-000000000000", "", int64(9), lease.ShardEnd, int64(0), int64(0), "", int64(0), "shardId-2,shardId-3", "0", "340282366920938463463374607431768211455")
	f.Fuzz(func(t *testing.T, shard, owner string, counter int64, checkpoint string, sub, startMs int64, parents string, behind int64, children, startKey, endKey string) {
		if shard == "" || checkpoint == "" {
			shard, checkpoint = "k"+shard, "c"+checkpoint // the decoder requires both
		}
		in := lease.Lease{ShardID: shard, Owner: owner, Epoch: counter, Checkpoint: checkpoint, CheckpointSubSequence: max(sub, 0)}
		if startMs != 0 {
			in.StartTimestamp = time.UnixMilli(startMs).UTC()
		}
		if behind > 0 {
			in.MillisBehindLatest = behind
		}
		in.ParentShardIDs, in.ChildShardIDs = stringSet(parents), stringSet(children)
		if startKey != "" && endKey != "" {
			in.StartingHashKey, in.EndingHashKey = startKey, endKey
		}
		got, err := decodeLease(encodeLease(in))
		if err != nil {
			t.Fatalf("decode of an encoded lease failed: %v (%+v)", err, in)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, in)
		}
	})
}

// stringSet is a comma-separated list as a string set reads back: sorted, without
// duplicates, nil when empty.
func stringSet(list string) []string {
	if list == "" {
		return nil
	}
	ids := strings.Split(list, ",")
	slices.Sort(ids)
	return slices.Compact(ids)
}

// Valid worker records round-trip exactly.
func FuzzWorkerRoundTrip(f *testing.F) {
	f.Add("w-1", "abcdef", int64(7), "active", int32(3), int64(1700000000123456789), int64(1600000000000000000))
	f.Fuzz(func(t *testing.T, id, inc string, hb int64, state string, held int32, seen, started int64) {
		in := lease.WorkerRecord{WorkerID: "w" + id, Incarnation: inc, Heartbeat: hb, State: lease.WorkerState("s" + state),
			LeasesHeld: int(held), LastSeen: time.Unix(0, seen).UTC(), StartedAt: time.Unix(0, started).UTC()}
		got, err := decodeWorker(encodeWorker(in))
		if err != nil {
			t.Fatalf("decode of an encoded worker failed: %v (%+v)", err, in)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, in)
		}
	})
}

// Coordinator records round-trip exactly when their values are possible; impossible
// values (negative, a maximum above the cap) come back unknown (all zero) with the
// role's identity intact, so the coordinator rewrites them.
func FuzzCoordinatorRoundTrip(f *testing.F) {
	f.Add("w-1", int64(2), int64(5), []byte{10, 10, 30, 3, 3, 80, 0, 1}, int64(4), int64(1700000000123456789))
	f.Add("", int64(1), int64(0), []byte{0xff, 0, 0, 0, 0, 0, 0, 0}, int64(0), int64(0))
	f.Fuzz(func(t *testing.T, id string, epoch, version int64, vals []byte, gen, updated int64) {
		v := func(i int) int {
			if i+2 > len(vals) {
				return 0
			}
			return int(int16(binary.BigEndian.Uint16(vals[i:])))
		}
		in := lease.CoordinatorRecord{CoordinatorID: id, Epoch: epoch, Version: version,
			MaxLeasesPerWorker: v(0), TargetLeasesPerWorker: v(2), ShardCount: v(4), WorkerCount: v(6),
			LiveWorkers: v(8), Cap: v(10), UnownedShards: v(12), RecommendedWorkers: v(14),
			LeaseGeneration: gen, UpdatedAt: time.Unix(0, updated).UTC()}
		got, err := decodeCoordinator(encodeCoordinator("app_coordinator", in))
		if err != nil {
			t.Fatalf("decode of an encoded coordinator failed: %v (%+v)", err, in)
		}
		possible := in.MaxLeasesPerWorker >= 0 && in.TargetLeasesPerWorker >= 0 && in.ShardCount >= 0 && in.WorkerCount >= 0 &&
			in.LiveWorkers >= 0 && in.Cap >= 0 && in.UnownedShards >= 0 && in.RecommendedWorkers >= 0 &&
			in.MaxLeasesPerWorker <= in.Cap && in.TargetLeasesPerWorker <= in.Cap && in.UnownedShards <= in.ShardCount
		want := in
		if !possible {
			want = lease.CoordinatorRecord{CoordinatorID: in.CoordinatorID, Epoch: in.Epoch, Version: in.Version,
				LeaseGeneration: in.LeaseGeneration, UpdatedAt: in.UpdatedAt}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("possible=%v:\n got %+v\nwant %+v", possible, got, want)
		}
	})
}

// Hand-edited policy values: a string, a fraction, a negative number, a maximum above
// the cap, a target of 100000. Each decodes as "values unknown" (cap 0: workers keep the
// values they last obeyed) with the coordinator's id and epoch intact, so the role can
// still be claimed and the coordinator rewrites the values.
func TestCoordinatorWithImpossibleValuesDecodesAsUnknown(t *testing.T) {
	good := lease.CoordinatorRecord{CoordinatorID: "w1", Epoch: 4, Version: 9, MaxLeasesPerWorker: 10,
		TargetLeasesPerWorker: 10, ShardCount: 30, WorkerCount: 3, LiveWorkers: 3, Cap: 80, RecommendedWorkers: 1,
		LeaseGeneration: 2, UpdatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}
	enc := encodeCoordinator("app_coordinator", good)
	n := func(i int) types.AttributeValue { return numAV(int64(i)) }
	for name, it := range map[string]item{
		"max as a string":      with(enc, attrMaxLeases, strAV("10")),
		"max a fraction":       with(enc, attrMaxLeases, &types.AttributeValueMemberN{Value: "2.5"}),
		"max negative":         with(enc, attrMaxLeases, n(-3)),
		"max above the cap":    with(enc, attrMaxLeases, n(81)),
		"target 100000":        with(enc, attrTargetLeases, n(100000)),
		"target negative":      with(enc, attrTargetLeases, n(-1)),
		"cap negative":         with(enc, attrCap, n(-80)),
		"worker_count huge":    with(enc, attrWorkerCount, &types.AttributeValueMemberN{Value: strconv.Itoa(1 << 40)}),
		"shard_count negative": with(enc, attrShardCount, n(-1)),
		"unowned above shards": with(enc, attrUnownedShards, n(31)),
	} {
		got, err := decodeCoordinator(it)
		if err != nil {
			t.Errorf("%s: %v, want the item decoded with unknown values", name, err)
			continue
		}
		if got.Cap != 0 || got.MaxLeasesPerWorker != 0 || got.TargetLeasesPerWorker != 0 || got.ShardCount != 0 {
			t.Errorf("%s: values %+v, want all unknown (zero)", name, got)
		}
		if got.CoordinatorID != "w1" || got.Epoch != 4 || got.Version != 9 || got.LeaseGeneration != 2 {
			t.Errorf("%s: identity %+v lost", name, got)
		}
	}
	// Possible values, including shard_count 0 and worker_count 0, decode as written.
	zero := good
	zero.ShardCount, zero.WorkerCount = 0, 0
	if got, err := decodeCoordinator(encodeCoordinator("k", zero)); err != nil || !reflect.DeepEqual(got, zero) {
		t.Errorf("possible values: %+v, %v", got, err)
	}
}
