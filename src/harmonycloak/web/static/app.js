// harmonycloak web page: plain JavaScript, no build step, nothing from the internet.
// Text from the server (file names, messages) is always set as textContent, never as HTML.
"use strict";

const HEADERS = { "X-HarmonyCloak": "1" };
const state = {
  info: null,
  staged: [],          // {file, id, status: "ready"|"sending"|"failed", message}
  cards: new Map(),    // job id -> {el, status, parts}
  players: {},         // job id -> ABPlayer (also window.harmonycloak.players, for tests)
  pollTimer: null,
};
// for tests and the curious: the players, the page state, and the shared AudioContext
window.harmonycloak = { players: state.players, state, context: () => context() };

// ------------------------------------------------------------------ small helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);

function formatBytes(bytes) {
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(bytes >= 1e8 ? 0 : 1)} MB`;
  return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}
function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
function timeLeft(eta) {
  if (eta === null || eta === undefined) return "";
  if (eta < 45) return `about ${Math.max(1, Math.round(eta))} s left`;
  if (eta < 90) return "about a minute left";
  if (eta < 3600) return `about ${Math.round(eta / 60)} min left`;
  return `about ${(eta / 3600).toFixed(1)} h left`;
}
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...HEADERS, ...(options.headers || {}) } });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ------------------------------------------------------------------ tabs

function showTab(name) {
  for (const tab of ["protect", "audit", "site"]) {
    $(`tab-${tab}`).hidden = tab !== name;
    $(`tab-${tab}-btn`).setAttribute("aria-selected", String(tab === name));
  }
}

// ------------------------------------------------------------------ start

async function start() {
  for (const tab of ["protect", "audit", "site"]) $(`tab-${tab}-btn`).addEventListener("click", () => showTab(tab));
  state.info = await (await api("/api/info")).json();
  renderInfo();
  setupDrop();
  $("opt-tags").addEventListener("change", () => { $("rights-fields").hidden = !$("opt-tags").checked; });
  $("protect").addEventListener("click", protectStaged);
  $("fmt").addEventListener("change", fillBitrates);
  $("zip").addEventListener("click", downloadZip);
  $("audit-form").addEventListener("submit", runAudit);
  $("site-form").addEventListener("submit", downloadSiteFiles);
  document.body.dataset.ready = "1";
  await refreshJobs();
}

function renderInfo() {
  const info = state.info;
  const where = $("where");
  if (!info.loopback) {
    where.textContent = "Reachable from other computers on your network — anyone who can reach it can use it.";
    where.classList.add("exposed");
  }
  $("limits").textContent = `WAV, FLAC, MP3, OGG, Opus, M4A or MIDI, up to ${info.max_upload_mb} MB each. ` +
    "Your files stay on this computer; the originals are never changed.";
  const presets = $("presets");
  for (const p of info.presets) {
    presets.append(h("label", { class: "preset" },
      h("input", { type: "radio", name: "preset", value: p.name, checked: p.name === info.default_preset }),
      h("span", { class: "title", text: p.title }),
      h("span", { class: "summary", text: p.summary }),
      h("span", { class: "cost", text: p.cost })));
  }
  renderKeyNote();
  for (const f of info.formats) $("fmt").append(h("option", { value: f.name, text: f.label }));
  fillBitrates();
  $("foot-data").textContent = `harmonycloak ${info.version} · protection mode: ${info.mode} · data folder: ${info.data_dir}`;
  if (!info.audit_enabled) {
    $("audit-run").disabled = true;
    $("audit-status").textContent = "The audit only runs when the app is reachable from this computer alone.";
  }
}

function renderKeyNote() {
  const key = state.info.watermark_key;
  $("key-note").textContent = key.key_id
    ? `Your watermark key (id ${key.key_id}) is kept in ${key.path}. Back it up: without it nobody, not even you, can read the watermark.`
    : `A secret key is made the first time (kept in ${key.path}); back it up afterwards.`;
}

function fillBitrates() {
  const spec = state.info.formats.find((f) => f.name === $("fmt").value);
  const select = $("bitrate");
  select.replaceChildren(...spec.bitrates_kbps.map((b) =>
    h("option", { value: String(b), text: `${b} kbps`, selected: b === spec.default_kbps })));
  $("bitrate-label").hidden = spec.bitrates_kbps.length === 0;
}

function exportQuery() {
  const fmt = $("fmt").value;
  const spec = state.info.formats.find((f) => f.name === fmt);
  const params = new URLSearchParams({ format: fmt });
  if (spec.bitrates_kbps.length) params.set("bitrate_kbps", $("bitrate").value);
  return params.toString();
}

// ------------------------------------------------------------------ adding files

function setupDrop() {
  const drop = $("drop");
  const picker = $("picker");
  $("choose").addEventListener("click", () => picker.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); picker.click(); } });
  picker.addEventListener("change", () => { addFiles(picker.files); picker.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
  // a file dropped anywhere else must not make the browser leave the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

let stagedSeq = 0;
function addFiles(fileList) {
  const limit = state.info.max_upload_mb * 1e6;
  for (const file of fileList) {
    const item = { file, id: ++stagedSeq, status: "ready", message: "" };
    if (file.size > limit) {
      item.status = "failed";
      item.message = `${file.name} (${Math.round(file.size / 1e6)} MB) is larger than this app's upload limit of ` +
        `${state.info.max_upload_mb} MB; protect it with the command line (harmonycloak protect), or start the app ` +
        "with a higher --max-upload-mb";
    }
    state.staged.push(item);
  }
  renderStaged();
}

