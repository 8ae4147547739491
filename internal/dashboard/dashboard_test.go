package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/tableview"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

// snap builds a snapshot: owners maps shard -> owner ("" free; a "/end" suffix marks the
// lease finished; "<parent>>" prefixes name parents), workers are live unless dead.
func snap(coord *lease.CoordinatorRecord, workers []string, owners map[string]string) Snapshot {
	m := lease.Meta{Coordinator: coord}
	for _, w := range workers {
		state := lease.WorkerActive
		if strings.HasSuffix(w, "/gone") {
			w, state = strings.TrimSuffix(w, "/gone"), lease.WorkerGone
		}
		m.Workers = append(m.Workers, lease.WorkerRecord{WorkerID: w, Incarnation: "i-" + w, State: state, LastSeen: t0.Add(-12 * time.Second)})
	}
	var tab lease.Table
	for shard, owner := range owners {
		l := lease.Lease{ShardID: shard, Owner: owner, Checkpoint: lease.TrimHorizon}
		if p, rest, ok := strings.Cut(owner, ">"); ok {
			l.ParentShardIDs, l.Owner = []string{p}, rest
		}
		if o, ok := strings.CutSuffix(l.Owner, "/end"); ok {
			l.Owner, l.Checkpoint = o, lease.ShardEnd
		}
		tab.Leases = append(tab.Leases, l)
	}
	mv, lv := tableview.NewMeta("app_meta", m), tableview.NewLeases("app", tab)
	return Snapshot{Time: t0, TimeS: tableview.TimeJSON(t0), Meta: &mv, Leases: &lv}
}

func coord(id string, epoch int64, max, shards, workers, unowned int, dead ...string) *lease.CoordinatorRecord {
	c := &lease.CoordinatorRecord{CoordinatorID: id, Epoch: epoch, MaxLeasesPerWorker: max, TargetLeasesPerWorker: max,
		ShardCount: shards, WorkerCount: workers, LiveWorkers: workers, Cap: 80, UnownedShards: unowned, RecommendedWorkers: 4}
	for _, d := range dead {
		c.DeadWorkers = append(c.DeadWorkers, lease.DeadWorker{WorkerID: d})
	}
	return c
}

// brief is an event without its time and message.
type brief struct {
	kind, worker, from string
	shards             []string
}

