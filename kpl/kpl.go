// Package kpl splits records written in the Kinesis Producer Library's aggregated record
// format into their user records, as the KCL does before its record processors see them.
//
// An aggregated Kinesis record is the 4 magic bytes F3 89 9A C2, a protobuf
// AggregatedRecord (package kplpb, generated from kplpb/kpl.proto by the official
// google.golang.org/protobuf tool chain: `make proto`) and the 16-byte MD5 digest of the
// protobuf bytes. Each user record keeps the Kinesis record's sequence number and arrival
// time and gets its partition key and explicit hash key from the aggregate's tables and
// its sub-sequence number from its place in the aggregate (0, 1, 2, ...); together the
// sequence and sub-sequence numbers order user records as the KCL's ExtendedSequenceNumber
// does. A record without the magic prefix is a plain record: sub-sequence number 0.
//
// A record that has the magic prefix but is not a valid aggregate (too short for the
// digest, a digest that does not match, protobuf that does not parse or lacks a required
// field, a partition or explicit hash key index outside its table, an explicit hash key
// that is not a decimal number below 2^128) is reported as a *MalformedError by
// Deaggregate: the caller delivers the Kinesis record whole, never drops it. The KCL too
// treats a record whose digest or protobuf is bad as a plain record.
//
// Out-of-range hash keys: a user record's effective hash key is its explicit hash key, or
// else the MD5 of its partition key (UTF-8) read as a 128-bit unsigned number, the hash
// Kinesis routes by. HashKeyRange.Admits does what the KCL's de-aggregation with a shard's
// hash key range does (AggregatorUtil.deaggregate(records, startingHashKey,
// endingHashKey)): when any user record of an aggregate falls outside the shard's range,
// the whole aggregate is discarded, none of its user records is delivered. Such an
// aggregate reached a shard whose range does not own its keys (typically one put by a KPL
// with a stale shard map around a reshard).
package kpl

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"math/big"

	"google.golang.org/protobuf/proto"

	"github.com/kds-lease-manager/kds-lease-manager/kpl/kplpb"
	"github.com/kds-lease-manager/kds-lease-manager/stream"
)

// Magic is the prefix of an aggregated record (KPL format 0.9.0 and later).
var Magic = []byte{0xF3, 0x89, 0x9A, 0xC2}

const digestSize = md5.Size

// maxHashKey is 2^128 - 1, the largest Kinesis hash key.
var maxHashKey = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))

// MalformedError says why a record with the magic prefix is not a valid aggregate.
type MalformedError struct {
	SequenceNumber string
	Reason         string
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("record %s looks aggregated (KPL magic prefix) but is not: %s", e.SequenceNumber, e.Reason)
}

// IsAggregated reports whether data starts with the aggregated record format's magic
// prefix. It does not check the rest.
func IsAggregated(data []byte) bool { return bytes.HasPrefix(data, Magic) }

// Deaggregate returns the user records of r: r itself (sub-sequence number 0, Aggregated
// false) when it is not aggregated, else one record per user record of the aggregate, in
// order (an aggregate of no user records gives none). An error is always a
// *MalformedError; the records are then nil and the caller should deliver r whole.
func Deaggregate(r stream.Record) ([]stream.Record, error) {
	if !IsAggregated(r.Data) {
		return []stream.Record{r}, nil
	}
	malformed := func(format string, args ...any) error {
		return &MalformedError{SequenceNumber: r.SequenceNumber, Reason: fmt.Sprintf(format, args...)}
	}
	if len(r.Data) < len(Magic)+digestSize {
		return nil, malformed("%d bytes, too short for the prefix and the MD5 digest", len(r.Data))
	}
	body := r.Data[len(Magic) : len(r.Data)-digestSize]
	sum := md5.Sum(body)
	if !bytes.Equal(sum[:], r.Data[len(r.Data)-digestSize:]) {
		return nil, malformed("MD5 digest does not match")
	}
	var agg kplpb.AggregatedRecord
	if err := proto.Unmarshal(body, &agg); err != nil {
		return nil, malformed("protobuf: %v", err)
	}
	pks, ehks := agg.GetPartitionKeyTable(), agg.GetExplicitHashKeyTable()
	for i, ehk := range ehks {
		if _, err := parseHashKey(ehk); err != nil {
			return nil, malformed("explicit hash key %d: %v", i, err)
		}
	}
	out := make([]stream.Record, 0, len(agg.GetRecords()))
	for i, ur := range agg.GetRecords() {
		pki := ur.GetPartitionKeyIndex()
		if pki >= uint64(len(pks)) {
			return nil, malformed("user record %d: partition key index %d outside the table of %d", i, pki, len(pks))
		}
		rec := stream.Record{
			SequenceNumber:              r.SequenceNumber,
			SubSequenceNumber:           int64(i),
			PartitionKey:                pks[pki],
			Data:                        ur.GetData(),
			ApproximateArrivalTimestamp: r.ApproximateArrivalTimestamp,
			Aggregated:                  true,
		}
		if ur.ExplicitHashKeyIndex != nil {
			ehki := ur.GetExplicitHashKeyIndex()
			if ehki >= uint64(len(ehks)) {
				return nil, malformed("user record %d: explicit hash key index %d outside the table of %d", i, ehki, len(ehks))
			}
			rec.ExplicitHashKey = ehks[ehki]
		}
		if rec.Data == nil {
			rec.Data = []byte{}
		}
		out = append(out, rec)
	}
	return out, nil
}

