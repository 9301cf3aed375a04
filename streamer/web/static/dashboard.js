// streamer's dashboard: every stream's frame, label, lights and timeline; the event list.
// Plain JavaScript, no build step, nothing from a CDN (uPlot is vendored, see vendor/).
// The token, when the node has one: /#token=T or /?token=T; it goes on every URL as ?token=.
"use strict";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token") || query.get("token") || "";
const SPAN_S = 300; // the timelines' last minutes
const MAX_SERIES = 12; // labels drawn per timeline
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#ff7b72", "#39c5cf",
  "#e3b341", "#8b949e", "#56d364", "#ffa657", "#79c0ff"];
// what the page shows, for tests and the curious; "streamer:state" fires when it changes
const state = { node: null, streams: {}, events: [], history: null, bands: [] };
window.dashboardState = state;
const changed = () => window.dispatchEvent(new Event("streamer:state"));

function url(path, params = {}) {
  const q = new URLSearchParams(params);
  if (TOKEN) q.set("token", TOKEN);
  const s = q.toString();
  return s ? `${path}${path.includes("?") ? "&" : "?"}${s}` : path;
}

async function getJSON(path, params) {
  const resp = await fetch(url(path, params));
  if (!resp.ok) throw Object.assign(new Error(`${path}: ${resp.status}`), { status: resp.status });
  return resp.json();
}

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

const colorOf = (label) => COLORS[[...label].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7)
  % COLORS.length];
const clock = (t) => new Date(t * 1000).toLocaleTimeString();
const pct = (x) => (x === null || x === undefined ? "-" : `${Math.round(x * 100)} %`);

// -- a stream's card ----------------------------------------------------------------------
function card(s) {
  const view = { id: s.id, predictions: 0, frames: 0, points: [], labels: [], plot: null,
    loading: false, label: null, score: null };
  const publish = s.webrtc
    ? el("a", { className: "publish", href: url("/publish", { stream: s.id }), textContent: "publish" })
    : null;
  view.img = el("img", { alt: `the newest frame of ${s.id}`, hidden: true });
  view.placeholder = el("div", { className: "placeholder", textContent: "no frame yet" });
  view.labelEl = el("span", { className: "label", textContent: "-" });
  view.scoreEl = el("span", { className: "score" });
  view.tagsEl = el("div", { className: "tags" });
  view.lightsEl = el("div", { className: "lights" });
  view.rateEl = el("div", { className: "rate" });
  view.pausedEl = el("span", { className: "paused", textContent: "paused", hidden: true,
    title: "P/N/S/set/enabled OFF: its sources are closed" });
  view.timeline = el("div", { className: "timeline" });
  view.root = el("article", { className: "card", id: `card-${s.id}` },
    el("header", {}, el("h2", { textContent: s.id }, " ", view.pausedEl), publish),
    el("div", { className: "frame" }, view.img, view.placeholder),
    el("div", { className: "now" }, view.labelEl, view.scoreEl),
    view.tagsEl,
    el("div", { className: "meta" }, view.lightsEl, view.rateEl),
    view.timeline);
  view.root.dataset.stream = s.id;
  return view;
}

function showState(view, s) {
  if (s.label !== null && view.predictions === 0) showLabel(view, s.label, s.score, s.tags);
  view.lightsEl.replaceChildren(...Object.entries(s.modalities).map(([m, light]) =>
    el("span", { className: `light ${light}`, textContent: m, title: light })));
  const ms = s.latency_ms === null ? "-" : `${Math.round(s.latency_ms)} ms`;
  view.rateEl.textContent = `${s.windows_per_s.toFixed(1)} windows/s · ${ms}`;
  view.pausedEl.hidden = s.enabled;
  view.root.classList.toggle("disabled", !s.enabled);
}

function showLabel(view, label, score, tags) {
  view.label = label;
  view.score = score;
  view.labelEl.textContent = label;
  view.scoreEl.textContent = pct(score);
  view.tagsEl.replaceChildren(...(tags || []).slice(0, 8).map((t) =>
    el("span", { className: "tag", textContent: `${t.tag} ${t.score.toFixed(2)}`,
      title: t.modality })));
}

