// The kds-lease-manager dashboard: renders each update the server pushes (server-sent
// events on api/events; polling api/state where EventSource is missing). No build step.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const palette = ["#4a78c2", "#e07b39", "#3a9d5d", "#b5479b", "#c9a227", "#2aa3b0", "#8a5cc2", "#d2495b", "#6b8e23", "#795548"];
  const colours = new Map(); // worker id -> colour, stable for the life of the page
  let last = null;           // the last update
  let hovered = null;        // the shard under the pointer

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
    last = u;
    const snap = u.snapshot, meta = snap.metadata, leases = snap.leases;
    const now = Date.parse(snap.time);
    $("title").textContent = u.title || "";
    document.body.dataset.updated = snap.time;

    const errs = snap.errors || [];
    $("errors").hidden = errs.length === 0;
    $("errors").textContent = errs.join("; ");

    const c = meta && meta.coordinator;
    const warnings = (meta && meta.warnings) || [];
    $("alarm").hidden = warnings.length === 0;
    $("alarm").textContent = warnings.map((w) => "⚠ " + w).join("  ");

    // Known workers get their colours in id order, so the first page load is stable.
    const ids = new Set();
    (meta ? meta.workers : []).forEach((w) => ids.add(w.worker_id));
    (leases ? leases.leases : []).forEach((l) => l.owner && ids.add(l.owner));
    [...ids].sort().forEach(colourOf);

    renderCoordinator(c);
    renderWorkers(meta, leases, c, now);
    renderShards(leases);
    renderEvents(u.events);
  }

  function renderCoordinator(c) {
    const dl = $("coordinator");
    dl.replaceChildren();
    if (!c) { dl.append(el("dt", {}, "none yet")); return; }
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
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", { "data-field": k }, String(v)));
  }

  function renderWorkers(meta, leases, c, now) {
    const body = $("workers").tBodies[0];
    body.replaceChildren();
    if (!meta) return;
    const held = new Map(), lag = new Map();
    if (leases) {
      leases.workers.forEach((w) => held.set(w.worker, w.leases));
      leases.leases.forEach((l) => {
        if (l.owner && l.millis_behind_latest != null) lag.set(l.owner, Math.max(lag.get(l.owner) || 0, l.millis_behind_latest));
      });
    }
    const dead = new Set(c ? c.dead_workers : []);
    const max = c ? c.target_leases_per_worker : 0;
    for (const w of meta.workers) {
      const n = held.get(w.worker_id) || 0;
      const age = w.last_seen ? Math.max(0, now - Date.parse(w.last_seen)) : null;
      const gone = dead.has(w.worker_id) || w.state === "gone";
      const bar = el("span", { class: "bar" }, el("i", { style: "width:" + (max ? Math.min(100, (100 * n) / max) : 0) + "%" }));
      body.append(el("tr", { "data-worker": w.worker_id, class: gone ? "dead" : "" },
        el("td", {}, el("span", { class: "swatch", style: "background:" + colourOf(w.worker_id) })),
        el("td", {}, w.worker_id),
        el("td", {}, gone && w.state !== "gone" ? "expired" : w.state),
        el("td", { class: "leases" }, n + " / " + max, bar),
        el("td", { class: "age" }, duration(age)),
        el("td", {}, duration(lag.has(w.worker_id) ? lag.get(w.worker_id) : null))));
    }
  }

  const grids = { "active": "grid-active", "waiting for parent": "grid-waiting", "unowned": "grid-unowned", "finished": "grid-finished" };

  function renderShards(leases) {
    for (const id of Object.values(grids)) $(id).replaceChildren();
    if (!leases) return;
    const s = leases.summary;
    $("shard-summary").textContent = `${s.total} leases: ${s.active} active, ${s.unowned} unowned, ${s.waiting_for_parent} waiting for parent, ${s.finished} finished`;
    for (const l of leases.leases) {
      const cell = el("div", { class: "shard", "data-shard": l.shard, "data-owner": l.owner, "data-state": l.state },
        shortShard(l.shard), el("small", {}, l.owner ? duration(l.millis_behind_latest) : ""));
      if (l.owner && l.state !== "waiting for parent") cell.style.background = colourOf(l.owner);
      $(grids[l.state] || "grid-unowned").append(cell);
    }
    if (hovered) highlight(hovered);
  }

  function renderEvents(events) {
    const list = $("events");
    list.replaceChildren();
    if (events.length === 0) list.append(el("li", { class: "none" }, "no change seen since the dashboard started"));
    for (let i = events.length - 1; i >= 0; i--) {
      const e = events[i];
      list.append(el("li", { "data-kind": e.kind, "data-seq": e.seq },
        el("time", {}, e.time.slice(11, 19)), el("span", { class: "kind" }, e.kind), e.message));
    }
  }

  function related(shard) {
    const leases = last && last.snapshot.leases ? last.snapshot.leases.leases : [];
    const row = leases.find((l) => l.shard === shard);
    const children = leases.filter((l) => l.parents.includes(shard)).map((l) => l.shard);
    return { row, parents: row ? row.parents : [], children };
  }

  function highlight(shard) {
    document.querySelectorAll(".shard.hover, .shard.parent, .shard.child").forEach((e) => e.classList.remove("hover", "parent", "child"));
    const { parents, children } = related(shard);
    const mark = (id, cls) => { const e = document.querySelector(`.shard[data-shard="${CSS.escape(id)}"]`); if (e) e.classList.add(cls); };
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
    $("status").textContent = text;
    $("status").className = "status " + cls;
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
