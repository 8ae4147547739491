package consumer

import (
	"io"
	"log/slog"
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/lease"
	"github.com/kds-lease-manager/kds-lease-manager/memstore"
)

// newTestBalancer returns a balancer alone, with cfg's defaults, on in-memory stores.
func newTestBalancer(t *testing.T, cfg Config) *balancer {
	t.Helper()
	if cfg.AppName == "" {
		cfg.AppName, cfg.WorkerID = "app", "w0"
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	leases := memstore.NewLeases()
	tn := newTenure(cfg.Clock, cfg.LeaseDuration, cfg.fenceMargin())
	corrupt := newCorruptLog(log)
	members := newMembership(memstore.NewMeta(), cfg.Clock, cfg.LeaseDuration, cfg.callTimeout(), cfg.viewStallAfter(), corrupt)
	running := newConsumerSet(&consumerEnv{cfg: &cfg, leases: leases, clock: cfg.Clock, tenure: tn,
		exits: make(chan consumerExit, 8)}, func(string) RecordProcessor { return nil }, log)
	return newBalancer(&cfg, leases, tn, members, corrupt, running, log)
}

// The target a worker obeys comes from the coordinator record, never beyond the worker's
// own cap and never negative, whatever the record says; without a record (and without a
// static maximum) it neither takes nor releases.
func TestTargetObeysTheRecordWithinTheCap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		rec       *lease.CoordinatorRecord
		want      int
		wantKnown bool
	}{
		{"no record yet", Config{}, nil, 0, false},
		{"record without a cap (not computed yet)", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 5}, 0, false},
		{"max leases", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, Cap: 80}, 10, true},
		{"target wins over max while workers are missing", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, TargetLeasesPerWorker: 15, Cap: 80}, 15, true},
		{"target above this worker's cap", Config{MaxLeasesCap: 12}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, TargetLeasesPerWorker: 100000, Cap: 100000}, 12, true},
		{"max above this worker's cap", Config{MaxLeasesCap: 12}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 5000, Cap: 100000}, 12, true},
		{"negative max means none", Config{}, &lease.CoordinatorRecord{MaxLeasesPerWorker: -3, Cap: 80}, 0, true},
		{"static maximum ignores the record", Config{DisableDynamicMaxLeases: true, StaticMaxLeases: 7}, &lease.CoordinatorRecord{MaxLeasesPerWorker: 10, Cap: 80}, 7, true},
		{"static maximum without a record", Config{DisableDynamicMaxLeases: true, StaticMaxLeases: 7}, nil, 7, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBalancer(t, tc.cfg)
			got, known := b.targetFrom(tc.rec)
			if got != tc.want || known != tc.wantKnown {
				t.Fatalf("targetFrom = %d, %v; want %d, %v", got, known, tc.want, tc.wantKnown)
			}
		})
	}
}