function renderStaged() {
  const list = $("staged");
  list.replaceChildren(...state.staged.map((item) => h("li", { class: item.status, "data-name": item.file.name },
    h("span", { class: "fname", text: item.file.name }),
    h("span", { class: "size", text: formatBytes(item.file.size) }),
    h("button", { class: "x", title: "Remove from the list", "aria-label": `Remove ${item.file.name}`,
      onclick: () => { state.staged = state.staged.filter((s) => s !== item); renderStaged(); } }, "×"),
    item.message ? h("span", { class: `msg ${item.status}`, text: item.message }) : null)));
  const ready = state.staged.filter((s) => s.status === "ready").length;
  const button = $("protect");
  button.disabled = ready === 0;
  button.textContent = ready > 1 ? `Protect ${ready} files` : "Protect";
  $("protect-note").textContent = ready ? "" : (state.staged.length ? "" : "Add files first.");
}

function options() {
  const preset = document.querySelector('input[name="preset"]:checked');
  return {
    preset: preset ? preset.value : state.info.default_preset,
    watermark: $("opt-watermark").checked,
    tags: $("opt-tags").checked,
    owner: $("opt-owner").value,
    contact: $("opt-contact").value,
  };
}

function upload(item, opts) {
  // XMLHttpRequest rather than fetch: it reports upload progress for big files
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", item.file, item.file.name);
    for (const [key, value] of Object.entries(opts)) form.append(key, String(value));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    xhr.setRequestHeader("X-HarmonyCloak", "1");
    xhr.setRequestHeader("X-File-Name", encodeURIComponent(item.file.name));
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) { item.message = `sending… ${Math.round((100 * e.loaded) / e.total)} %`; renderStaged(); }
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 201) resolve({ ok: true, job: body });
      else resolve({ ok: false, message: body.detail || `${xhr.status} ${xhr.statusText}` });
    });
    xhr.addEventListener("error", () => resolve({ ok: false, message:
      `${item.file.name}: the upload failed (is the app still running? a file over ${state.info.max_upload_mb} MB is refused)` }));
    xhr.send(form);
  });
}

