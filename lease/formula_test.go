package lease

import "testing"

func TestMaxLeasesPerWorker(t *testing.T) {
	tests := []struct {
		shards, workers, cap int
		want, unowned, need  int
	}{
		{30, 3, 80, 10, 0, 1},
		{60, 3, 80, 20, 0, 1},
		{30, 5, 80, 6, 0, 1},
		{300, 3, 80, 80, 60, 4},
		{100, 5, 80, 20, 0, 2},
		{31, 3, 80, 11, 0, 1},
		{0, 3, 80, 0, 0, 0},
		{10, 0, 80, 80, 10, 1},
		{30, 3, 5, 5, 15, 6},
	}
	for _, tc := range tests {
		if got := MaxLeasesPerWorker(tc.shards, tc.workers, tc.cap); got != tc.want {
			t.Errorf("MaxLeasesPerWorker(%d, %d, %d) = %d, want %d", tc.shards, tc.workers, tc.cap, got, tc.want)
		}
		if got := UnownedShards(tc.shards, tc.workers, tc.cap); got != tc.unowned {
			t.Errorf("UnownedShards(%d, %d, %d) = %d, want %d", tc.shards, tc.workers, tc.cap, got, tc.unowned)
		}
		if got := WorkersNeeded(tc.shards, tc.cap); got != tc.need {
			t.Errorf("WorkersNeeded(%d, %d) = %d, want %d", tc.shards, tc.cap, got, tc.need)
		}
	}
}
