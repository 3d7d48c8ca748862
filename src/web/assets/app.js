// serial2mqtt dashboard: one server-sent event stream (an update a second) feeds every tab.
// No libraries, no CDN: the gateway serves this file itself. Everything from the gateway is
// put on the page as text (textContent), never as HTML.
"use strict";

const HISTORY_SECONDS = 3600;
const FRAMES_KEPT = 300;
const LOG_KEPT = 500;
const LEVELS = { ERROR: 1, WARN: 2, INFO: 3, DEBUG: 4, TRACE: 5 };

const store = {
  state: null,
  frames: [],            // newest last: {device, ...FrameRecord}
  log: [],
  series: new Map(),     // "device\u0000topic" -> [[s, v]]
  queue: [],             // [[s, depth]]
  seenAt: new Map(),     // series key -> at_ms of the last point taken from an update
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((store.state.now_ms - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s ago";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
  return Math.floor(s / 86400) + " d ago";
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function time(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

// A frame as text: printable ASCII as is, anything else as a middle dot.
function asText(hex) {
  let out = "";
  for (let i = 0; i < hex.length; i += 2) {
    const b = parseInt(hex.substr(i, 2), 16);
    out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "·";
  }
  return out;
}

function spaced(hex) {
  return hex.replace(/(..)(?!$)/g, "$1 ");
}

// A line plot of [[s, v]] over the last hour, as SVG.
function plot(points, now, big) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", big ? "plot big" : "plot");
  svg.setAttribute("viewBox", "0 0 300 40");
  svg.setAttribute("preserveAspectRatio", "none");
  const shown = points.filter(p => p[0] >= now - HISTORY_SECONDS);
  if (shown.length < 2) return svg;
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of shown) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (hi === lo) { hi += 1; lo -= 1; }
  const t0 = Math.max(shown[0][0], now - HISTORY_SECONDS);
  const span = Math.max(1, now - t0);
  const d = shown.map(([t, v], i) =>
    (i ? "L" : "M") + ((t - t0) / span * 300).toFixed(1) + " " + (38 - (v - lo) / (hi - lo) * 36).toFixed(1)).join("");
  const path = document.createElementNS(NS, "path");
  path.setAttribute("d", d);
  svg.append(path);
  const title = document.createElementNS(NS, "title");
  title.textContent = "last hour: " + lo.toPrecision(4) + " … " + hi.toPrecision(4);
  svg.append(title);
  return svg;
}

function outcomeText(o) {
  switch (o.kind) {
    case "published": return (o.rule ? "rule `" + o.rule + "`" : "") +
      (o.messages.length ? "" : (o.rule ? ": " : "") + "matched, nothing published (report by exception, or a Modbus cycle in progress)");
    case "dropped": return "dropped by a drop: true rule";
    case "unmatched": return "no rule matched" +
      (o.closest ? "; closest: rule `" + o.closest.rule + "`: " + o.closest.why : "");
    case "invalid_utf8": return "not UTF-8 text (wrong baud rate?)";
    case "bad_checksum": return "bad checksum " + o.checksum + ": " + o.why;
    case "bad_message": return (o.rule ? "rule `" + o.rule + "`: " : "") + "not published: " + o.why;
    case "too_long": return "longer than max_frame (" + o.max_frame + " bytes): dropped";
    case "corrupt": return "corrupt: " + o.why;
    case "incomplete": return "cut short by the port going away";
    case "resync": return "skipped " + o.bytes + " bytes to find the next frame";
    case "exception": return "Modbus exception: " + o.why;
    case "timeout": return "no answer to poll `" + o.request + "` within " + o.timeout_ms + " ms (attempt " + o.attempt +
      "): wrong baud rate, address or wiring?";
    case "unsolicited": return "no request asked for this frame (a late answer? raise the poll's timeout or the turnaround)";
    default: return o.kind;
  }
}

function rejected(o) {
  return o.kind !== "published" && o.kind !== "dropped";
}

function messagesList(messages) {
  return el("ul", {}, ...messages.map(m => el("li", {}, el("code", {}, m.topic), " ", m.payload)));
}

// ---- tabs -------------------------------------------------------------------------------

// The hash names the tab (#frames); its section is #tab-frames, so that no anchor scrolls.
function currentTab() {
  const t = location.hash.slice(1);
  return document.getElementById("tab-" + t) ? t : "devices";
}

function showTab() {
  const t = currentTab();
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === "tab-" + t);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === t);
  render();
}

