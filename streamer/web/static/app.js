// streamer's browser page: publish camera + microphone + text over WHIP, show predictions.
// Plain JavaScript, no build step, nothing from a CDN.
// URL parameters: ?stream=ID&token=T&autostart=1 (the token may also be typed in).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { config: null, pc: null, channel: null, location: null, events: null,
  stream: null, tracks: [], predictions: 0, last: null, sent: 0, published: false };
window.streamerState = state; // for tests and the curious

// Tell watchers (tests, extensions) that streamerState changed.
function changed() { window.dispatchEvent(new Event("streamer:state")); }

function token() { return $("token").value.trim(); }
function authHeaders() { return token() ? { Authorization: "Bearer " + token() } : {}; }
function say(text, error = false) {
  $("state").textContent = text;
  $("state").classList.toggle("error", error);
}

async function loadConfig() {
  const resp = await fetch("/api/config", { headers: authHeaders() });
  if (resp.status === 401) { say("this node needs a token", true); return; }
  if (!resp.ok) { say("cannot load /api/config: " + resp.status, true); return; }
  state.config = await resp.json();
  $("node").textContent = state.config.node;
  const select = $("stream");
  select.replaceChildren();
  for (const s of state.config.streams) {
    const what = [s.video && "camera", s.audio && "microphone", s.text && "text"].filter(Boolean);
    const opt = new Option(`${s.id} (${what.join(" + ")})${s.busy ? ", busy" : ""}`, s.id);
    select.append(opt);
  }
  if (!state.config.streams.length) say("no stream of this node takes webrtc", true);
  if (params.get("stream")) select.value = params.get("stream");
  listen(select.value);
}

function listen(stream) {
  if (!stream || stream === state.stream) return;
  if (state.events) state.events.close();
  state.stream = stream;
  const q = token() ? "?token=" + encodeURIComponent(token()) : "";
  const events = new EventSource(`/events/${encodeURIComponent(stream)}${q}`);
  events.onmessage = (e) => show(JSON.parse(e.data));
  state.events = events;
}

function show(p) {
  state.predictions += 1;
  state.last = p;
  $("label").textContent = `${p.label} (${Math.round(p.score * 100)} %)`;
  const present = Object.entries(p.modalities).filter(([, m]) => m.present).map(([k]) => k);
  const li = document.createElement("li");
  const t = new Date(p.window.end * 1000).toLocaleTimeString();
  li.textContent = `${t}  seq ${p.seq}  ${p.label}  ${p.score.toFixed(2)}  [${present.join(" ")}]`;
  const list = $("predictions");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
  changed();
}

function iceGathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms); // publish with what there is
  });
}

async function publish() {
  const stream = $("stream").value;
  const info = state.config && state.config.streams.find((s) => s.id === stream);
  if (!info) { say("pick a stream", true); return; }
  $("publish").disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      video: info.video ? { width: 640, height: 480 } : false,
      audio: info.audio ? { echoCancellation: false, noiseSuppression: false,
        autoGainControl: false } : false,
    });
    state.tracks = media.getTracks();
    $("preview").srcObject = media;
    const pc = new RTCPeerConnection({
      iceServers: state.config.ice_servers.map((u) => ({ urls: u })) });
    state.pc = pc;
    for (const track of state.tracks) pc.addTransceiver(track, { direction: "sendonly" });
    const channel = pc.createDataChannel("text");
    channel.onopen = () => { $("send").disabled = false; changed(); };
    channel.onclose = () => { $("send").disabled = true; changed(); };
    state.channel = channel;
    pc.onconnectionstatechange = () => {
      say("connection " + pc.connectionState, pc.connectionState === "failed");
      state.published = pc.connectionState === "connected";
      changed();
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 3000);
    const resp = await fetch(`/whip/${encodeURIComponent(stream)}`, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", ...authHeaders() },
      body: pc.localDescription.sdp,
    });
    if (resp.status !== 201) throw new Error(`WHIP ${resp.status}: ${(await resp.text()).trim()}`);
    state.location = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    say("publishing to " + stream);
    $("stop").disabled = false;
    listen(stream);
  } catch (e) {
    say(String(e.message || e), true);
    await stop();
  }
}

async function stop() {
  if (state.location) {
    await fetch(state.location, { method: "DELETE", headers: authHeaders() }).catch(() => {});
    state.location = null;
  }
  if (state.pc) state.pc.close();
  state.pc = null;
  state.channel = null;
  for (const t of state.tracks) t.stop();
  state.tracks = [];
  state.published = false;
  $("publish").disabled = false;
  $("stop").disabled = true;
  $("send").disabled = true;
}

function sendText(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.channel || state.channel.readyState !== "open") return;
  state.channel.send(text);
  state.sent += 1;
  $("sent").textContent = `sent: ${text}`;
  $("text").value = "";
  changed();
}

$("token").value = params.get("token") || "";
$("token").addEventListener("change", loadConfig);
$("stream").addEventListener("change", (e) => listen(e.target.value));
$("publish").addEventListener("click", publish);
$("stop").addEventListener("click", stop);
$("textform").addEventListener("submit", sendText);
window.addEventListener("pagehide", () => { if (state.location) stop(); });
loadConfig().then(() => { if (params.get("autostart") === "1") publish(); });
