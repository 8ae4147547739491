package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// repeatWindow is how long a repeated failure stays quiet after it was logged.
const repeatWindow = 30 * time.Second

// repeatFilter is a slog.Handler that passes each failure (a warning or error with an
// "err" attribute) once per window for the same message from the same logger (same
// worker, shard): a deleted stream or table makes every shard retry every few seconds,
// and one line per shard per window says as much as a flood. The next line after the
// window carries "repeated", the number of lines left out. Everything else passes.
type repeatFilter struct {
	inner  slog.Handler
	window time.Duration
	scope  string // the logger's attributes and groups, part of the key
	state  *repeatState
	now    func() time.Time
}

type repeatState struct {
	mu   sync.Mutex
	seen map[string]*repeatEntry
}

type repeatEntry struct {
	last       time.Time
	suppressed int
}

func newRepeatFilter(inner slog.Handler, window time.Duration) *repeatFilter {
	return &repeatFilter{inner: inner, window: window, state: &repeatState{seen: map[string]*repeatEntry{}}, now: time.Now}
}

func (f *repeatFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return f.inner.Enabled(ctx, l)
}

func (f *repeatFilter) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(f.scope)
	for _, a := range attrs {
		fmt.Fprintf(&b, "%s=%v;", a.Key, a.Value)
	}
	c := *f
	c.inner, c.scope = f.inner.WithAttrs(attrs), b.String()
	return &c
}

func (f *repeatFilter) WithGroup(name string) slog.Handler {
	c := *f
	c.inner, c.scope = f.inner.WithGroup(name), f.scope+name+"{"
	return &c
}

func (f *repeatFilter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn || !hasErr(r) {
		return f.inner.Handle(ctx, r)
	}
	key := f.scope + "|" + r.Level.String() + "|" + r.Message
	now := f.now()
	f.state.mu.Lock()
	e := f.state.seen[key]
	if e != nil && now.Sub(e.last) < f.window {
		e.suppressed++
		f.state.mu.Unlock()
		return nil
	}
	suppressed := 0
	if e == nil {
		f.state.prune(now, f.window)
		e = &repeatEntry{}
		f.state.seen[key] = e
	} else {
		suppressed = e.suppressed
	}
	e.last, e.suppressed = now, 0
	f.state.mu.Unlock()
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("repeated", suppressed), slog.Duration("repeated_within", f.window))
	}
	return f.inner.Handle(ctx, r)
}

// prune forgets failures quiet for ten windows, so the map stays small.
func (s *repeatState) prune(now time.Time, window time.Duration) {
	if len(s.seen) < 1024 {
		return
	}
	for k, e := range s.seen {
		if now.Sub(e.last) > 10*window {
			delete(s.seen, k)
		}
	}
}

func hasErr(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == "err"
		return !found
	})
	return found
}