function render() {
  if (!store.state) return;
  document.getElementById("gateway").textContent = store.state.gateway;
  fillDeviceSelects();
  switch (currentTab()) {
    case "devices": renderDevices(); break;
    case "frames": renderFrames(); break;
    case "uplink": renderUplink(); break;
    case "log": renderLog(); break;
  }
}

function fillDeviceSelects() {
  const names = store.state.devices.map(d => d.name);
  for (const id of ["frames-device", "log-device", "tester-device"]) {
    const sel = document.getElementById(id);
    const have = [...sel.options].map(o => o.value).filter(v => v !== "");
    if (have.join("\u0000") === names.join("\u0000")) continue;
    const keep = sel.value;
    for (const o of [...sel.options]) if (o.value !== "") o.remove();
    for (const n of names) sel.append(el("option", { value: n }, n));
    sel.value = names.includes(keep) || keep === "" ? keep : sel.options[0].value;
  }
}

function renderDevices() {
  const list = document.getElementById("device-list");
  const now = store.state.uptime_s;
  const cards = store.state.devices.map(d => {
    const c = d.counts;
    const reasons = [["too_long", "too long"], ["corrupt", "corrupt"], ["incomplete", "incomplete"],
      ["invalid_utf8", "not UTF-8"], ["bad_checksum", "bad checksum"], ["bad_topic", "bad topic"],
      ["bad_value", "bad value"], ["exceptions", "Modbus exceptions"], ["timeouts", "poll timeouts"],
      ["unsolicited", "unasked frames"]].filter(([k]) => c[k] > 0).map(([k, label]) => label + " " + c[k]);
    const badge = d.state === "online" ? "badge" : d.state === "offline" ? "badge off" : "badge warn";
    const rows = d.topics.map(t => {
      const key = d.name + "\u0000" + t.topic;
      return el("tr", {},
        el("td", { class: "topic" }, el("code", {}, t.topic)),
        el("td", { class: "value" }, t.payload + (d.units[t.topic] ? " " + d.units[t.topic] : "")),
        el("td", { class: "age muted" }, ago(t.at_ms)),
        el("td", { class: "plot" }, t.numeric ? plot(store.series.get(key) || [], now) : ""));
    });
    return el("div", { class: "card device", "data-device": d.name },
      el("h2", {}, d.name, el("span", { class: badge + " state" }, d.state)),
      el("dl", { class: "kv" },
        d.model ? el("dt", {}, "model") : null, d.model ? el("dd", { class: "model" }, d.model) : null,
        el("dt", {}, "port"), el("dd", {}, d.port),
        d.polls.length ? el("dt", {}, "polls") : null, d.polls.length ? el("dd", {}, d.polls.join(", ")) : null,
        el("dt", {}, "last frame"), el("dd", { class: d.stale ? "stale last-frame" : "last-frame" },
          ago(d.last_frame_ms) + (d.stale ? " (stale)" : "")),
        el("dt", {}, "frames/s"), el("dd", { class: "fps" }, d.frames_per_s.toFixed(1)),
        el("dt", {}, "frames"), el("dd", { class: "counts" },
          c.frames + " read, " + c.messages + " messages, " + c.unmatched + " unmatched, " + d.bad + " bad"),
        reasons.length ? el("dt", {}, "bad by reason") : null,
        reasons.length ? el("dd", { class: "reasons" }, reasons.join(", ")) : null),
      d.topics.length
        ? el("table", { class: "topics" }, el("tbody", {}, ...rows))
        : el("p", { class: "muted" }, "no messages yet"),
      d.topics_untracked ? el("p", { class: "note" }, d.topics_untracked + " more topics not shown") : null);
  });
  list.replaceChildren(...cards);
}

