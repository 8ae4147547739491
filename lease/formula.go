package lease

// DefaultCap is the default upper bound on leases per worker.
const DefaultCap = 80

// MaxLeasesPerWorker returns min(cap, ceil(shards / workers)). With no workers it returns
// the cap (a lone starting worker may take up to the cap), and with no shards zero.
func MaxLeasesPerWorker(shards, workers, cap int) int {
	if shards <= 0 {
		return 0
	}
	if workers <= 0 {
		return cap
	}
	return min(cap, (shards+workers-1)/workers)
}

// UnownedShards returns how many of shards stay unowned when workers each hold at most cap.
func UnownedShards(shards, workers, cap int) int {
	return max(0, shards-workers*cap)
}

// WorkersNeeded returns the smallest worker count for which no shard stays unowned.
func WorkersNeeded(shards, cap int) int {
	if shards <= 0 || cap <= 0 {
		return 0
	}
	return (shards + cap - 1) / cap
}