func TestDiff(t *testing.T) {
	c1 := coord("w1", 1, 2, 4, 2, 0)
	two := []string{"w1", "w2"}
	for _, tc := range []struct {
		name       string
		prev, next Snapshot
		want       []brief
		says       string // in some message
	}{
		{"nothing changed", snap(c1, two, map[string]string{"s1": "w1"}), snap(c1, two, map[string]string{"s1": "w1"}), nil, ""},
		{"take of free leases, grouped",
			snap(c1, two, map[string]string{"s1": "", "s2": "", "s3": "w2"}),
			snap(c1, two, map[string]string{"s1": "w1", "s2": "w1", "s3": "w2"}),
			[]brief{{KindTake, "w1", "", []string{"s1", "s2"}}}, "w1 took 2 shards (s1, s2)"},
		{"release",
			snap(c1, two, map[string]string{"s1": "w1"}), snap(c1, two, map[string]string{"s1": ""}),
			[]brief{{KindRelease, "w1", "", []string{"s1"}}}, "w1 released 1 shard"},
		{"take from a live worker",
			snap(c1, two, map[string]string{"s1": "w2"}), snap(c1, two, map[string]string{"s1": "w1"}),
			[]brief{{KindTake, "w1", "w2", []string{"s1"}}}, "from live worker w2"},
		{"expiry, then failover of the dead worker's leases",
			snap(c1, two, map[string]string{"s1": "w2", "s2": "w2", "s3": "w1"}),
			snap(coord("w1", 1, 3, 4, 1, 0, "w2"), two, map[string]string{"s1": "w1", "s2": "w1", "s3": "w1"}),
			[]brief{{KindExpiry, "w2", "", nil}, {KindCoordinator, "w1", "", nil}, {KindFailover, "w1", "w2", []string{"s1", "s2"}}},
			"worker w2 expired: its heartbeat stopped (last seen 12s ago)"},
		{"failover from a worker whose record is gone",
			snap(c1, two, map[string]string{"s1": "w2"}), snap(c1, []string{"w1"}, map[string]string{"s1": "w1"}),
			[]brief{{KindWorker, "w2", "", nil}, {KindFailover, "w1", "w2", []string{"s1"}}}, "record was removed"},
		{"clean shutdown and release",
			snap(c1, two, map[string]string{"s1": "w2"}), snap(c1, []string{"w1", "w2/gone"}, map[string]string{"s1": ""}),
			[]brief{{KindWorker, "w2", "", nil}, {KindRelease, "w2", "", []string{"s1"}}}, "shut down cleanly"},
		{"worker joined", snap(c1, []string{"w1"}, nil), snap(c1, two, nil), []brief{{KindWorker, "w2", "", nil}}, "worker w2 joined"},
		{"reshard: children created, parent finished, lease deleted",
			snap(c1, two, map[string]string{"s1": "w1", "s0": "w2/end"}),
			snap(c1, two, map[string]string{"s1": "w1/end", "s2": "s1>", "s3": "s1>"}),
			[]brief{{KindFinished, "w1", "", []string{"s1"}}, {KindReshard, "", "", []string{"s2", "s3"}}, {KindDeleted, "", "", []string{"s0"}}},
			"reshard: 2 shards created (s2, s3)"},
		{"first leases", snap(c1, two, map[string]string{}), snap(c1, two, map[string]string{"s1": ""}),
			[]brief{{KindNewLeases, "", "", []string{"s1"}}}, "1 lease created"},
		{"coordinator failover", snap(c1, two, nil), snap(coord("w2", 2, 2, 4, 2, 0), two, nil),
			[]brief{{KindCoordinator, "w2", "w1", nil}}, "coordinator w1 -> w2 (epoch 1 -> 2)"},
		{"coordinator item created", snap(nil, two, nil), snap(c1, two, nil),
			[]brief{{KindCoordinator, "w1", "", nil}, {KindCoordinator, "w1", "", nil}}, "coordinator item created"},
		{"unowned alarm raised", snap(c1, two, nil), snap(coord("w1", 1, 80, 300, 2, 140), two, nil),
			[]brief{{KindCoordinator, "w1", "", nil}, {KindAlarm, "", "", nil}}, "140 of 300 shards are UNOWNED; run 4 workers"},
		{"unowned alarm cleared", snap(coord("w1", 1, 80, 300, 2, 140), two, nil), snap(coord("w1", 1, 75, 300, 4, 0), two, nil),
			[]brief{{KindCoordinator, "w1", "", nil}, {KindAlarm, "", "", nil}}, "alarm cleared"},
		{"a table not read is not compared",
			Snapshot{Meta: snap(c1, two, nil).Meta}, snap(c1, two, map[string]string{"s1": "w1"}), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.prev, tc.next)
			var briefs []brief
			var msgs []string
			for _, e := range got {
				briefs = append(briefs, brief{e.Kind, e.Worker, e.From, e.Shards})
				msgs = append(msgs, e.Message)
				if e.Time != tc.next.TimeS {
					t.Errorf("event time %q, want the snapshot's %q", e.Time, tc.next.TimeS)
				}
			}
			if !slices.EqualFunc(briefs, tc.want, func(a, b brief) bool {
				return a.kind == b.kind && a.worker == b.worker && a.from == b.from && slices.Equal(a.shards, b.shards)
			}) {
				t.Errorf("events %+v\nwant %+v\nmessages %q", briefs, tc.want, msgs)
			}
			if tc.says != "" && !strings.Contains(strings.Join(msgs, "\n"), tc.says) {
				t.Errorf("no message says %q: %q", tc.says, msgs)
			}
		})
	}
}

// fakeSource is a Source whose tables a test changes; it counts the reads.
type fakeSource struct {
	mu    sync.Mutex
	meta  lease.Meta
	table lease.Table
	reads int
}

func (f *fakeSource) ReadMeta(ctx context.Context) (lease.Meta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.meta, ctx.Err()
}

func (f *fakeSource) ListLeases(ctx context.Context) (lease.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return lease.Table{Leases: slices.Clone(f.table.Leases)}, ctx.Err()
}