// parseHashKey parses a hash key: a decimal number in [0, 2^128).
func parseHashKey(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Sign() < 0 || n.Cmp(maxHashKey) > 0 {
		return nil, fmt.Errorf("%q is not a decimal number in [0, 2^128)", s)
	}
	return n, nil
}

// EffectiveHashKey is the hash key Kinesis routes a user record by: its explicit hash key,
// or else the MD5 digest of its partition key read as a 128-bit unsigned number.
func EffectiveHashKey(rec stream.Record) (*big.Int, error) {
	if rec.ExplicitHashKey != "" {
		return parseHashKey(rec.ExplicitHashKey)
	}
	sum := md5.Sum([]byte(rec.PartitionKey))
	return new(big.Int).SetBytes(sum[:]), nil
}

// HashKeyRange is a shard's range of hash keys, both ends included.
type HashKeyRange struct {
	Start, End *big.Int
}

// ErrNoHashKeyRange means a shard's hash key range is unknown or not a pair of numbers.
var ErrNoHashKeyRange = errors.New("no valid hash key range")

// ParseHashKeyRange parses a shard's starting and ending hash keys as Kinesis returns them
// (decimal strings).
func ParseHashKeyRange(start, end string) (HashKeyRange, error) {
	s, err := parseHashKey(start)
	if err != nil {
		return HashKeyRange{}, fmt.Errorf("%w: starting hash key: %v", ErrNoHashKeyRange, err)
	}
	e, err := parseHashKey(end)
	if err != nil {
		return HashKeyRange{}, fmt.Errorf("%w: ending hash key: %v", ErrNoHashKeyRange, err)
	}
	if s.Cmp(e) > 0 {
		return HashKeyRange{}, fmt.Errorf("%w: starting hash key %s after ending hash key %s", ErrNoHashKeyRange, start, end)
	}
	return HashKeyRange{Start: s, End: e}, nil
}

// Contains reports whether the hash key k is in the range.
func (h HashKeyRange) Contains(k *big.Int) bool {
	return k.Cmp(h.Start) >= 0 && k.Cmp(h.End) <= 0
}

// Admits reports whether the user records of one aggregate (as Deaggregate returned them)
// may be delivered from a shard with this hash key range: only when every one's effective
// hash key is in the range, as the KCL decides. It returns the first user record outside
// the range otherwise. Plain records are always admitted: Kinesis put them on the shard
// by their own key.
func (h HashKeyRange) Admits(users []stream.Record) (stream.Record, bool) {
	for _, u := range users {
		if !u.Aggregated {
			continue
		}
		k, err := EffectiveHashKey(u)
		if err != nil || !h.Contains(k) {
			return u, false
		}
	}
	return stream.Record{}, true
}

// UserRecord is one record for Aggregate.
type UserRecord struct {
	PartitionKey    string
	ExplicitHashKey string // optional
	Data            []byte
}

// Aggregate encodes user records in the aggregated record format (magic prefix,
// protobuf, MD5 digest), with the partition and explicit hash keys in tables as the KPL
// writes them. The consumer does not need it; producers and tests do.
func Aggregate(users []UserRecord) []byte {
	var agg kplpb.AggregatedRecord
	pkIndex, ehkIndex := map[string]uint64{}, map[string]uint64{}
	for _, u := range users {
		pki, ok := pkIndex[u.PartitionKey]
		if !ok {
			pki = uint64(len(agg.PartitionKeyTable))
			pkIndex[u.PartitionKey] = pki
			agg.PartitionKeyTable = append(agg.PartitionKeyTable, u.PartitionKey)
		}
		rec := &kplpb.Record{PartitionKeyIndex: proto.Uint64(pki), Data: append([]byte{}, u.Data...)}
		if u.ExplicitHashKey != "" {
			ehki, ok := ehkIndex[u.ExplicitHashKey]
			if !ok {
				ehki = uint64(len(agg.ExplicitHashKeyTable))
				ehkIndex[u.ExplicitHashKey] = ehki
				agg.ExplicitHashKeyTable = append(agg.ExplicitHashKeyTable, u.ExplicitHashKey)
			}
			rec.ExplicitHashKeyIndex = proto.Uint64(ehki)
		}
		agg.Records = append(agg.Records, rec)
	}
	body, err := proto.Marshal(&agg)
	if err != nil {
		panic("kpl: marshal AggregatedRecord: " + err.Error()) // Every required field is set.
	}
	sum := md5.Sum(body)
	out := make([]byte, 0, len(Magic)+len(body)+len(sum))
	out = append(out, Magic...)
	out = append(out, body...)
	return append(out, sum[:]...)
}