async function protectStaged() {
  const opts = options();
  const ready = state.staged.filter((s) => s.status === "ready");
  $("protect").disabled = true;
  for (const item of ready) {
    item.status = "sending";
    item.message = "sending…";
    renderStaged();
    const result = await upload(item, opts);
    if (result.ok) {
      state.staged = state.staged.filter((s) => s !== item);
      upsertJob(result.job);
    } else {
      item.status = "failed";
      item.message = result.message;
    }
    renderStaged();
  }
  schedulePoll(300);
  if (!state.info.watermark_key.key_id && opts.watermark) {  // the first watermark made the key
    try { state.info = await (await api("/api/info")).json(); renderKeyNote(); } catch (_) { /* keep the old note */ }
  }
}

// ------------------------------------------------------------------ the job list

async function refreshJobs() {
  let jobs = [];
  try {
    jobs = (await (await api("/api/jobs")).json()).jobs;
  } catch (error) {
    schedulePoll(3000);
    return;
  }
  const seen = new Set();
  for (const job of jobs.slice().reverse()) { upsertJob(job); seen.add(job.id); }
  for (const [id, card] of state.cards) if (!seen.has(id)) { card.el.remove(); state.cards.delete(id); }
  const active = jobs.some((j) => j.status === "queued" || j.status === "running");
  schedulePoll(active ? 700 : 4000);
}

function schedulePoll(ms) {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(refreshJobs, ms);
}

const STAGES = {
  starting: "Starting", reading: "Reading the file", "analyzing masking": "Finding where sound can hide",
  watermarking: "Hiding your watermark", optimizing: "Computing the protection", writing: "Writing",
  "verifying the written file": "Checking the written file", measuring: "Measuring quality",
};

function statusText(job) {
  if (job.status === "queued") return job.message ? `Waiting — ${job.message}` : "Waiting for its turn";
  if (job.status === "running") {
    if (job.cancel_requested) return "Cancelling…";
    const stage = STAGES[job.stage] || job.stage || "Working";
    const pct = `${Math.round(job.progress * 100)} %`;
    const left = job.stage !== "optimizing" ? "" : (job.eta_s === null ? "estimating the time left…" : timeLeft(job.eta_s));
    return [stage, pct, left].filter(Boolean).join(" · ");
  }
  if (job.status === "done") return `Protected in ${Math.round(job.elapsed_s || 0)} s`;
  if (job.status === "cancelled") return "Cancelled";
  return "Could not be protected";
}

function upsertJob(job) {
  let card = state.cards.get(job.id);
  if (!card) {
    card = buildCard(job);
    state.cards.set(job.id, card);
    $("jobs").prepend(card.el);
  }
  if (card.status !== job.status) {
    card.el.className = `job ${job.status}`;
    card.el.dataset.status = job.status;
    card.parts.cancel.hidden = !(job.status === "queued" || job.status === "running");
    card.parts.remove.hidden = job.status === "queued" || job.status === "running";
    if (job.status === "done") fillDone(card, job);
    card.status = job.status;
  }
  card.parts.status.textContent = statusText(job);
  card.parts.fill.style.width = `${Math.round(job.progress * 100)}%`;
  card.parts.bar.setAttribute("aria-valuenow", String(Math.round(job.progress * 100)));
  card.parts.bar.hidden = job.status === "failed" || job.status === "cancelled";
  const showMessage = job.message && (job.status === "failed" || job.status === "cancelled");
  card.parts.message.hidden = !showMessage;
  card.parts.message.textContent = showMessage ? job.message : "";
  $("empty").hidden = state.cards.size > 0;
  $("zip").disabled = ![...state.cards.values()].some((c) => c.status === "done");
}

