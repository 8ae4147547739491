// The kds-lease-manager dashboard: renders each update the server pushes (server-sent
// events on api/events; polling api/state where EventSource is missing). No build step.
//
// Each update carries the whole state (every lease), but the page changes only what
// changed: shard cells, worker rows and events are kept by id, a cell is touched only when
// its owner, state, colour or lag changed and moved only when its state did, and the hover
// looks parents and children up in an index built once per update. That keeps an update
// cheap at 10,000 shards (docs/BENCHMARKS.md).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const palette = ["#4a78c2", "#e07b39", "#3a9d5d", "#b5479b", "#c9a227", "#2aa3b0", "#8a5cc2", "#d2495b", "#6b8e23", "#795548"];
  const colours = new Map(); // worker id -> colour, stable for the life of the page
  const cells = new Map();   // shard id -> {el, lagText, and the owner, state and colour shown}
  const rows = new Map();    // worker id -> {tr, its parts, and the colour and width shown}
  const items = new Map();   // event seq -> {li, key}
  let byShard = new Map();   // shard id -> its lease row in the last update
  let childrenOf = new Map(); // shard id -> the shards that name it as a parent
  let hovered = null;        // the shard under the pointer
  let marked = [];           // the cells highlighted for it

  function colourOf(id) {
    if (!colours.has(id)) {
      const n = colours.size;
      colours.set(id, n < palette.length ? palette[n] : `hsl(${(n * 137.5) % 360} 55% 45%)`);
    }
    return colours.get(id);
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  // setText changes a text only if it differs, so that unchanged nodes stay untouched.
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // setData changes a text node in place: cheaper than replacing it.
  function setData(node, text) {
    if (node.data !== text) node.data = text;
  }

  // place puts node right after prev in parent (first if prev is null), unless it is there.
  function place(parent, node, prev) {
    if (node.parentNode === parent && node.previousSibling === prev) return;
    parent.insertBefore(node, prev ? prev.nextSibling : parent.firstChild);
  }

  function duration(ms) {
    if (ms == null) return "-";
    if (ms < 1000) return ms + "ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
    if (ms < 3600000) return Math.floor(ms / 60000) + "m" + Math.round((ms % 60000) / 1000) + "s";
    return (ms / 3600000).toFixed(1) + "h";
  }

  function shortShard(id) {
    const m = /(\d+)$/.exec(id);
    return m ? String(Number(m[1])) : id;
  }

  function render(u) {
    const snap = u.snapshot, meta = snap.metadata, leases = snap.leases;
    const now = Date.parse(snap.time);
    setText($("title"), u.title || "");
    document.body.dataset.updated = snap.time;

    const errs = snap.errors || [];
    $("errors").hidden = errs.length === 0;
    setText($("errors"), errs.join("; "));

    const c = meta && meta.coordinator;
    const warnings = (meta && meta.warnings) || [];
    $("alarm").hidden = warnings.length === 0;
    setText($("alarm"), warnings.map((w) => "⚠ " + w).join("  "));

    // Known workers get their colours in id order, so the first page load is stable.
    const ids = new Set();
    (meta ? meta.workers : []).forEach((w) => ids.add(w.worker_id));
    (leases ? leases.leases : []).forEach((l) => l.owner && ids.add(l.owner));
    [...ids].filter((id) => !colours.has(id)).sort().forEach(colourOf);

    renderCoordinator(c);
    renderWorkers(meta, leases, c, now);
    renderShards(leases);
    renderEvents(u.events);
  }

  const fields = new Map(); // coordinator field -> its dd
  function renderCoordinator(c) {
    const dl = $("coordinator");
    if (!c) {
      fields.clear();
      if (dl.children.length !== 1 || dl.firstChild.tagName !== "DT") dl.replaceChildren(el("dt", {}, "none yet"));
      return;
    }
    const rows = [
      ["coordinator", (c.coordinator_id || "(none)") + " (epoch " + c.epoch + ")"],
      ["max leases per worker", c.max_leases_per_worker + " (target " + c.target_leases_per_worker + ", cap " + c.cap + ")"],
      ["open shards", c.shard_count],
      ["workers (desired / live)", c.worker_count + " / " + c.live_workers],
      ["unowned shards", c.unowned_shards],
      ["recommended workers", c.recommended_workers],
      ["dead workers", c.dead_workers.length ? c.dead_workers.join(", ") : "none"],
      ["waiting parents", c.waiting_parents],
      ["updated", c.updated_at || "-"],
    ];
    if (fields.size === 0) {
      dl.replaceChildren();
      for (const [k] of rows) {
        const dd = el("dd", { "data-field": k });
        fields.set(k, dd);
        dl.append(el("dt", {}, k), dd);
      }
    }
    for (const [k, v] of rows) setText(fields.get(k), String(v));
  }

  function renderWorkers(meta, leases, c, now) {
    const body = $("workers").tBodies[0];
    if (!meta) { body.replaceChildren(); rows.clear(); return; }
    const held = new Map(), lag = new Map();
    if (leases) {
      leases.workers.forEach((w) => held.set(w.worker, w.leases));
      leases.leases.forEach((l) => {
        if (l.owner && l.millis_behind_latest != null) lag.set(l.owner, Math.max(lag.get(l.owner) || 0, l.millis_behind_latest));
      });
    }
    const dead = new Set(c ? c.dead_workers : []);
    const max = c ? c.target_leases_per_worker : 0;
    const present = new Set(meta.workers.map((w) => w.worker_id));
    for (const [id, r] of rows) if (!present.has(id)) { r.tr.remove(); rows.delete(id); }
    let prev = null;
    for (const w of meta.workers) {
      const id = w.worker_id;
      let r = rows.get(id);
      if (!r) {
        const text = () => document.createTextNode("");
        r = { tr: el("tr", { "data-worker": id }), swatch: el("span", { class: "swatch" }), bar: el("i"),
          state: text(), count: text(), age: text(), lag: text() };
        r.tr.append(el("td", {}, r.swatch), el("td", {}, id), el("td", {}, r.state),
          el("td", { class: "leases" }, r.count, el("span", { class: "bar" }, r.bar)), el("td", { class: "age" }, r.age), el("td", {}, r.lag));
        rows.set(id, r);
      }
      const n = held.get(id) || 0;
      const age = w.last_seen ? Math.max(0, now - Date.parse(w.last_seen)) : null;
      const gone = dead.has(id) || w.state === "gone";
      const cls = gone ? "dead" : "";
      if (r.tr.className !== cls) r.tr.className = cls;
      const colour = colourOf(id);
      if (r.colour !== colour) { r.swatch.style.background = r.colour = colour; }
      setData(r.state, gone && w.state !== "gone" ? "expired" : w.state);
      setData(r.count, n + " / " + max);
      const width = (max ? Math.min(100, (100 * n) / max) : 0) + "%";
      if (r.width !== width) { r.bar.style.width = r.width = width; }
      setData(r.age, duration(age));
      setData(r.lag, duration(lag.has(id) ? lag.get(id) : null));
      place(body, r.tr, prev);
      prev = r.tr;
    }
  }

  const grids = { "active": "grid-active", "waiting for parent": "grid-waiting", "unowned": "grid-unowned", "finished": "grid-finished" };

  function renderShards(leases) {
    const next = new Map(), children = new Map();
    for (const l of leases ? leases.leases : []) {
      next.set(l.shard, l);
      for (const p of l.parents || []) { // the event stream leaves out empty parents
        if (!children.has(p)) children.set(p, []);
        children.get(p).push(l.shard);
      }
    }
    byShard = next;
    childrenOf = children;
    // Cells of deleted leases go first, so that the others stay in place.
    for (const [id, cl] of cells) if (!next.has(id)) { cl.el.remove(); cells.delete(id); }
    if (!leases) return;
    const s = leases.summary;
    setText($("shard-summary"), `${s.total} leases: ${s.active} active, ${s.unowned} unowned, ${s.waiting_for_parent} waiting for parent, ${s.finished} finished`);
    const last = new Map(); // grid -> the cell placed last in it
    for (const l of leases.leases) {
      let cl = cells.get(l.shard);
      if (!cl) {
        cl = { el: el("div", { class: "shard", "data-shard": l.shard }), lagText: document.createTextNode("") };
        cl.el.append(shortShard(l.shard), el("small", {}, cl.lagText));
        cells.set(l.shard, cl);
      }
      if (cl.owner !== l.owner) { cl.el.setAttribute("data-owner", l.owner); cl.owner = l.owner; }
      if (cl.state !== l.state) { cl.el.setAttribute("data-state", l.state); cl.state = l.state; }
      const colour = l.owner && l.state !== "waiting for parent" ? colourOf(l.owner) : "";
      if (cl.colour !== colour) { cl.el.style.background = cl.colour = colour; }
      const lag = l.owner ? duration(l.millis_behind_latest) : "";
      setData(cl.lagText, lag);
      // Cells stay in shard order within their grid; only a new cell or a change of state moves one.
      const grid = $(grids[l.state] || "grid-unowned");
      const prev = last.get(grid) || null;
      place(grid, cl.el, prev);
      last.set(grid, cl.el);
    }
    if (hovered) highlight(hovered);
  }

  // The server sends its last 200 events (Config.MaxEvents), oldest first: the list holds
  // just those, keyed by seq; new ones are added at the top and those past the cap removed.
  function renderEvents(events) {
    const list = $("events");
    const keep = new Set();
    for (const e of events) {
      const key = e.time + "|" + e.kind + "|" + e.message;
      const it = items.get(e.seq);
      // A page reconnected to a restarted server sees the same seq for another event.
      if (it && it.key === key) { keep.add(e.seq); continue; }
      if (it) it.li.remove();
      items.set(e.seq, { key, li: el("li", { "data-kind": e.kind, "data-seq": e.seq },
        el("time", {}, e.time.slice(11, 19)), el("span", { class: "kind" }, e.kind), e.message) });
      keep.add(e.seq);
    }
    for (const [seq, it] of items) if (!keep.has(seq)) { it.li.remove(); items.delete(seq); }
    if (events.length === 0) {
      if (!list.querySelector("li.none")) list.replaceChildren(el("li", { class: "none" }, "no change seen since the dashboard started"));
      return;
    }
    const none = list.querySelector("li.none");
    if (none) none.remove();
    // Newest first: only new events move in, at the top.
    let prev = null;
    for (let i = events.length - 1; i >= 0; i--) {
      const li = items.get(events[i].seq).li;
      place(list, li, prev);
      prev = li;
    }
  }

  function related(shard) {
    const row = byShard.get(shard);
    return { row, parents: (row && row.parents) || [], children: childrenOf.get(shard) || [] };
  }

  function highlight(shard) {
    for (const e of marked) e.classList.remove("hover", "parent", "child");
    marked = [];
    if (!shard) return;
    const { parents, children } = related(shard);
    const mark = (id, cls) => { const cl = cells.get(id); if (cl) { cl.el.classList.add(cls); marked.push(cl.el); } };
    mark(shard, "hover");
    parents.forEach((p) => mark(p, "parent"));
    children.forEach((ch) => mark(ch, "child"));
  }

  document.addEventListener("mouseover", (ev) => {
    const cell = ev.target.closest(".shard");
    const tip = $("tip");
    if (!cell) { hovered = null; tip.hidden = true; highlight(""); return; }
    hovered = cell.dataset.shard;
    highlight(hovered);
    const { row, parents, children } = related(hovered);
    if (!row) return;
    tip.textContent = [row.shard, "owner: " + (row.owner || "none"), "state: " + row.state, "epoch: " + row.epoch,
      "lag: " + duration(row.millis_behind_latest), "parents: " + (parents.join(", ") || "none"),
      "children: " + (children.join(", ") || "none")].join("\n");
    const r = cell.getBoundingClientRect();
    tip.style.left = Math.min(r.left, window.innerWidth - 390) + "px";
    tip.style.top = r.bottom + 6 + "px";
    tip.hidden = false;
  });

  function setStatus(text, cls) {
    setText($("status"), text);
    if ($("status").className !== "status " + cls) $("status").className = "status " + cls;
  }

  if (window.EventSource) {
    const es = new EventSource("api/events");
    es.addEventListener("update", (ev) => { render(JSON.parse(ev.data)); setStatus("live", "live"); });
    es.onerror = () => setStatus("disconnected, retrying…", "down");
  } else {
    const poll = () => fetch("api/state").then((r) => r.json()).then((u) => { render(u); setStatus("live (polling)", "live"); })
      .catch(() => setStatus("disconnected, retrying…", "down")).finally(() => setTimeout(poll, 2000));
    poll();
  }
})();
