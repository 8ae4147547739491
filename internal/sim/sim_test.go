package sim

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// ciSeeds is the default seed count: sized so that `go test -race ./internal/sim`
// stays under about three minutes on two cores.
const ciSeeds = 500

var (
	flagSeeds    = flag.Int("sim.seeds", ciSeeds, "number of seeds to simulate")
	flagStart    = flag.Uint64("sim.start", 1, "first seed")
	flagSeed     = flag.Int64("sim.seed", -1, "simulate this one seed only, with the workers' logs")
	flagSize     = flag.String("sim.size", "small", "scenario size: small (up to 4 workers, 6 shards) or full (up to 6 workers, 16 shards, 240s of faults)")
	flagMax      = flag.Int("sim.show", 12, "violations printed per failing seed")
	flagAttempts = flag.Int("sim.attempts", 20, "with -sim.seed: attempts until the seed reports violations")
	flagKind     = flag.String("sim.kind", "", "with -sim.seed: attempt until a violation of this kind (default any)")
)

type summary struct {
	mu       sync.Mutex
	seeds    int
	failed   []uint64
	virtual  time.Duration
	deleted  int // finished leases deleted by the coordinators' cleanup
	byKind   map[string]int
	seedKind map[string][]uint64
}

func (s *summary) add(seed uint64, l *Log, vs []Violation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seeds++
	s.virtual += l.End
	for _, w := range l.Writes {
		if w.Op == OpDelete {
			s.deleted++
		}
	}
	for _, v := range vs {
		if !informational(v.Kind) {
			s.failed = append(s.failed, seed)
			break
		}
	}
	kinds := map[string]bool{}
	for _, v := range vs {
		s.byKind[v.Kind]++
		if !kinds[v.Kind] {
			kinds[v.Kind] = true
			s.seedKind[v.Kind] = append(s.seedKind[v.Kind], seed)
		}
	}
}

func (s *summary) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "sim: %d seeds, %s virtual time, %d finished leases deleted by cleanup, %d seeds with violations",
		s.seeds, s.virtual.Round(time.Second), s.deleted, len(s.failed))
	kinds := make([]string, 0, len(s.byKind))
	for k := range s.byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		seeds := s.seedKind[k]
		sort.Slice(seeds, func(i, j int) bool { return seeds[i] < seeds[j] })
		ex := seeds[:min(5, len(seeds))]
		note := ""
		if informational(k) {
			note = " (informational: decided while valid, held by a pause; fenced by Epoch)"
		}
		fmt.Fprintf(&b, "\n  %-24s %5d violations in %4d seeds, e.g. seeds %v%s", k, s.byKind[k], len(seeds), ex, note)
	}
	return b.String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSimulate runs the real consumer.Worker through seeded fault scenarios and checks
// the invariants. Violations found in the library fail the test; each failing seed
// prints the command that reruns it.
func TestSimulate(t *testing.T) {
	sum := &summary{byKind: map[string]int{}, seedKind: map[string][]uint64{}}
	if *flagSeed >= 0 {
		runOne(t, uint64(*flagSeed), sum)
		t.Log(sum)
		return
	}
	size := sizeFlag(t)
	t.Run("seeds", func(t *testing.T) {
		for i := range *flagSeeds {
			seed := *flagStart + uint64(i)
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					l := Run(Generate(seed, size), Options{})
					vs := CheckAll(l)
					sum.add(seed, l, vs)
					report(t, seed, l, vs, *flagMax)
				})
			})
		}
	})
	// Always printed: seeds run, virtual time covered and violations by kind are the
	// result of a run, pass or fail.
	fmt.Println(sum)
}

// runOne runs one seed with the workers' logs. Goroutines that run at the same virtual
// instant are not ordered by the seed (nor is the library's back-off jitter), so a seed
// that failed in a batch may need a few attempts to fail again: it is run up to
// -sim.attempts times until it reports violations, and the logs of that attempt (or of
// the last one) are printed.
func runOne(t *testing.T, seed uint64, sum *summary) {
	size := sizeFlag(t)
	sc := Generate(seed, size)
	t.Log(sc)
	var (
		l    *Log
		vs   []Violation
		logs bytes.Buffer
	)
	for attempt := 1; attempt <= *flagAttempts; attempt++ {
		logs.Reset()
		synctest.Test(t, func(t *testing.T) {
			opts := Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			l = Run(sc, opts)
		})
		vs = CheckAll(l)
		if hasKind(vs, *flagKind) {
			t.Logf("attempt %d of %d reported violations", attempt, *flagAttempts)
			break
		}
	}
	t.Log("worker logs:\n" + logs.String())
	for _, f := range l.Faults {
		t.Logf("fault t=%s: %s", fmtDur(f.At), f.What)
	}
	sum.add(seed, l, vs)
	shown := map[string]bool{}
	for _, v := range vs {
		if v.Shard == "" || shown[v.Shard] {
			continue
		}
		shown[v.Shard] = true
		t.Logf("timeline of %s (parents %v):\n  %s", v.Shard, l.Shards[v.Shard].Parents, strings.Join(l.Timeline(v.Shard), "\n  "))
	}
	report(t, seed, l, vs, len(vs))
}

func hasKind(vs []Violation, kind string) bool {
	for _, v := range vs {
		if kind == "" || v.Kind == kind {
			return true
		}
	}
	return false
}

func sizeFlag(t *testing.T) Size {
	switch *flagSize {
	case "small":
		return Small
	case "full":
		return Full
	}
	t.Fatalf("-sim.size=%q: want small or full", *flagSize)
	return Size{}
}

func report(t *testing.T, seed uint64, l *Log, vs []Violation, show int) {
	if len(vs) == 0 {
		return
	}
	var b strings.Builder
	hangs := ""
	if l.Hangs {
		hangs = ", hangs"
	}
	fmt.Fprintf(&b, "seed %d (%s%s, last fault t=%s): %d violations:", seed, l.Position, hangs, fmtDur(l.LastFault), len(vs))
	for i, v := range vs {
		if i == show {
			fmt.Fprintf(&b, "\n  ... %d more", len(vs)-show)
			break
		}
		fmt.Fprintf(&b, "\n  %s", v)
	}
	fmt.Fprintf(&b, "\n  rerun: make sim SEED=%d SIZE=%s", seed, *flagSize)
	for _, v := range vs {
		if !informational(v.Kind) {
			t.Error(b.String())
			return
		}
	}
	t.Log(b.String())
}

// informational reports whether a kind of finding is no fault of the library:
// exclusive-pause is a delivery the worker decided on while valid, held back by a pause
// of its own process until after another worker's take. No lease library can close
// that window; the application fences it with Epoch.
func informational(kind string) bool { return kind == KindExclusivePause }