function buildCard(job) {
  const parts = {};
  parts.status = h("span", { class: "status" });
  parts.cancel = h("button", { class: "danger", onclick: () => cancelJob(job.id) }, "Cancel");
  parts.remove = h("button", { onclick: () => removeJob(job.id), hidden: true }, "Remove");
  parts.fill = h("span");
  parts.bar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, parts.fill);
  parts.message = h("p", { class: "message error", hidden: true });
  parts.body = h("div", { class: "body" });
  const notes = (job.info && job.info.notes) || [];
  const el = h("li", { class: `job ${job.status}`, "data-id": job.id, "data-name": job.name },
    h("div", { class: "job-head" },
      h("span", { class: "name", text: job.name }),
      h("span", { class: "badge", text: job.kind }),
      job.payload ? h("span", { class: "badge", title: "watermark id hidden in this file", text: `mark ${job.payload}` }) : null,
      parts.status, h("span", { class: "spacer" }), parts.cancel, parts.remove),
    parts.bar, parts.message,
    notes.map((n) => h("p", { class: "note", text: n })),
    parts.body);
  return { el, parts, status: null };
}

function fillDone(card, job) {
  const body = card.parts.body;
  body.replaceChildren();
  const result = job.figures || { figures: [], notes: [] };
  body.append(h("div", { class: "figures" }, result.figures.map((f) =>
    h("div", { class: `figure ${f.good === true ? "good" : f.good === false ? "bad" : ""}`, "data-key": f.key },
      h("div", { class: "label", text: f.label }),
      h("div", { class: "value", text: f.display }),
      h("div", { class: "explain", text: f.explain })))));
  for (const note of result.notes || []) body.append(h("p", { class: "note", text: note }));
  if (result.embedding_view && result.embedding_view.clean.length) body.append(buildEmbeddingView(result.embedding_view));
  if (job.kind === "audio") body.append(buildPlayer(job));
  const img = h("img", { alt: job.kind === "audio"
    ? `Spectrograms of ${job.name}: original, protected, and the added sound amplified`
    : `Notes of ${job.name} before and after protection` });
  const details = h("details", { class: "pictures" },
    h("summary", { text: job.kind === "audio" ? "Spectrograms: original, protected, added sound ×20" : "Notes before and after" }), img);
  details.addEventListener("toggle", () => { if (details.open && !img.src) img.src = job.urls.picture; });
  body.append(details);
  const download = h("button", { class: "primary download", onclick: () => downloadOne(job) },
    job.kind === "midi" ? "Download .mid" : "Download");
  body.append(h("div", { class: "actions" }, download,
    h("a", { href: job.urls.report, download: "", text: "report (JSON)" })));
}

// ------------------------------------------------------------------ the embedding view

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children) el.append(child);
  return el;
}

function buildEmbeddingView(view) {
  // Seed 003's picture: each window's clean embedding (e) and the protected one (e'),
  // projected together onto their first two principal components, with e -> e' drawn.
  const size = 320, pad = 24;
  const all = view.clean.concat(view.protected);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 1e-9);
  const cx = (Math.max(...xs) + Math.min(...xs)) / 2, cy = (Math.max(...ys) + Math.min(...ys)) / 2;
  const at = (p) => [size / 2 + (p[0] - cx) / span * (size - 2 * pad), size / 2 - (p[1] - cy) / span * (size - 2 * pad)];
  const plot = svg("svg", { viewBox: `0 0 ${size} ${size}`, class: "embedding-plot", role: "img",
    "aria-label": "Clean and protected embeddings of each window, in two dimensions" });
  view.clean.forEach((p, i) => {
    const [x1, y1] = at(p), [x2, y2] = at(view.protected[i]);
    plot.append(svg("line", { x1, y1, x2, y2, class: "shift" }));
    plot.append(svg("circle", { cx: x1, cy: y1, r: 5, class: "clean" }, svg("title", {}, `window ${i + 1}, original`)));
    plot.append(svg("circle", { cx: x2, cy: y2, r: 5, class: "protected" }, svg("title", {}, `window ${i + 1}, protected`)));
  });
  const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;
  const cos = mean(view.cosine_similarity), moved = mean(view.normalized_l2);
  return h("details", { class: "pictures embedding-view", open: true },
    h("summary", { text: "How the embedding moved" }),
    h("div", { class: "embedding-row" }, plot,
      h("div", {},
        h("p", { class: "legend" }, h("span", { class: "dot clean" }), " original ",
          h("span", { class: "dot protected" }, ""), " protected, one pair per window"),
        h("p", { text: `Average similarity ${cos.toFixed(3)} (1 = unchanged; the seed aims below 0.3); ` +
          `average shift Δe ${moved.toFixed(3)} (the seed aims above 0.5).` }),
        h("p", { class: "note", text: "A model that learns from this file's embedding learns it at the protected " +
          "point, away from where your music really is. The picture flattens many dimensions into two " +
          `(${Math.round(100 * (view.explained_variance[0] + view.explained_variance[1]))} % of the spread shown); ` +
          "the numbers are measured in full." }))));
}

