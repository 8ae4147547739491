package kpl

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kds-lease-manager/kds-lease-manager/kpl/kplpb"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// fromNode is an aggregate written by the npm package aws-kinesis-agg 4.2.8 (the KPL
// format library for Node.js): user records (pk-a, "first"), (pk-b with explicit hash key
// 2^127, "second"), (pk-a, "third").
const fromNode = "f3899ac20a04706b2d610a04706b2d6212273137303134313138333436303436393233313733313638373330333731353838343130353732381a0908001a0566697273741a0c080110001a067365636f6e641a0908001a057468697264a69318bf1306823d6a4c9d622f11b2ef"

func record(data []byte) stream.Record {
	return stream.Record{SequenceNumber: "49590338271490256608559692538361571095921575989136588898", PartitionKey: "outer",
		Data: data, ApproximateArrivalTimestamp: time.Unix(1767322245, 0)}
}

func TestDeaggregateNodeAggregate(t *testing.T) {
	data, _ := hex.DecodeString(fromNode)
	r := record(data)
	got, err := Deaggregate(r)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		pk, ehk, data string
	}{{"pk-a", "", "first"}, {"pk-b", "170141183460469231731687303715884105728", "second"}, {"pk-a", "", "third"}}
	if len(got) != len(want) {
		t.Fatalf("got %d user records, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.PartitionKey != w.pk || g.ExplicitHashKey != w.ehk || string(g.Data) != w.data || g.SubSequenceNumber != int64(i) ||
			!g.Aggregated || g.SequenceNumber != r.SequenceNumber || !g.ApproximateArrivalTimestamp.Equal(r.ApproximateArrivalTimestamp) {
			t.Errorf("user record %d = %+v, want %+v at sub-sequence %d", i, g, w, i)
		}
	}
}

func TestDeaggregatePlainRecord(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("plain"), Magic[:3], append([]byte{0xF3, 0x89, 0x9A}, 0xC3)} {
		r := record(data)
		got, err := Deaggregate(r)
		if err != nil || len(got) != 1 || got[0].Aggregated || got[0].SubSequenceNumber != 0 || !bytes.Equal(got[0].Data, data) {
			t.Errorf("Deaggregate(%x) = %+v, %v; want the record itself", data, got, err)
		}
	}
}

