package lease

import "testing"

func TestExtendedSequenceNumberCompare(t *testing.T) {
	order := []ExtendedSequenceNumber{{"9", 0}, {"10", 0}, {"10", 1}, {"10", 12}, {"000000000000000000011", 0}, {"99999999999999999999999", 0}}
	for i := range order {
		for j := range order {
			got, ok := order[i].Compare(order[j])
			if !ok || (i < j) != (got < 0) || (i == j) != (got == 0) || (i > j) != (got > 0) {
				t.Errorf("%v.Compare(%v) = %d, %v", order[i], order[j], got, ok)
			}
		}
	}
	for _, s := range []string{"", TrimHorizon, Latest, AtTimestamp, ShardEnd, "-1", "+1", "x", "1.5"} {
		e := ExtendedSequenceNumber{SequenceNumber: s}
		if _, ok := e.Compare(order[0]); ok {
			t.Errorf("%q.Compare(9) is ordered", s)
		}
		if _, ok := order[0].Compare(e); ok {
			t.Errorf("9.Compare(%q) is ordered", s)
		}
	}
}

func TestExtendedSequenceNumberString(t *testing.T) {
	for _, tc := range []struct {
		e    ExtendedSequenceNumber
		want string
	}{{ExtendedSequenceNumber{"123", 0}, "123"}, {ExtendedSequenceNumber{"123", 4}, "123 sub-sequence 4"}, {ExtendedSequenceNumber{TrimHorizon, 0}, TrimHorizon}} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	if !(ExtendedSequenceNumber{}).IsZero() || (ExtendedSequenceNumber{SequenceNumber: "1"}).IsZero() {
		t.Error("IsZero")
	}
}
