// Package dashboard serves the live dashboard of one application: a single web page with
// the shard-to-worker map, the workers, the coordinator item, per-shard lag and a feed of
// recent events, updated live over server-sent events. `kdsctl dashboard` and the worker
// (DASHBOARD_ADDR) serve the same Server.
//
// Cost. One poller per Server reads both tables (two paginated Scans) at most once per
// Config.Interval, slower for big tables (see Server.Run), and every viewer receives the
// same encoded update: the DynamoDB requests do not grow with the number of viewers.
// Events are derived by diffing successive reads (Diff).
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kds-lease-manager/kds-lease-manager/internal/tableview"
	"github.com/kds-lease-manager/kds-lease-manager/lease"
)

//go:embed assets
var assets embed.FS

// Source reads the tables; *dynamostore.Store satisfies it.
type Source interface {
	ReadMeta(ctx context.Context) (lease.Meta, error)
	ListLeases(ctx context.Context) (lease.Table, error)
	LeaseTable() string
	MetaTable() string
}

// Config configures a Server.
type Config struct {
	Source Source
	// Title names what is shown, e.g. the application and stream.
	Title string
	// Interval is the shortest time between two reads of the tables (default 1s). A read
	// of n items waits at least n milliseconds before the next, so that a big table is read
	// at about a thousand items a second at most.
	Interval time.Duration
	// ReadTimeout bounds each read of a table (default 10s).
	ReadTimeout time.Duration
	// Always polls while nobody views the page, keeping the event feed complete; by
	// default the poller reads only while a page is open or the JSON state was fetched in
	// the last minute.
	Always bool
	// MaxEvents is how many recent events are kept and sent (default 200).
	MaxEvents int
	Logger    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Update is what a viewer receives: the latest snapshot and the recent events, oldest
// first.
type Update struct {
	Title    string   `json:"title"`
	Snapshot Snapshot `json:"snapshot"`
	Events   []Event  `json:"events"`
	// IntervalMS is the time between reads, for the page to judge staleness.
	IntervalMS int64 `json:"interval_ms"`
}

// liveUpdate is an Update as the event stream sends it to the page: lease rows without what
// the page does not show (the checkpoint) and without empty parents or unknown lags, about
// half the bytes of the whole Update at 10,000 leases. GET api/state sends the whole Update.
type liveUpdate struct {
	Update
	Snapshot liveSnapshot `json:"snapshot"`
}

type liveSnapshot struct {
	Snapshot
	Leases *liveLeases `json:"leases"`
}

// liveLeases is tableview.Leases with liveRows: Rows, at the outer level, takes the
// place of the embedded lease rows in the JSON.
type liveLeases struct {
	*tableview.Leases
	Rows []liveRow `json:"leases"`
}

type liveRow struct {
	Shard              string   `json:"shard"`
	Owner              string   `json:"owner"`
	State              string   `json:"state"`
	Epoch              int64    `json:"epoch"`
	Parents            []string `json:"parents,omitempty"`
	MillisBehindLatest *int64   `json:"millis_behind_latest,omitempty"`
}

func newLiveUpdate(u Update) liveUpdate {
	lu := liveUpdate{Update: u, Snapshot: liveSnapshot{Snapshot: u.Snapshot}}
	if l := u.Snapshot.Leases; l != nil {
		rows := make([]liveRow, len(l.Leases))
		for i, r := range l.Leases {
			rows[i] = liveRow{Shard: r.Shard, Owner: r.Owner, State: r.State, Epoch: r.Epoch, Parents: r.Parents,
				MillisBehindLatest: r.MillisBehindLatest}
		}
		lu.Snapshot.Leases = &liveLeases{Leases: l, Rows: rows}
	}
	return lu
}

// demandWindow is how long a fetch of the JSON state keeps the poller reading.
const demandWindow = time.Minute

// Server polls the tables and serves the page. Create it with New, run Run, serve
// Handler.
type Server struct {
	cfg Config

	mu      sync.Mutex
	update  Update // the latest update
	full    []byte // update encoded for api/state, on demand; nil until asked for
	live    []byte // the event stream's message of the latest liveUpdate; nil before the first read
	prev    *Snapshot
	events  []Event
	seq     int64
	viewers map[chan struct{}]struct{}
	demand  time.Time
	wake    chan struct{} // a viewer arrived
	ready   chan struct{} // closed after the first read
	static  fs.FS
}

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("dashboard: nil Source")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard: embedded assets: %w", err)
	}
	return &Server{cfg: cfg, viewers: map[chan struct{}]struct{}{}, wake: make(chan struct{}, 1), ready: make(chan struct{}),
		static: static}, nil
}