function refreshFrame(view) {
  if (view.loading) return;
  view.loading = true;
  const next = new Image();
  next.onload = () => {
    view.loading = false;
    view.img.src = next.src;
    view.img.hidden = false;
    view.placeholder.hidden = true;
    view.frames += 1;
    changed();
  };
  next.onerror = () => { view.loading = false; }; // none yet (404): the placeholder stays
  next.src = url(`/api/streams/${encodeURIComponent(view.id)}/latest.jpg`, { t: Date.now() });
}

// -- the timeline: each label's score, events as bands ------------------------------------
function addPoint(view, p) { // kept in time order: /recent and the live ones may interleave
  const last = view.points[view.points.length - 1];
  if (last && p.t <= last.t) {
    if (view.points.some((q) => q.t === p.t)) return;
    view.points.push(p);
    view.points.sort((a, b) => a.t - b.t);
  } else view.points.push(p);
  const oldest = view.points[view.points.length - 1].t - SPAN_S;
  while (view.points.length && view.points[0].t < oldest) view.points.shift();
}

function drawTimeline(view) {
  if (!window.uPlot || !view.points.length) return;
  const seen = new Set(view.labels);
  for (const p of view.points) for (const l of Object.keys(p.scores)) {
    if (!seen.has(l) && seen.size < MAX_SERIES) { seen.add(l); view.labels.push(l); }
  }
  const data = [view.points.map((p) => p.t),
    ...view.labels.map((l) => view.points.map((p) => p.scores[l] ?? null))];
  if (view.plot && view.plot.series.length === view.labels.length + 1) {
    view.plot.setData(data);
    return;
  }
  if (view.plot) view.plot.destroy();
  const width = Math.max(200, view.timeline.clientWidth || 320);
  view.plot = new uPlot({
    width, height: 130,
    scales: { y: { range: [0, 1] } },
    axes: [{ stroke: "#8b919c", grid: { stroke: "#2c3038" }, ticks: { stroke: "#2c3038" },
      space: 70, values: (u, ticks) => ticks.map((t) =>
        new Date(t * 1000).toLocaleTimeString([], { hour12: false })) },
      { stroke: "#8b919c", size: 36, grid: { stroke: "#2c3038" }, ticks: { stroke: "#2c3038" } }],
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false } },
    series: [{}, ...view.labels.map((l) => ({ label: l, stroke: colorOf(l), width: 1.5,
      points: { show: false } }))],
    hooks: { drawClear: [(u) => drawBands(u, view.id)] },
  }, data, view.timeline);
  view.plot.over.addEventListener("click", (e) => {
    const t = view.plot.posToVal(e.offsetX, "x");
    const ev = state.bands.find((b) => b.stream === view.id && b.start <= t
      && t <= (b.end ?? Date.now() / 1000));
    if (ev) openEvent(ev);
  });
  changed();
}

function drawBands(u, stream) {
  const { ctx, bbox } = u;
  ctx.save();
  for (const ev of state.bands) {
    if (ev.stream !== stream) continue;
    const x0 = u.valToPos(ev.start, "x", true);
    const x1 = u.valToPos(ev.end ?? u.scales.x.max, "x", true);
    if (x1 < bbox.left || x0 > bbox.left + bbox.width) continue;
    const left = Math.max(x0, bbox.left);
    ctx.fillStyle = colorOf(ev.label) + "40";
    ctx.fillRect(left, bbox.top, Math.min(x1, bbox.left + bbox.width) - left, bbox.height);
    ctx.fillStyle = colorOf(ev.label);
    ctx.font = `${12 * devicePixelRatio}px system-ui`;
    ctx.fillText(ev.label, left + 3, bbox.top + 14 * devicePixelRatio);
  }
  ctx.restore();
}

// -- the event list and an event's detail -------------------------------------------------
function eventItem(ev) {
  const thumb = ev.snapshot
    ? el("img", { src: url(ev.snapshot), alt: `snapshot of event ${ev.id}`, loading: "lazy" })
    : el("div", { className: "nothumb" });
  const span = ev.end === null ? "open" : `${(ev.end - ev.start).toFixed(1)} s`;
  const li = el("li", { title: ev.id }, thumb, el("div", {},
    el("b", { textContent: ev.label }), ` ${ev.stream}`, el("br"),
    `${clock(ev.start)} · ${span}`, el("br"), `peak ${pct(ev.peak_score)}`));
  li.dataset.event = ev.id;
  li.onclick = () => openEvent(ev);
  return li;
}