async function cancelJob(id) {
  try { upsertJob(await (await api(`/api/jobs/${id}/cancel`, { method: "POST" })).json()); } catch (e) { alert(e.message); }
  schedulePoll(300);
}

async function removeJob(id) {
  try { await api(`/api/jobs/${id}`, { method: "DELETE" }); } catch (e) { alert(e.message); return; }
  const card = state.cards.get(id);
  if (state.players[id]) { state.players[id].pause(); delete state.players[id]; }
  if (card) { card.el.remove(); state.cards.delete(id); }
  $("empty").hidden = state.cards.size > 0;
}

function downloadOne(job) {
  // fetched, not followed as a link: an error (e.g. a format that cannot hold this audio)
  // is shown on the card instead of replacing the page
  fetchDownload(`${job.urls.download}?${exportQuery()}`, job.name, state.cards.get(job.id).parts.body);
}
function downloadZip() { fetchDownload(`/api/download.zip?${exportQuery()}`, "harmonycloak-protected.zip", $("zip").parentElement); }

async function fetchDownload(url, fallbackName, where) {
  const old = where.querySelector(".download-error");
  if (old) old.remove();
  try {
    const response = await api(url);
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename\*=utf-8''([^;]+)/i.exec(disposition) || /filename="?([^";]+)"?/i.exec(disposition);
    saveBlob(await response.blob(), match ? decodeURIComponent(match[1]) : fallbackName);
  } catch (error) {
    where.append(h("p", { class: "error download-error", text: error.message }));
  }
}

// ------------------------------------------------------------------ the A/B player

let audioContext = null;
function context() {
  if (!audioContext) audioContext = new AudioContext();
  return audioContext;
}