// Run reads the tables until ctx ends, while there is demand (see Config.Always), and
// publishes each read to every viewer. It returns nil when ctx ends.
func (s *Server) Run(ctx context.Context) error {
	idle := false
	for {
		if !s.wanted() {
			idle = true
			select {
			case <-ctx.Done():
				return nil
			case <-s.wake:
			}
			continue
		}
		// After a pause with nobody watching, start afresh instead of reporting everything
		// that changed meanwhile as if it had just happened.
		if idle {
			s.mu.Lock()
			s.prev = nil
			s.mu.Unlock()
			idle = false
		}
		snap := s.read(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.publish(snap)
		wait := s.cfg.Interval
		if snap.Leases != nil {
			wait = max(wait, time.Duration(len(snap.Leases.Leases))*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (s *Server) wanted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Always || len(s.viewers) > 0 || s.cfg.Now().Sub(s.demand) < demandWindow
}

// read reads both tables, each under its own deadline.
func (s *Server) read(ctx context.Context) Snapshot {
	now := s.cfg.Now()
	snap := Snapshot{Time: now, TimeS: tableview.TimeJSON(now)}
	snap.Meta, snap.Leases, snap.Errors = ReadTables(ctx, s.cfg.Source, s.cfg.ReadTimeout)
	for _, e := range snap.Errors {
		s.cfg.Logger.Warn("dashboard read failed", "error", e)
	}
	return snap
}

// ReadTables reads both tables of src, each read under timeout (0: ctx's deadline only),
// and describes them as operators see them. A table that could not be read is nil, and
// errs says why. The dashboard and `kdsctl monitor` read through it.
func ReadTables(ctx context.Context, src Source, timeout time.Duration) (meta *tableview.Meta, leases *tableview.Leases, errs []string) {
	if m, err := bounded(ctx, timeout, src.ReadMeta); err != nil {
		errs = append(errs, fmt.Sprintf("cannot read the metadata table: %v", err))
	} else {
		v := tableview.NewMeta(src.MetaTable(), m)
		meta = &v
	}
	if t, err := bounded(ctx, timeout, src.ListLeases); err != nil {
		errs = append(errs, fmt.Sprintf("cannot read the lease table: %v", err))
	} else {
		v := tableview.NewLeases(src.LeaseTable(), t)
		leases = &v
	}
	return meta, leases, errs
}

// bounded calls read with a deadline (none for a zero timeout).
func bounded[T any](ctx context.Context, timeout time.Duration, read func(context.Context) (T, error)) (T, error) {
	if timeout <= 0 {
		return read(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return read(ctx)
}

// publish derives the events from the previous read, encodes the update once and wakes
// every viewer.
func (s *Server) publish(snap Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prev != nil {
		for _, e := range Diff(*s.prev, snap) {
			s.seq++
			e.Seq = s.seq
			s.events = append(s.events, e)
			s.cfg.Logger.Debug("dashboard event", "kind", e.Kind, "message", e.Message)
		}
		if over := len(s.events) - s.cfg.MaxEvents; over > 0 {
			s.events = append([]Event(nil), s.events[over:]...)
		}
	}
	// A table that failed to read keeps its last good read for the next diff.
	next := snap
	if s.prev != nil {
		if next.Meta == nil {
			next.Meta = s.prev.Meta
		}
		if next.Leases == nil {
			next.Leases = s.prev.Leases
		}
	}
	s.prev = &next
	u := Update{Title: s.cfg.Title, Snapshot: next, Events: s.events, IntervalMS: s.cfg.Interval.Milliseconds()}
	if u.Events == nil {
		u.Events = []Event{}
	}
	live, err := json.Marshal(newLiveUpdate(u))
	if err != nil {
		s.cfg.Logger.Error("dashboard: encode update", "error", err)
		return
	}
	first := s.live == nil
	s.update, s.full = u, nil
	s.live = slices.Concat([]byte("event: update\ndata: "), live, []byte("\n\n"))
	if first {
		close(s.ready)
	}
	for ch := range s.viewers {
		select {
		case ch <- struct{}{}:
		default: // it has not sent the last one yet; it will send the latest
		}
	}
}

// subscribe registers a viewer; the channel signals each new update.
func (s *Server) subscribe() (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.viewers[ch] = struct{}{}
	if s.live != nil {
		ch <- struct{}{}
	}
	s.mu.Unlock()
	s.poke()
	return ch, func() {
		s.mu.Lock()
		delete(s.viewers, ch)
		s.mu.Unlock()
	}
}

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// current returns the latest Update encoded, encoding it on the first request after a
// read: few clients poll api/state, and the page uses the event stream.
func (s *Server) current() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full == nil {
		b, err := json.Marshal(s.update)
		if err != nil {
			return nil, err
		}
		s.full = b
	}
	return s.full, nil
}

func (s *Server) currentLive() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Serve serves Handler on ln and runs the poller until ctx ends, then shuts the server
// down. It returns an error only if serving failed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The event streams' requests end with ctx; Shutdown then waits for the rest.
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		_ = s.Run(ctx)
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-served:
		err = fmt.Errorf("dashboard: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx) // past its deadline, the connections are closed anyway
	}
	cancel()
	<-polled
	return err
}

// Handler serves the page and its data. Paths are relative, so that it can be mounted
// under a prefix with http.StripPrefix:
//
//	GET /             the page (index.html, app.js, style.css, embedded)
//	GET /api/state    the latest Update as JSON (polling)
//	GET /api/events   server-sent events: one "update" event per read (the Update
//	                  without the lease rows' checkpoints; see liveUpdate)
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	files := http.FileServerFS(s.static)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		// Everything the page uses comes from this server.
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /api/state", s.serveState)
	mux.HandleFunc("GET /api/events", s.serveEvents)
	return mux
}

// serveState answers with the latest update, waiting for the first read if need be.
func (s *Server) serveState(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.demand = s.cfg.Now()
	s.mu.Unlock()
	s.poke()
	ctx, cancel := context.WithTimeout(r.Context(), 2*s.cfg.ReadTimeout)
	defer cancel()
	select {
	case <-s.ready:
	case <-ctx.Done():
		http.Error(w, "no read of the tables yet", http.StatusServiceUnavailable)
		return
	}
	b, err := s.current()
	if err != nil {
		s.cfg.Logger.Error("dashboard: encode update", "error", err)
		http.Error(w, "cannot encode the update", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// keepAlive is how often an idle event stream sends a comment, so that proxies keep it.
const keepAlive = 15 * time.Second

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	ch, unsubscribe := s.subscribe()
	defer unsubscribe()
	send := func(msg []byte) bool {
		// A viewer that stops reading must not hold the handler forever.
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(msg); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte("retry: 2000\n\n")) {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		var msg []byte
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			msg = []byte(": keep-alive\n\n")
		case <-ch:
			msg = s.currentLive()
		}
		if !send(msg) {
			return
		}
	}
}