async function openEvent(ev) {
  try { ev = await getJSON(`/api/events/${encodeURIComponent(ev.id)}`); } catch { /* as listed */ }
  $("d-title").textContent = `${ev.label} on ${ev.stream}`;
  $("d-snapshot").hidden = !ev.snapshot;
  $("d-nosnap").hidden = Boolean(ev.snapshot);
  if (ev.snapshot) $("d-snapshot").src = url(ev.snapshot);
  const mods = Object.entries(ev.modalities || {}).map(([m, v]) =>
    `${m}: ${v.present ? "present" : "absent"} ${pct(v.fraction)}${v.supported ? ", supports it" : ""}`);
  const fields = [["start", clock(ev.start)], ["end", ev.end === null ? "open" : clock(ev.end)],
    ["peak", `${pct(ev.peak_score)} at ${clock(ev.peak_time)}`], ["windows", ev.windows],
    ["modalities", mods.join("; ")], ["reason", ev.reason ?? "-"], ["id", ev.id]];
  $("d-fields").replaceChildren(...fields.flatMap(([k, v]) =>
    [el("dt", { textContent: k }), el("dd", { textContent: String(v) })]));
  $("detail").showModal();
}

async function refreshEvents() {
  const filters = { limit: 60 };
  if ($("f-stream").value) filters.stream = $("f-stream").value;
  if ($("f-label").value) filters.label = $("f-label").value;
  try {
    const [list, bands] = await Promise.all([getJSON("/api/events", filters),
      getJSON("/api/events", { since: Date.now() / 1000 - SPAN_S, limit: 200 })]);
    state.history = true;
    state.events = list.events;
    state.bands = bands.events;
    $("events-note").textContent = list.count ? "" : "no events yet";
    $("events").replaceChildren(...list.events.map(eventItem));
    for (const ev of bands.events) addOption($("f-label"), ev.label);
  } catch (e) {
    state.history = false;
    $("events-note").textContent = e.status === 404
      ? "no event history on this node (GET /api/events: 404)"
      : `cannot load the events: ${e.message}`;
  }
  changed();
}

function addOption(select, value) {
  if (![...select.options].some((o) => o.value === value)) select.append(new Option(value, value));
}

// -- wiring ---------------------------------------------------------------------------------
function listen(view) {
  const events = new EventSource(url(`/events/${encodeURIComponent(view.id)}`));
  events.onmessage = (e) => {
    const p = JSON.parse(e.data);
    view.predictions += 1;
    showLabel(view, p.label, p.score, p.tags);
    addPoint(view, { t: p.window.end, scores: p.scores });
    changed();
  };
}

async function refreshStreams() {
  try {
    const body = await getJSON("/api/streams");
    $("notice").textContent = "";
    for (const s of body.streams) if (state.streams[s.id]) showState(state.streams[s.id], s);
  } catch (e) {
    $("notice").textContent = e.status === 401 ? "this node needs a token: open /#token=…"
      : `cannot reach the node: ${e.message}`;
  }
  changed();
}

async function start() {
  let body;
  try { body = await getJSON("/api/streams"); } catch (e) {
    $("notice").textContent = e.status === 401 ? "this node needs a token: open /#token=…"
      : `cannot load /api/streams: ${e.message}`;
    return;
  }
  state.node = body.node;
  $("node").textContent = body.node;
  for (const s of body.streams) {
    const view = card(s);
    state.streams[s.id] = view;
    $("grid").append(view.root);
    addOption($("f-stream"), s.id);
    showState(view, s);
    listen(view);
    getJSON(`/api/streams/${encodeURIComponent(s.id)}/recent`)
      .then((r) => { for (const p of r.points) addPoint(view, p); drawTimeline(view); })
      .catch(() => {}); // no history: the timeline starts with the live predictions
  }
  for (const f of ["f-stream", "f-label"]) $(f).onchange = refreshEvents;
  const tick = () => {
    for (const view of Object.values(state.streams)) { refreshFrame(view); drawTimeline(view); }
  };
  tick();
  setInterval(tick, 1000);
  setInterval(refreshStreams, 1000);
  refreshEvents();
  setInterval(refreshEvents, 2000);
  changed();
}

start();