class ABPlayer {
  // Two decoded buffers of the same length play together from the same start time; the
  // A/B switch only moves two gains (a 5 ms ramp), so nothing restarts and the position
  // is kept to the sample.
  constructor(urls) {
    this.urls = urls;
    this.which = "original";
    this.offset = 0;
    this.playing = false;
    this.starts = 0;
    this.sources = [];
    this.gains = {};
    this.buffers = null;
    this.duration = 0;
    this.onchange = () => {};
  }
  async load() {
    if (this.buffers) return;
    const ctx = context();
    const decode = async (url) => ctx.decodeAudioData(await (await api(url)).arrayBuffer());
    const [original, protectedBuffer] = await Promise.all([decode(this.urls.original), decode(this.urls.protected)]);
    this.buffers = { original, protected: protectedBuffer };
    this.duration = Math.min(original.duration, protectedBuffer.duration);
    for (const name of ["original", "protected"]) {
      const gain = ctx.createGain();
      gain.gain.value = name === this.which ? 1 : 0;
      gain.connect(ctx.destination);
      this.gains[name] = gain;
    }
  }
  position() {
    if (!this.playing) return this.offset;
    return Math.min(this.duration, this.offset + Math.max(0, context().currentTime - this.startedAt));
  }
  async play() {
    await this.load();
    const ctx = context();
    await ctx.resume();
    if (this.offset >= this.duration - 0.01) this.offset = 0;
    const when = ctx.currentTime + 0.03;
    this.sources = ["original", "protected"].map((name) => {
      const source = ctx.createBufferSource();
      source.buffer = this.buffers[name];
      source.connect(this.gains[name]);
      source.start(when, this.offset);
      return source;
    });
    this.sources[0].onended = () => { if (this.playing && this.position() >= this.duration - 0.05) { this.stopSources(); this.offset = 0; this.onchange(); } };
    this.startedAt = when;
    this.playing = true;
    this.starts += 1;
    this.onchange();
  }
  stopSources() {
    for (const source of this.sources) { source.onended = null; try { source.stop(); } catch (_) { /* already stopped */ } }
    this.sources = [];
    this.playing = false;
  }
  pause() {
    if (!this.playing) return;
    this.offset = this.position();
    this.stopSources();
    this.onchange();
  }
  select(which) {
    this.which = which;
    if (this.buffers) {
      const now = context().currentTime;
      for (const [name, gain] of Object.entries(this.gains)) {
        gain.gain.cancelScheduledValues(now);
        gain.gain.setTargetAtTime(name === which ? 1 : 0, now, 0.005);
      }
    }
    this.onchange();
  }
  async seek(seconds) {
    const wasPlaying = this.playing;
    if (wasPlaying) this.stopSources();
    this.offset = Math.max(0, Math.min(seconds, this.duration));
    if (wasPlaying) await this.play(); else this.onchange();
  }
}

function buildPlayer(job) {
  const player = new ABPlayer(job.urls);
  state.players[job.id] = player;
  const play = h("button", { class: "play" }, "▶ Play");
  const a = h("button", { "aria-pressed": "true", "data-which": "original" }, "A · Original");
  const b = h("button", { "aria-pressed": "false", "data-which": "protected" }, "B · Protected");
  const time = h("span", { class: "time", text: "0:00" });
  const seek = h("input", { type: "range", min: "0", max: "1000", value: "0", "aria-label": "Position" });
  const wrap = h("div", { class: "player" }, play, h("div", { class: "ab", role: "group", "aria-label": "Listen to" }, a, b), time, seek,
    h("p", { class: "hint", text: "Switch A and B while it plays: the music goes on from the same moment, so you hear only the difference." }));
  let frame = null;
  const draw = () => {
    const pos = player.position();
    time.textContent = `${clock(pos)} / ${clock(player.duration)}`;
    if (player.duration) seek.value = String(Math.round((1000 * pos) / player.duration));
    if (player.playing) frame = requestAnimationFrame(draw);
  };
  player.onchange = () => {
    play.textContent = player.playing ? "❚❚ Pause" : "▶ Play";
    a.setAttribute("aria-pressed", String(player.which === "original"));
    b.setAttribute("aria-pressed", String(player.which === "protected"));
    cancelAnimationFrame(frame);
    draw();
  };
  play.addEventListener("click", async () => {
    play.disabled = true;
    try {
      if (player.playing) player.pause();
      else {
        for (const other of Object.values(state.players)) if (other !== player) other.pause();
        if (!player.buffers) play.textContent = "Loading…";
        await player.play();
      }
    } catch (error) {
      wrap.append(h("p", { class: "error", text: `Cannot play: ${error.message}` }));
    } finally { play.disabled = false; }
  });
  a.addEventListener("click", () => player.select("original"));
  b.addEventListener("click", () => player.select("protected"));
  seek.addEventListener("input", () => { if (player.duration) player.seek((Number(seek.value) / 1000) * player.duration); });
  return wrap;
}

// ------------------------------------------------------------------ audit

