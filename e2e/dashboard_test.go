//go:build browser

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
