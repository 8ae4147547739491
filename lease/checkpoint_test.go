package lease

import "testing"

func TestJoinSplitCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		seq string
		sub int64
		v   string
	}{{"123", 0, "123"}, {"123", 4, "123:4"}, {TrimHorizon, 0, TrimHorizon}, {ShardEnd, 0, ShardEnd}} {
		if got := JoinCheckpoint(tc.seq, tc.sub); got != tc.v {
			t.Errorf("JoinCheckpoint(%q, %d) = %q, want %q", tc.seq, tc.sub, got, tc.v)
		}
		if seq, sub := SplitCheckpoint(tc.v); seq != tc.seq || sub != tc.sub {
			t.Errorf("SplitCheckpoint(%q) = %q, %d", tc.v, seq, sub)
		}
	}
	for _, v := range []string{":4", "1:-4", "1:+4", "1:x", "1:", "1:99999999999999999999"} {
		if seq, sub := SplitCheckpoint(v); seq != v || sub != 0 {
			t.Errorf("SplitCheckpoint(%q) = %q, %d; want it whole with sub-sequence 0", v, seq, sub)
		}
	}
}
