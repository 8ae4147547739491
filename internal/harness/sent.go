package harness

import "fmt"

// RecordKey identifies a record in the stream.
type RecordKey struct{ Shard, Seq string }

// SentDelivery compares what a Producer sent with what the record logs show.
type SentDelivery struct {
	// Lost are the records sent but never processed.
	Lost []Sent
	// Duplicates counts the records processed more than once: (shard, seq) -> times.
	Duplicates map[RecordKey]int
	// Mismatched describes records processed with other content than sent.
	Mismatched []string
}

// CompareSent checks the deliveries against the records a Producer sent.
func CompareSent(sent []Sent, deliveries []Delivery) SentDelivery {
	seen := make(map[RecordKey][]Delivery, len(deliveries))
	for _, r := range deliveries {
		k := RecordKey{r.Shard, r.Seq}
		seen[k] = append(seen[k], r)
	}
	d := SentDelivery{Duplicates: map[RecordKey]int{}}
	for k, rs := range seen {
		if len(rs) > 1 {
			d.Duplicates[k] = len(rs)
		}
	}
	for _, s := range sent {
		rs, ok := seen[RecordKey{s.Shard, s.Seq}]
		if !ok {
			d.Lost = append(d.Lost, s)
			continue
		}
		if rs[0].PK != s.PK || rs[0].Data != s.Data {
			d.Mismatched = append(d.Mismatched, fmt.Sprintf("%s/%s: processed %s=%q, produced %s=%q", s.Shard, s.Seq, rs[0].PK, rs[0].Data, s.PK, s.Data))
		}
	}
	return d
}