async function runAudit(event) {
  event.preventDefault();
  const error = $("audit-error");
  const result = $("audit-result");
  error.hidden = true;
  $("audit-status").textContent = "Checking every file… (this can take a while for a big catalog)";
  $("audit-run").disabled = true;
  try {
    const report = await (await api("/api/audit", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ folder: $("audit-folder").value, site_dir: $("audit-site").value, use_key: $("audit-key").checked }),
    })).json();
    renderAudit(report);
    result.hidden = false;
    $("audit-status").textContent = "";
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    result.hidden = true;
    $("audit-status").textContent = "";
  } finally { $("audit-run").disabled = !state.info.audit_enabled; }
}

const STATUS_WORD = { ok: "✓ ok", gap: "! to do", fail: "✗ damaged", "n/a": "– n/a", unavailable: "– not checked" };
function statusCell(check) {
  const css = { ok: "st-ok", gap: "st-gap", fail: "st-fail" }[check.status] || "st-na";
  return h("td", { class: css, title: check.detail }, h("b", { text: STATUS_WORD[check.status] || check.status }), h("br"), h("span", { class: "muted small", text: check.detail }));
}

function renderAudit(report) {
  const color = report.score >= 80 ? "ok" : report.score >= 50 ? "gap" : "fail";
  const box = $("audit-result");
  const rows = [h("tr", {}, ["Track", "Master", "Copy", "Protected", "Watermark", "Rights tags", "C2PA"].map((t) => h("th", { text: t })))];
  for (const track of report.tracks) {
    const copies = track.copies.length ? track.copies : [null];
    copies.forEach((copy, index) => {
      const cells = [];
      if (index === 0) {
        cells.push(h("td", { rowspan: String(copies.length) }, h("b", { text: track.name }), h("br"), h("span", { class: "muted small", text: `score ${track.score}/100` })));
        const master = statusCell(track.master_check);
        master.setAttribute("rowspan", String(copies.length));
        cells.push(master);
      }
      if (copy) cells.push(h("td", { text: copy.path }), ...copy.checks.map(statusCell));
      else cells.push(h("td", { colspan: "5", class: "st-na", text: "no published copy in this folder" }));
      rows.push(h("tr", {}, cells));
    });
  }
  box.replaceChildren(...[
    h("h2", { text: "Audit result" }),
    h("p", { class: `score ${color}`, id: "audit-score" }, String(report.score), h("span", { class: "muted small", text: " / 100" })),
    h("p", {}, h("b", { text: report.headline })),
    h("h3", { text: "What to do next" }),
    report.fixes.length
      ? h("ol", {}, report.fixes.map((fix) => h("li", {}, h("pre", { class: "fix", text: fix }))))
      : h("p", { class: "muted", text: "Nothing to do." }),
    h("h3", { text: "Your tracks" }),
    h("p", { class: "muted small", text: `Watermark: ${report.watermark}` }),
    report.tracks.length ? h("table", { class: "audit" }, rows) : h("p", { text: "No audio files found." }),
    report.site ? h("div", {}, h("h3", { text: "Your website" }),
      h("table", { class: "audit" }, report.site.map((c) => h("tr", {}, h("td", { text: c.check }), statusCell(c))))) : null,
    report.skipped.length ? h("div", {}, h("h3", { text: "Files not checked, and why" }),
      h("ul", {}, report.skipped.map((s) => h("li", { text: `${s.path} — ${s.reason}` })))) : null,
    h("p", {}, h("a", { href: "/api/audit/report.html", download: "harmonycloak-audit.html", text: "Save this report as a web page" })),
  ].filter(Boolean));
}

// ------------------------------------------------------------------ website opt-out

async function downloadSiteFiles(event) {
  event.preventDefault();
  const error = $("site-error");
  error.hidden = true;
  try {
    const response = await api("/api/policy.zip", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ owner: $("site-owner").value, contact: $("site-contact").value, policy_url: $("site-policy").value }),
    });
    saveBlob(await response.blob(), "harmonycloak-website-opt-out.zip");
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch((error) => {
    document.body.prepend(h("p", { class: "error", text: `The page could not start: ${error.message}` }));
  });
});