func TestAggregateRoundTrip(t *testing.T) {
	users := []UserRecord{{PartitionKey: "a", Data: []byte("1")}, {PartitionKey: "b", ExplicitHashKey: "5", Data: nil},
		{PartitionKey: "a", ExplicitHashKey: "5", Data: []byte("3")}, {PartitionKey: "c", ExplicitHashKey: "7", Data: []byte("4")}}
	got, err := Deaggregate(record(Aggregate(users)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(users) {
		t.Fatalf("got %d user records, want %d", len(got), len(users))
	}
	for i, u := range users {
		if got[i].PartitionKey != u.PartitionKey || got[i].ExplicitHashKey != u.ExplicitHashKey || !bytes.Equal(got[i].Data, u.Data) ||
			got[i].Data == nil {
			t.Errorf("user record %d = %+v, want %+v", i, got[i], u)
		}
	}
	empty, err := Deaggregate(record(Aggregate(nil)))
	if err != nil || len(empty) != 0 {
		t.Errorf("an aggregate of no user records gave %v, %v; want none", empty, err)
	}
}

// withDigest frames protobuf bytes as an aggregate with a correct digest.
func withDigest(body []byte) []byte {
	sum := md5.Sum(body)
	return append(append(append([]byte{}, Magic...), body...), sum[:]...)
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMalformed: a record that only looks aggregated is reported as malformed, never
// split and never dropped by a caller that delivers it whole.
func TestMalformed(t *testing.T) {
	good := Aggregate([]UserRecord{{PartitionKey: "a", Data: []byte("1")}, {PartitionKey: "b", Data: []byte("2")}})
	badDigest := bytes.Clone(good)
	badDigest[len(badDigest)-1] ^= 1
	flipped := bytes.Clone(good)
	flipped[6] ^= 0x40
	cases := map[string][]byte{
		"bad md5":                 badDigest,
		"body changed":            flipped,
		"truncated":               good[:len(good)-5],
		"truncated to the prefix": good[:len(Magic)+3],
		"only the prefix":         bytes.Clone(Magic),
		"bad protobuf":            withDigest([]byte{0x1a, 0x7f, 0x01}),
		"wrong wire type":         withDigest([]byte{0x0b, 0x01}),
		"missing required data": withDigest(marshal(t, &kplpb.AggregatedRecord{PartitionKeyTable: []string{"a"},
			Records: []*kplpb.Record{{PartitionKeyIndex: proto.Uint64(0)}}})),
		"missing required partition key index": withDigest(marshal(t, &kplpb.AggregatedRecord{PartitionKeyTable: []string{"a"},
			Records: []*kplpb.Record{{Data: []byte("x")}}})),
		"partition key index out of range": withDigest(marshal(t, &kplpb.AggregatedRecord{PartitionKeyTable: []string{"a"},
			Records: []*kplpb.Record{{PartitionKeyIndex: proto.Uint64(1), Data: []byte("x")}}})),
		"explicit hash key index out of range": withDigest(marshal(t, &kplpb.AggregatedRecord{PartitionKeyTable: []string{"a"},
			ExplicitHashKeyTable: []string{"1"},
			Records:              []*kplpb.Record{{PartitionKeyIndex: proto.Uint64(0), ExplicitHashKeyIndex: proto.Uint64(1), Data: []byte("x")}}})),
		"explicit hash key not a number": withDigest(marshal(t, &kplpb.AggregatedRecord{PartitionKeyTable: []string{"a"},
			ExplicitHashKeyTable: []string{"0x10"},
			Records:              []*kplpb.Record{{PartitionKeyIndex: proto.Uint64(0), ExplicitHashKeyIndex: proto.Uint64(0), Data: []byte("x")}}})),
		"explicit hash key above 2^128-1": withDigest(marshal(t, &kplpb.AggregatedRecord{PartitionKeyTable: []string{"a"},
			ExplicitHashKeyTable: []string{"340282366920938463463374607431768211456"},
			Records:              []*kplpb.Record{{PartitionKeyIndex: proto.Uint64(0), ExplicitHashKeyIndex: proto.Uint64(0), Data: []byte("x")}}})),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Deaggregate(record(data))
			var me *MalformedError
			if !errors.As(err, &me) || got != nil {
				t.Fatalf("Deaggregate = %v, %v; want a *MalformedError", got, err)
			}
			if me.SequenceNumber != record(nil).SequenceNumber || me.Reason == "" {
				t.Errorf("error %+v does not name the record and the reason", me)
			}
		})
	}
}

func TestHashKeyRange(t *testing.T) {
	half := new(big.Int).Lsh(big.NewInt(1), 127)
	low, err := ParseHashKeyRange("0", new(big.Int).Sub(half, big.NewInt(1)).String())
	if err != nil {
		t.Fatal(err)
	}
	high, err := ParseHashKeyRange(half.String(), maxHashKey.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{{"", "1"}, {"1", ""}, {"2", "1"}, {"-1", "5"}, {"0", "340282366920938463463374607431768211456"}} {
		if _, err := ParseHashKeyRange(bad[0], bad[1]); !errors.Is(err, ErrNoHashKeyRange) {
			t.Errorf("ParseHashKeyRange(%q, %q) = %v, want ErrNoHashKeyRange", bad[0], bad[1], err)
		}
	}
	// "pk-0" hashes (MD5) into the upper half, "pk-a" into the lower one.
	pkHigh, pkLow := "pk-0", "pk-a"
	for _, pk := range []string{pkHigh, pkLow} {
		k, _ := EffectiveHashKey(stream.Record{PartitionKey: pk})
		if (k.Cmp(half) >= 0) != (pk == pkHigh) {
			t.Fatalf("test setup: MD5 of %q is %s", pk, k)
		}
	}
	agg := func(us ...UserRecord) []stream.Record {
		out, err := Deaggregate(record(Aggregate(us)))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	inHigh := agg(UserRecord{PartitionKey: pkHigh}, UserRecord{PartitionKey: pkLow, ExplicitHashKey: half.String()})
	if _, ok := high.Admits(inHigh); !ok {
		t.Error("an aggregate whose keys are all in the shard's range was not admitted")
	}
	if u, ok := low.Admits(inHigh); ok || u.SubSequenceNumber != 0 {
		t.Errorf("low.Admits = %+v, %v; want the first user record refused", u, ok)
	}
	mixed := agg(UserRecord{PartitionKey: pkHigh}, UserRecord{PartitionKey: pkHigh, ExplicitHashKey: "1"})
	if u, ok := high.Admits(mixed); ok || u.SubSequenceNumber != 1 {
		t.Errorf("high.Admits(mixed) = %+v, %v; want user record 1 refused (the KCL discards the whole aggregate)", u, ok)
	}
	plain := []stream.Record{{PartitionKey: pkLow}}
	if _, ok := high.Admits(plain); !ok {
		t.Error("a plain record was not admitted: Kinesis routed it by its own key")
	}
}