function renderFrames() {
  const dev = document.getElementById("frames-device").value;
  const want = document.getElementById("frames-outcome").value;
  const rows = [];
  for (let i = store.frames.length - 1; i >= 0 && rows.length < 200; i--) {
    const f = store.frames[i];
    if (dev && f.device !== dev) continue;
    if (want === "rejected" ? !rejected(f.outcome) : want && f.outcome.kind !== want) continue;
    const what = outcomeText(f.outcome);
    const cell = el("td", { class: "what" });
    if (what) cell.append(el("div", {}, what));
    if (f.outcome.messages && f.outcome.messages.length) cell.append(messagesList(f.outcome.messages));
    const frame = el("td", { class: "frame" });
    if (f.len) {
      frame.append(el("div", { class: "text" }, asText(f.bytes)),
        el("div", { class: "hex" }, spaced(f.bytes) + (f.len > f.bytes.length / 2 ? " … (" + f.len + " bytes)" : "")));
    } else {
      frame.append(el("span", { class: "muted" }, "(no bytes kept)"));
    }
    const tryIt = f.len ? el("button", { class: "link", title: "open in the rule tester", onclick: () => {
      document.getElementById("tester-device").value = f.device;
      document.getElementById("tester-hex").checked = true;
      document.getElementById("tester-frame").value = spaced(f.bytes);
      location.hash = "#tester";
    } }, "try") : "";
    rows.push(el("tr", { class: rejected(f.outcome) ? "rejected " + f.outcome.kind : f.outcome.kind },
      el("td", {}, time(f.at_ms)), el("td", {}, f.device), frame, cell, el("td", {}, tryIt)));
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no frames yet")));
  document.getElementById("frame-rows").replaceChildren(...rows);
}

function renderUplink() {
  const s = store.state;
  const u = s.uplink, q = s.queue;
  const up = document.getElementById("uplink-card");
  if (!u) {
    up.replaceChildren(el("h2", {}, "Uplink"), el("p", { class: "muted" }, "No uplink configured: nothing leaves the gateway."));
  } else {
    up.replaceChildren(
      el("h2", {}, "Uplink", el("span", { class: u.connected ? "badge" : "badge off", id: "uplink-state" },
        u.connected ? "connected" : "disconnected")),
      el("dl", { class: "kv" },
        el("dt", {}, u.connected ? "connected" : "down"), el("dd", {}, u.since_ms ? "since " + ago(u.since_ms) : "never connected"),
        el("dt", {}, "delivered"), el("dd", {}, u.delivered + " (" + u.delivered_per_s.toFixed(1) + "/s)"),
        el("dt", {}, "reconnects"), el("dd", {}, Math.max(0, u.connects - 1)),
        el("dt", {}, "refused by profile"), el("dd", {}, u.refused_by_profile),
        el("dt", {}, "last error"), el("dd", {}, u.last_error || "none")));
  }
  const qc = document.getElementById("queue-card");
  if (!q) {
    qc.replaceChildren(el("h2", {}, "Queue"), el("p", { class: "muted" }, u ? "the queue did not answer" : "no queue without an uplink"));
  } else {
    const drops = q.dropped_full + q.dropped_disk_full + q.dropped_corrupt + q.dropped_too_large;
    qc.replaceChildren(
      el("h2", {}, "Queue"),
      el("dl", { class: "kv" },
        el("dt", {}, "waiting"), el("dd", { id: "queue-depth" }, q.depth + " messages, " + bytes(q.bytes) + " in " + q.segments + (q.segments === 1 ? " segment" : " segments")),
        el("dt", {}, "oldest unsent"), el("dd", {}, q.oldest_unsent_s === null ? "nothing waits" : duration(q.oldest_unsent_s)),
        el("dt", {}, "dropped"), el("dd", {}, drops ? "full " + q.dropped_full + ", disk full " + q.dropped_disk_full +
          ", corrupt " + q.dropped_corrupt + ", too large " + q.dropped_too_large : "none"),
        el("dt", {}, "disk writes"), el("dd", { id: "queue-written" }, bytes(q.written_bytes) + " since the start, " +
          bytes(Math.round(q.written_per_day)) + "/day at the current rate")),
      el("p", { class: "note" }, "depth over the last hour"),
      plot(store.queue, s.uptime_s, true));
  }
}

function renderLog() {
  const max = Number(document.getElementById("log-level").value);
  const dev = document.getElementById("log-device").value;
  const rows = [];
  for (let i = store.log.length - 1; i >= 0 && rows.length < 300; i--) {
    const l = store.log[i];
    if ((LEVELS[l.level] || 5) > max) continue;
    if (dev && l.device !== dev) continue;
    rows.push(el("tr", {}, el("td", {}, time(l.at_ms)), el("td", { class: "lvl-" + l.level }, l.level),
      el("td", {}, l.device || ""), el("td", { class: "msg" }, l.text)));
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no log lines")));
  document.getElementById("log-rows").replaceChildren(...rows);
}

// ---- data ---------------------------------------------------------------------------------

function take(update) {
  store.state = update.state;
  const now = update.state.uptime_s;
  for (const d of update.state.devices) {
    for (const t of d.topics) {
      if (!t.numeric) continue;
      const key = d.name + "\u0000" + t.topic;
      if (store.seenAt.get(key) === t.at_ms) continue;
      store.seenAt.set(key, t.at_ms);
      const v = parseFloat(t.payload);
      if (!isFinite(v)) continue;
      const s = store.series.get(key) || [];
      if (!s.length || s[s.length - 1][0] !== now) s.push([now, v]);
      while (s.length && s[0][0] < now - HISTORY_SECONDS) s.shift();
      store.series.set(key, s);
    }
  }
  if (update.state.queue) {
    store.queue.push([now, update.state.queue.depth]);
    while (store.queue.length && store.queue[0][0] < now - HISTORY_SECONDS) store.queue.shift();
  }
  for (const group of update.frames) {
    for (const f of group.frames) store.frames.push(Object.assign({ device: group.device }, f));
  }
  store.frames.sort((a, b) => a.id - b.id);
  if (store.frames.length > FRAMES_KEPT) store.frames.splice(0, store.frames.length - FRAMES_KEPT);
  store.log.push(...update.log);
  if (store.log.length > LOG_KEPT) store.log.splice(0, store.log.length - LOG_KEPT);
  render();
}

async function loadHistory() {
  try {
    const r = await fetch("/api/history");
    if (!r.ok) return;
    const h = await r.json();
    for (const s of h.topics) store.series.set(s.device + "\u0000" + s.topic, s.points);
    store.queue = h.queue;
  } catch (e) { /* the live stream fills the plots from now on */ }
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/events");
  source.addEventListener("update", e => {
    live.textContent = "live";
    live.className = "badge";
    take(JSON.parse(e.data));
  });
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "badge off";
  };
}

async function tryRule(ev) {
  ev.preventDefault();
  const out = document.getElementById("tester-result");
  const body = {
    device: document.getElementById("tester-device").value,
    frame: document.getElementById("tester-frame").value,
    hex: document.getElementById("tester-hex").checked,
  };
  const r = await fetch("/api/test-rule", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) {
    out.replaceChildren(el("p", { class: "bad" }, await r.text()));
    return;
  }
  const t = await r.json();
  const parts = [];
  if (t.checksum) {
    parts.push(el("p", { class: t.checksum.ok ? "ok" : "bad" }, "checksum " + t.checksum.name + ": " +
      (t.checksum.ok ? "ok, " + t.checksum.detail : t.checksum.detail + " (on the line: dropped, counted as bad_checksum)")));
  }
  for (const p of t.problems) parts.push(el("p", { class: "bad" }, "not published: " + p));
  if (t.dropped) parts.push(el("p", {}, "dropped by a drop: true rule: nothing published"));
  if (t.messages.length) {
    parts.push(el("p", { class: "ok" }, t.messages.length + " message" + (t.messages.length > 1 ? "s" : "") + ":"));
    parts.push(el("ul", { class: "messages" }, ...t.messages.map(m =>
      el("li", {}, el("code", {}, m.topic), " ", m.payload, el("span", { class: "muted" }, " qos " + m.qos + (m.retain ? " retain" : ""))))));
  } else if (!t.matched && !(t.checksum && !t.checksum.ok)) {
    parts.push(el("p", { class: "bad" }, "no rule of this device matched the frame" +
      (t.rejected_as ? " (on the line: counted as " + t.rejected_as + ")" : "")));
    if (t.closest) parts.push(el("p", { class: "closest" }, "closest: rule `" + t.closest.rule + "`: " + t.closest.why));
  }
  out.replaceChildren(...parts);
}

document.addEventListener("DOMContentLoaded", async () => {
  window.addEventListener("hashchange", showTab);
  for (const id of ["frames-device", "frames-outcome", "log-level", "log-device"]) {
    document.getElementById(id).addEventListener("change", render);
  }
  document.getElementById("tester-form").addEventListener("submit", tryRule);
  showTab();
  await loadHistory();
  connect();
});