func (f *fakeSource) LeaseTable() string { return "app" }
func (f *fakeSource) MetaTable() string  { return "app_meta" }

func (f *fakeSource) set(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeSource) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// startServer runs a dashboard on src behind an httptest server until the test ends.
func startServer(t *testing.T, src Source, always bool) *httptest.Server {
	t.Helper()
	d, err := New(Config{Source: src, Title: "app test", Interval: 20 * time.Millisecond, Always: always})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		cancel()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

// sse reads the updates of an event stream.
type sse struct{ sc *bufio.Scanner }

func openSSE(t *testing.T, url string) *sse {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return &sse{sc}
}

// next returns the next update.
func (s *sse) next(t *testing.T) Update {
	t.Helper()
	for s.sc.Scan() {
		if data, ok := strings.CutPrefix(s.sc.Text(), "data: "); ok {
			var u Update
			if err := json.Unmarshal([]byte(data), &u); err != nil {
				t.Fatal(err)
			}
			return u
		}
	}
	t.Fatalf("event stream ended: %v", s.sc.Err())
	return Update{}
}

// until reads updates until ok holds for one, for at most 5s.
func (s *sse) until(t *testing.T, what string, ok func(Update) bool) Update {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if u := s.next(t); ok(u) {
			return u
		}
	}
	t.Fatalf("no update with %s within 5s", what)
	return Update{}
}

func twoWorkerSource() *fakeSource {
	return &fakeSource{
		meta: lease.Meta{Coordinator: coord("w1", 1, 1, 2, 2, 0), Workers: []lease.WorkerRecord{
			{WorkerID: "w1", State: lease.WorkerActive}, {WorkerID: "w2", State: lease.WorkerActive}}},
		table: lease.Table{Leases: []lease.Lease{{ShardID: "s1", Owner: "w1"}, {ShardID: "s2", Owner: "w2"}}},
	}
}

func TestHandler(t *testing.T) {
	src := twoWorkerSource()
	srv := startServer(t, src, false)
	for _, tc := range []struct {
		path, contentType, body string
	}{
		{"/", "text/html", `<script src="app.js">`},
		{"/app.js", "javascript", "EventSource"},
		{"/style.css", "text/css", ".shard"},
		{"/api/state", "application/json", `"shard":"s2","owner":"w2"`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.path != "/api/state" && resp.Header.Get("Content-Security-Policy") != "default-src 'self'" {
				t.Errorf("%s: Content-Security-Policy %q, want default-src 'self'", tc.path, resp.Header.Get("Content-Security-Policy"))
			}
			if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), tc.contentType) ||
				!strings.Contains(string(body), tc.body) {
				t.Errorf("%s: %d %q, body lacks %q:\n%.300s", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.body, body)
			}
		})
	}
	t.Run("live events", func(t *testing.T) {
		s := openSSE(t, srv.URL)
		u := s.next(t)
		if u.Title != "app test" || u.Snapshot.Leases == nil || len(u.Snapshot.Leases.Leases) != 2 {
			t.Fatalf("first update %+v", u)
		}
		// w2 dies: the coordinator judges it dead and w1 takes its lease.
		src.set(func(f *fakeSource) {
			f.meta.Coordinator = coord("w1", 1, 2, 2, 1, 0, "w2")
			f.table.Leases[1].Owner = "w1"
		})
		u = s.until(t, "the failover", func(u Update) bool {
			return slices.ContainsFunc(u.Events, func(e Event) bool { return e.Kind == KindFailover })
		})
		if owner := u.Snapshot.Leases.Leases[1].Owner; owner != "w1" {
			t.Errorf("s2 owned by %q after the failover", owner)
		}
		for i, e := range u.Events {
			if e.Seq != int64(i+1) {
				t.Errorf("event %d has seq %d", i, e.Seq)
			}
		}
	})
}

