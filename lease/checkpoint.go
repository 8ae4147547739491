package lease

import (
	"cmp"
	"math/big"
	"strconv"
)

// ExtendedSequenceNumber is a checkpoint as the KCL's ExtendedSequenceNumber has it: how
// far a shard was processed. It is what LeaseStore.Checkpoint and ReleaseLease write
// into a lease (Lease.Checkpoint and Lease.CheckpointSubSequence; DynamoDB stores
// checkpoint and checkpointSubSequenceNumber) and what a consumer's Checkpointer keeps.
//
// Not to be confused with stream.Position, where a shard iterator starts: a consumer
// resumes at the stream position AT_SEQUENCE_NUMBER of SequenceNumber and drops the user
// records at or before the ExtendedSequenceNumber.
//
// The zero value is no checkpoint: ReleaseLease leaves the lease's checkpoint as it is.
type ExtendedSequenceNumber struct {
	// SequenceNumber is a Kinesis sequence number, or TrimHorizon, Latest, AtTimestamp
	// or ShardEnd.
	SequenceNumber string
	// SubSequenceNumber is, with a sequence number, the sub-sequence number of the last
	// user record processed of a KPL aggregate (package kpl): everything up to and
	// including it was processed. 0 for a plain record (and for the first user record of
	// an aggregate, which resumes the same way).
	SubSequenceNumber int64
}

// IsZero reports whether e is no checkpoint (no sequence number or special value).
func (e ExtendedSequenceNumber) IsZero() bool { return e.SequenceNumber == "" }

// String returns e for people: the sequence number, followed by the sub-sequence number
// when it is not 0. Nothing parses it.
func (e ExtendedSequenceNumber) String() string {
	if e.SubSequenceNumber == 0 {
		return e.SequenceNumber
	}
	return e.SequenceNumber + " sub-sequence " + strconv.FormatInt(e.SubSequenceNumber, 10)
}

// Compare orders e and o like the KCL's ExtendedSequenceNumber: by sequence number as a
// number, then by sub-sequence number. It returns -1, 0 or +1, with ok true, when both
// are sequence numbers (ParseSequenceNumber); ok is false when either is a special value
// (TrimHorizon, Latest, AtTimestamp, ShardEnd), empty, or not a number: those are not
// ordered here, and each caller decides what they mean.
func (e ExtendedSequenceNumber) Compare(o ExtendedSequenceNumber) (c int, ok bool) {
	a, oka := ParseSequenceNumber(e.SequenceNumber)
	b, okb := ParseSequenceNumber(o.SequenceNumber)
	if !oka || !okb {
		return 0, false
	}
	if c := a.Cmp(b); c != 0 {
		return c, true
	}
	return cmp.Compare(e.SubSequenceNumber, o.SubSequenceNumber), true
}

// ParseSequenceNumber parses a Kinesis sequence number: a non-negative decimal number
// (without a sign). Special values are not sequence numbers.
func ParseSequenceNumber(seq string) (*big.Int, bool) {
	n, ok := new(big.Int).SetString(seq, 10)
	if !ok || n.Sign() < 0 || seq[0] == '+' {
		return nil, false
	}
	return n, true
}
