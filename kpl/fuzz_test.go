package kpl

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// FuzzDeaggregate: any bytes either pass through as a plain record, split into user
// records that aggregate back to the same user records, or are reported as malformed;
// never a panic.
func FuzzDeaggregate(f *testing.F) {
	good := Aggregate([]UserRecord{{PartitionKey: "a", Data: []byte("1")}, {PartitionKey: "b", ExplicitHashKey: "42", Data: []byte("2")}})
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(Aggregate(nil))
	f.Add([]byte("plain"))
	f.Add(bytes.Clone(Magic))
	f.Add(withDigest([]byte{0x1a, 0x7f, 0x01}))
	f.Add(withDigest([]byte{0x0a, 0x01, 'a', 0x1a, 0x04, 0x08, 0x00, 0x1a, 0x00}))
	f.Add(withDigest([]byte{0x0a, 0x01, 'a', 0x12, 0x01, '7', 0x1a, 0x06, 0x08, 0x00, 0x10, 0x05, 0x1a, 0x00}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := stream.Record{SequenceNumber: "7", PartitionKey: "outer", Data: data}
		got, err := Deaggregate(r)
		if err != nil {
			var me *MalformedError
			if !errors.As(err, &me) || !IsAggregated(data) || got != nil {
				t.Fatalf("error %v (%T) for %x with %d records", err, err, data, len(got))
			}
			return
		}
		if !IsAggregated(data) {
			if len(got) != 1 || got[0].Aggregated || !bytes.Equal(got[0].Data, data) {
				t.Fatalf("a plain record came back as %+v", got)
			}
			return
		}
		users := make([]UserRecord, len(got))
		for i, u := range got {
			if !u.Aggregated || u.SubSequenceNumber != int64(i) || u.SequenceNumber != "7" || u.Data == nil {
				t.Fatalf("user record %d = %+v", i, u)
			}
			if _, err := EffectiveHashKey(u); err != nil {
				t.Fatalf("user record %d has a bad explicit hash key: %v", i, err)
			}
			users[i] = UserRecord{PartitionKey: u.PartitionKey, ExplicitHashKey: u.ExplicitHashKey, Data: u.Data}
		}
		again, err := Deaggregate(stream.Record{SequenceNumber: "7", Data: Aggregate(users)})
		if err != nil || len(again) != len(got) {
			t.Fatalf("re-aggregated: %d records, %v; want %d", len(again), err, len(got))
		}
		for i := range got {
			if again[i].PartitionKey != got[i].PartitionKey || again[i].ExplicitHashKey != got[i].ExplicitHashKey ||
				!bytes.Equal(again[i].Data, got[i].Data) {
				t.Fatalf("user record %d changed: %+v, then %+v", i, got[i], again[i])
			}
		}
	})
}