// The event stream leaves out of the lease rows what the page does not show; api/state
// keeps the whole rows for other clients.
func TestEventStreamIsSlim(t *testing.T) {
	src := twoWorkerSource()
	src.table.Leases[0].Checkpoint = "49650000000000000000000000000000000000000000000000000001"
	src.table.Leases[0].MillisBehindLatest = 1500
	src.table.Leases[1].ParentShardIDs = []string{"s0"}
	srv := startServer(t, src, false)
	u := openSSE(t, srv.URL).next(t)
	rows := u.Snapshot.Leases.Leases
	if len(rows) != 2 || rows[0].Shard != "s1" || rows[0].Owner != "w1" || rows[0].Checkpoint != "" || rows[0].MillisBehindLatest == nil ||
		*rows[0].MillisBehindLatest != 1500 || rows[0].Parents != nil || !slices.Equal(rows[1].Parents, []string{"s0"}) ||
		u.Snapshot.Leases.Summary.Total != 2 || len(u.Snapshot.Leases.Workers) != 2 {
		t.Errorf("event stream's leases %+v", u.Snapshot.Leases)
	}
	resp, err := http.Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var full Update
	if err := json.NewDecoder(resp.Body).Decode(&full); err != nil {
		t.Fatal(err)
	}
	if rows := full.Snapshot.Leases.Leases; len(rows) != 2 || rows[0].Checkpoint != src.table.Leases[0].Checkpoint || rows[0].Parents == nil {
		t.Errorf("api/state's leases %+v, want the whole rows", rows)
	}
}

// The tables are read by one poller whatever the number of viewers.
func TestReadsDoNotGrowWithViewers(t *testing.T) {
	for _, viewers := range []int{1, 8} {
		t.Run(fmt.Sprintf("%d viewers", viewers), func(t *testing.T) {
			src := twoWorkerSource()
			srv := startServer(t, src, false)
			streams := make([]*sse, viewers)
			for i := range streams {
				streams[i] = openSSE(t, srv.URL)
			}
			start, before := time.Now(), src.readCount()
			for range 10 {
				for _, s := range streams {
					s.next(t)
				}
			}
			elapsed := time.Since(start)
			// One read per 20 ms interval, plus the one in progress.
			if reads, limit := src.readCount()-before, int(elapsed/(20*time.Millisecond))+2; reads > limit {
				t.Errorf("%d viewers: %d reads of the metadata table in %s, want at most %d", viewers, reads, elapsed, limit)
			}
		})
	}
	t.Run("changes while nobody watched are not reported as events", func(t *testing.T) {
		src := twoWorkerSource()
		srv := startServer(t, src, false)
		t.Run("first viewer", func(t *testing.T) { openSSE(t, srv.URL).next(t) }) // its stream ends with it
		waitIdle(t, src)
		src.set(func(f *fakeSource) { f.table.Leases[1].Owner = "w1" })
		s := openSSE(t, srv.URL)
		s.next(t)
		if u := s.next(t); len(u.Events) != 0 || u.Snapshot.Leases.Leases[1].Owner != "w1" {
			t.Errorf("events %+v after a pause, want none; s2 owned by %q", u.Events, u.Snapshot.Leases.Leases[1].Owner)
		}
	})
	t.Run("nobody watching", func(t *testing.T) {
		src := twoWorkerSource()
		startServer(t, src, false)
		time.Sleep(200 * time.Millisecond)
		if n := src.readCount(); n != 0 {
			t.Errorf("%d reads with no viewer, want 0", n)
		}
	})
}

// Serve serves until its context ends, and ending it ends the open event streams too.
func TestServeEndsWithContext(t *testing.T) {
	d, err := New(Config{Source: twoWorkerSource(), Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, ln) }()
	s := openSSE(t, "http://"+ln.Addr().String())
	if u := s.next(t); u.Snapshot.Meta == nil || len(u.Snapshot.Meta.Workers) != 2 {
		t.Fatalf("first update %+v", u.Snapshot)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after its context ended")
	}
	for s.sc.Scan() { // what was sent before the end
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
		t.Error("the server still answers after Serve returned")
	}
}

// waitIdle waits until the poller stopped reading src.
func waitIdle(t *testing.T, src *fakeSource) {
	t.Helper()
	for range 50 {
		before := src.readCount()
		time.Sleep(100 * time.Millisecond)
		if src.readCount() == before {
			return
		}
	}
	t.Fatal("the poller kept reading with no viewer")
}
