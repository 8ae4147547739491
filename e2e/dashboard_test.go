//go:build browser

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kds-lease-manager/kds-lease-manager/internal/dashboard"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

// TestDashboardInBrowser proves the dashboard in a real browser (`make test-browser`;
// headless Chromium, about 2 minutes): `kdsctl dashboard` against 3 workers and 30 shards
// shows every shard with its owner; after a worker is killed its shards change colour and
// the failover appears in the event feed without a reload; at 300 shards the unowned
// alarm shows. Screenshots go to KDS_BROWSER_OUT (default .run/browser).
func TestDashboardInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	out := screenshotDir(t)
	c := newCluster(t, 30, defaultLeaseDuration)
	// The first worker serves the page too (DASHBOARD_ADDR).
	workerDashboard := freeAddr(t)
	ws := []*worker{c.startWorker(names(3)[0], "DASHBOARD_ADDR="+workerDashboard)}
	for _, id := range names(3)[1:] {
		ws = append(ws, c.startWorker(id))
	}
	c.waitConverged(90*time.Second, 30, 3, 10, 0)
	// Records on every shard, so that the checkpoints carry a lag for the page to show.
	newProducer(t, c).putRound(3)

	url := startDashboard(t, c)
	page := newBrowser(t, chromium)
	// The first action starts the browser: no deadline of its own (it would end the browser).
	must(t, chromedp.Do(page, chromedp.EmulateViewport(1400, 1000), chromedp.Navigate(url)))
	// The marker is gone if the page reloads; the page must also break no rule of its
	// Content-Security-Policy (everything from its own server) while it updates.
	if _, err := runBounded(page, chromedp.Evaluate[string](`window.violations = [];
		document.addEventListener("securitypolicyviolation", e => window.violations.push(e.violatedDirective + " " + e.blockedURI));
		window.loadMarker = "first load"`)); err != nil {
		t.Fatal(err)
	}

	// 1. Every shard with the owner the lease table gives it.
	var cells []cell
	waitFor(t, 30*time.Second, "the page to show the 30 shards with the lease table's owners", func() (bool, string) {
		o, err := c.ownership()
		if err != nil {
			return false, err.Error()
		}
		if cells, err = pageCells(page); err != nil {
			return false, err.Error()
		}
		return len(cells) == 30 && ownersMatch(cells, o.owner), fmt.Sprintf("%d cells, table %s", len(cells), o)
	})
	screenshot(t, page, filepath.Join(out, "1-30-shards-3-workers.png"))
	// The worker's page, in a second tab, shows the same.
	workerPage, closeTab := chromedp.NewContext(page)
	must(t, chromedp.Do(workerPage, chromedp.Navigate("http://"+workerDashboard+"/")))
	waitFor(t, 20*time.Second, "the worker's page to show the 30 shards with their owners", func() (bool, string) {
		cells, err := pageCells(workerPage)
		if err != nil {
			return false, err.Error()
		}
		o, err := c.ownership()
		return err == nil && len(cells) == 30 && ownersMatch(cells, o.owner), fmt.Sprintf("%d cells", len(cells))
	})
	closeTab()

	// 2. Kill a worker: its shards change owner and colour, and the failover is in the feed.
	victim := ws[1]
	before := map[string]string{} // shard -> colour
	for _, cl := range cells {
		if cl.Owner == victim.ID {
			before[cl.Shard] = cl.Colour
		}
	}
	if len(before) != 10 {
		t.Fatalf("%s shows %d shards on the page, want 10", victim.ID, len(before))
	}
	c.kill9(victim)
	killed := time.Now()
	waitFor(t, 90*time.Second, fmt.Sprintf("%s's shards recoloured and a failover event naming it", victim.ID), func() (bool, string) {
		cells, err := pageCells(page)
		if err != nil {
			return false, err.Error()
		}
		var stale []string
		for _, cl := range cells {
			if colour, ok := before[cl.Shard]; ok && (cl.Owner == victim.ID || cl.Owner == "" || cl.Colour == colour) {
				stale = append(stale, cl.Shard+" ("+cl.Owner+")")
			}
		}
		events, err := pageEvents(page, "failover")
		if err != nil {
			return false, err.Error()
		}
		named := slices.ContainsFunc(events, func(e string) bool { return strings.Contains(e, "dead worker "+victim.ID) })
		return len(stale) == 0 && named, fmt.Sprintf("not yet moved: %v; failover events %q", stale, events)
	})
	t.Logf("MEASURED dashboard: failover of %s shown %s after the kill", victim.ID, time.Since(killed).Round(100*time.Millisecond))
	// The workers' table: the victim expired, the others at the new max of 15 with fresh heartbeats.
	waitFor(t, 30*time.Second, "the workers' table to show the victim expired and 15 / 15 for the others", func() (bool, string) {
		rows, err := runBounded(page, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#workers tbody tr")].map(r =>
			[...r.cells].slice(1).map(c => c.textContent).join("|"))`))
		if err != nil {
			return false, err.Error()
		}
		want := map[string]bool{}
		for _, r := range rows {
			f := strings.Split(r, "|") // worker, state, leases / max, heartbeat age, max lag
			if len(f) != 5 {
				return false, fmt.Sprintf("row %q", r)
			}
			age, err := time.ParseDuration(f[3])
			switch {
			case f[0] == victim.ID:
				want[f[0]] = f[1] == "expired" && err == nil && age >= defaultLeaseDuration
			default:
				want[f[0]] = f[1] == "active" && f[2] == "15 / 15" && err == nil && age < defaultLeaseDuration
			}
		}
		ok := len(want) == 3
		for _, v := range want {
			ok = ok && v
		}
		return ok, fmt.Sprintf("rows %q", rows)
	})
	expectSamePage(t, page)
	screenshot(t, page, filepath.Join(out, "2-worker-killed.png"))

	// 3. 300 shards under the 2 workers left: the unowned alarm.
	scaled := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, err := c.Ctl(ctx, "scale-shards", "300")
		scaled <- err
	}()
	waitFor(t, 5*time.Minute, "the unowned alarm and the reshard in the feed", func() (bool, string) {
		alarm, err := runBounded(page, chromedp.Evaluate[string](`(a => a.hidden ? "" : a.textContent)(document.getElementById("alarm"))`))
		if err != nil {
			return false, err.Error()
		}
		reshards, err := pageEvents(page, "reshard")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(alarm, "UNOWNED") && len(reshards) > 0, fmt.Sprintf("alarm %q, %d reshard events", alarm, len(reshards))
	})
	must(t, <-scaled)
	expectSamePage(t, page)
	// Hovering a child shard marks its parent and names it.
	hover, err := runBounded(page, chromedp.Evaluate[string](`(() => {
		// The newest shard: a child of the last reshard step, whose parents are still leased.
		const child = [...document.querySelectorAll(".shard")].sort((a, b) => a.dataset.shard < b.dataset.shard ? 1 : -1)[0];
		child.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
		const parents = [...document.querySelectorAll(".shard.parent")].map(e => e.dataset.shard);
		return child.dataset.shard + " parents " + parents.join(",") + " | " + document.getElementById("tip").textContent;
	})()`))
	must(t, err)
	if _, after, _ := strings.Cut(hover, "parents "); !strings.HasPrefix(after, "shardId-") || !strings.Contains(hover, "parents: shardId-") {
		t.Errorf("hovering a child shard: %q, want its parent marked and named", hover)
	}
	screenshot(t, page, filepath.Join(out, "3-300-shards-unowned-alarm.png"))
}

// TestDashboardAt10kShards measures what the dashboard costs a browser at 10,000 shards and
// 500 workers; it only logs MEASURED lines (no timed assertion): the size of one
// server-sent update, the first render, an update where 1% of the leases changed owner
// (median of 3), one where every lag changed, and a hover. The times are taken in the page
// around its own handler of the update event (JSON parse and render), then with the style
// and layout that it caused, then until the next frame. Run it with
// `go test -tags browser -count=1 -run '^TestDashboardAt10kShards$' -v ./e2e`.
//
// The page is served by an in-process dashboard.Server whose Source is fakeTables, made-up
// tables of that size: a fake is fine for a render measurement, which needs the size and
// shape of the data, not the engines. The poller still paces itself (a read of 10,000
// leases every 10 s), so each update takes that long to come.
func TestDashboardAt10kShards(t *testing.T) {
	const shards, workers, moved = 10000, 500, 100
	chromium := chromiumPath(t)
	src := newFakeTables(shards, workers)
	d, err := dashboard.New(dashboard.Config{Source: src, Title: "10k shards", Interval: time.Second})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = d.Run(ctx) }()
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() { cancel(); srv.Close(); <-ran })

	tab := newBrowser(t, chromium)
	must(t, chromedp.Do(tab, chromedp.EmulateViewport(1400, 1000), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: measureRenders})
		return err
	}), chromedp.Navigate(srv.URL+"/")))
	type render struct{ Bytes, Parse, Script, Layout, Frame float64 }
	renders := func(want int) []render {
		var rs []render
		waitFor(t, 60*time.Second, fmt.Sprintf("%d updates rendered", want), func() (bool, string) {
			var err error
			if rs, err = runBounded(tab, chromedp.Evaluate[[]render](`window.renders.filter(r => r.Frame > 0)`)); err != nil {
				return false, err.Error()
			}
			return len(rs) >= want, fmt.Sprintf("%d rendered", len(rs))
		})
		return rs
	}
	first := renders(1)[0]
	n, err := runBounded(tab, chromedp.Evaluate[int](`document.querySelectorAll(".shard").length`))
	must(t, err)
	if n != shards {
		t.Fatalf("the page shows %d shards, want %d", n, shards)
	}
	// Each change shows at the next read (the poller reads a table of n items at most every n ms).
	seen := 1
	next := func() render {
		seen++
		rs := renders(seen)
		return rs[seen-1]
	}
	var updates []render
	for i := range 3 {
		owners := src.move(moved)
		updates = append(updates, next())
		cells, err := pageCells(tab)
		must(t, err)
		shown := 0
		for _, cl := range cells {
			if o, ok := owners[cl.Shard]; ok && cl.Owner == o {
				shown++
			}
		}
		if shown != len(owners) {
			t.Fatalf("update %d: the page shows %d of the %d new owners", i+1, shown, len(owners))
		}
	}
	src.newLags()
	lags := next()
	// A shard in view, as under a pointer.
	hover, err := runBounded(tab, chromedp.Evaluate[float64](`(() => {
		const cells = document.querySelectorAll(".shard");
		let took = 0;
		for (let i = 0; i < 20; i++) {
			cells[i * 497].scrollIntoView();
			void document.body.offsetHeight;
			const t0 = performance.now();
			cells[i * 497].dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
			took += performance.now() - t0;
		}
		return took / 20;
	})()`))
	must(t, err)
	times := func(rs ...render) string {
		median := func(f func(render) float64) string {
			vs := make([]float64, len(rs))
			for i, r := range rs {
				vs[i] = f(r)
			}
			if len(vs) == 1 {
				return fmt.Sprintf("%.0f ms", vs[0])
			}
			all := slices.Clone(vs)
			slices.Sort(vs)
			return fmt.Sprintf("%.0f ms (runs %.0f)", vs[len(vs)/2], all)
		}
		return fmt.Sprintf("parse %s, render script %s, with style and layout %s, until the next frame %s",
			median(func(r render) float64 { return r.Parse }), median(func(r render) float64 { return r.Script }),
			median(func(r render) float64 { return r.Layout }), median(func(r render) float64 { return r.Frame }))
	}
	t.Logf("MEASURED dashboard at %d shards / %d workers: update message %d bytes", shards, workers, int(first.Bytes))
	t.Logf("MEASURED first render: %s", times(first))
	t.Logf("MEASURED update, %d owners changed: %s", moved, times(updates...))
	t.Logf("MEASURED update, every lag changed: %s", times(lags))
	t.Logf("MEASURED hover over a shard: %.1f ms", hover)
}

// measureRenders times the page's handler of each update event, from before the page
// loads: Parse is a JSON.parse of the message alone, Script the handler (its own parse and
// the render), Layout adds the style and layout it caused, Frame runs to the next frame.
const measureRenders = `window.renders = [];
(() => {
	const add = EventSource.prototype.addEventListener;
	EventSource.prototype.addEventListener = function (type, fn, opts) {
		if (type !== "update") return add.call(this, type, fn, opts);
		return add.call(this, type, function (ev) {
			const p0 = performance.now();
			JSON.parse(ev.data);
			const r = {Bytes: new TextEncoder().encode(ev.data).length, Parse: performance.now() - p0, Frame: 0};
			const t0 = performance.now();
			fn.call(this, ev);
			r.Script = performance.now() - t0;
			void document.body.offsetHeight;
			r.Layout = performance.now() - t0;
			requestAnimationFrame(() => setTimeout(() => { r.Frame = performance.now() - t0; }));
			window.renders.push(r);
		}, opts);
	};
})();`

// fakeTables is a dashboard.Source of made-up tables: leases spread evenly over live,
// heartbeating workers, each with a checkpoint and a lag.
type fakeTables struct {
	mu      sync.Mutex
	meta    lease.Meta
	leases  []lease.Lease
	workers []string
	rnd     *rand.Rand
}

func newFakeTables(shards, workers int) *fakeTables {
	f := &fakeTables{rnd: rand.New(rand.NewPCG(1, 2))}
	now := time.Now()
	for i := range workers {
		id := fmt.Sprintf("worker-%03d", i)
		f.workers = append(f.workers, id)
		f.meta.Workers = append(f.meta.Workers, lease.WorkerRecord{WorkerID: id, Incarnation: fmt.Sprintf("inc-%d", i),
			State: lease.WorkerActive, LeasesHeld: shards / workers, LastSeen: now, StartedAt: now.Add(-time.Hour)})
	}
	per := (shards + workers - 1) / workers
	f.meta.Coordinator = &lease.CoordinatorRecord{CoordinatorID: f.workers[0], Epoch: 3, MaxLeasesPerWorker: per,
		TargetLeasesPerWorker: per, ShardCount: shards, WorkerCount: workers, LiveWorkers: workers, Cap: 80,
		RecommendedWorkers: workers, UpdatedAt: now}
	for i := range shards {
		f.leases = append(f.leases, lease.Lease{ShardID: fmt.Sprintf("shardId-%012d", i), Owner: f.workers[i%workers],
			Epoch: int64(1 + f.rnd.IntN(20)), Checkpoint: fmt.Sprintf("4965%052d", f.rnd.Int64()),
			MillisBehindLatest: int64(f.rnd.IntN(5000))})
	}
	return f
}

// move gives n random leases to another worker, with a new lag, and returns their owners.
func (f *fakeTables) move(n int) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	owners := map[string]string{}
	for len(owners) < n {
		l := &f.leases[f.rnd.IntN(len(f.leases))]
		if _, ok := owners[l.ShardID]; ok {
			continue
		}
		l.Owner = f.workers[(slices.Index(f.workers, l.Owner)+1+f.rnd.IntN(len(f.workers)-1))%len(f.workers)]
		l.Epoch++
		l.MillisBehindLatest = int64(f.rnd.IntN(5000))
		owners[l.ShardID] = l.Owner
	}
	return owners
}

// newLags gives every lease a new lag.
func (f *fakeTables) newLags() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.leases {
		f.leases[i].MillisBehindLatest = int64(f.rnd.IntN(5000))
	}
}

// ReadMeta returns the workers, every one heartbeating now.
func (f *fakeTables) ReadMeta(ctx context.Context) (lease.Meta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	m := f.meta
	m.Workers = slices.Clone(f.meta.Workers)
	for i := range m.Workers {
		m.Workers[i].Heartbeat++
		m.Workers[i].LastSeen = now
	}
	f.meta.Workers = m.Workers
	return m, ctx.Err()
}

func (f *fakeTables) ListLeases(ctx context.Context) (lease.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return lease.Table{Leases: slices.Clone(f.leases)}, ctx.Err()
}

func (f *fakeTables) LeaseTable() string { return "app" }
func (f *fakeTables) MetaTable() string  { return "app_meta" }

// chromiumPath finds Chromium; its absence fails the test: CI installs it (.ci/run).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: the dashboard's browser test needs it (apt-get install -y chromium, as .ci/run does, or set CHROMIUM=/path/to/chrome)")
	return ""
}

func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KDS_BROWSER_OUT")
	if dir == "" {
		dir = filepath.Join("..", ".run", "browser")
	}
	must(t, os.MkdirAll(dir, 0o755))
	return dir
}

// startDashboard runs `kdsctl dashboard` on the cluster until the test ends and returns
// its URL once it answers.
func startDashboard(t *testing.T, c *cluster) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Ended by the test's end (the context kills it); its error then says so.
		if out, err := c.Ctl(ctx, "dashboard", "--addr", addr, "--interval", "500ms"); err != nil && ctx.Err() == nil {
			t.Errorf("kdsctl dashboard: %v\n%s", err, out)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	url := "http://" + addr + "/"
	waitFor(t, 20*time.Second, "kdsctl dashboard to answer on "+url, func() (bool, string) {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, url+"api/state", nil)
		if err != nil {
			return false, err.Error()
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return url
}

// newBrowser starts headless Chromium with the flags this closed network needs and
// returns a tab's context; both end with the test.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 10*time.Minute)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc(); cancelTimeout() })
	return tab
}

// cell is a shard as the page shows it.
type cell struct {
	Shard, Owner, State, Colour string
}

func pageCells(page context.Context) ([]cell, error) {
	return runBounded(page, chromedp.Evaluate[[]cell](`[...document.querySelectorAll(".shard")].map(e => ({
		Shard: e.dataset.shard, Owner: e.dataset.owner, State: e.dataset.state, Colour: getComputedStyle(e).backgroundColor}))`))
}

// pageEvents returns the texts of the feed's events of a kind.
func pageEvents(page context.Context, kind string) ([]string, error) {
	return runBounded(page, chromedp.Evaluate[[]string](fmt.Sprintf(`[...document.querySelectorAll('#events li[data-kind=%q]')].map(e => e.textContent)`, kind)))
}

// runBounded runs a browser action under a deadline.
func runBounded[T any](page context.Context, action chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(page, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, action)
}

func ownersMatch(cells []cell, owners map[string]string) bool {
	for _, cl := range cells {
		if want, ok := owners[cl.Shard]; !ok || cl.Owner != want {
			return false
		}
	}
	return true
}

// expectSamePage fails the test if the page was reloaded (the marker set at the first
// load would be gone) or broke its Content-Security-Policy.
func expectSamePage(t *testing.T, page context.Context) {
	t.Helper()
	marker, err := runBounded(page, chromedp.Evaluate[string](`window.loadMarker || "reloaded"`))
	must(t, err)
	if marker != "first load" {
		t.Fatalf("the page was reloaded (marker %q); it must update in place", marker)
	}
	violations, err := runBounded(page, chromedp.Evaluate[[]string](`window.violations`))
	must(t, err)
	if len(violations) > 0 {
		t.Errorf("Content-Security-Policy violations: %q", violations)
	}
}

func screenshot(t *testing.T, page context.Context, path string) {
	t.Helper()
	png, err := runBounded(page, chromedp.FullScreenshot(100))
	must(t, err)
	must(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s", path)
}
