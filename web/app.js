// The on-device dashboard: the channel list, live panels (uPlot charts for data frames, a
// message log for JSON channels), dashboards saved through Grafana's dashboard API shape, and
// the device's status. One Centrifuge connection (the official client) carries everything.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "edgelive.token";
  const WINDOWS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3 };
  // The channel list is polled twice a second, so a new stream shows within a second; the
  // status every two.
  const LIST_MS = 500;
  const STATUS_MS = 2000;
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let centrifuge = null;
  let started = false;
  let channels = [];
  const panels = new Map();
  // The dashboard on screen: uid "" until saved.
  let board = { uid: "", title: "", version: 0, canSave: true };
  let boardSub = null;
  // A save of ours in flight: its own event must not reload the page.
  let saving = false;

  // ---- HTTP, with the token when there is one. ----

  class Unauthorized extends Error {}

  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({}, opts.headers);
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status === 401 || (r.status === 403 && !token && path !== "/api/dashboards/db")) {
      const body = await r.json().catch(() => ({}));
      needToken(body.message || "This device needs a token.");
      throw new Unauthorized(body.message || String(r.status));
    }
    return r;
  }

  function quietly(p) {
    return p.catch((e) => {
      if (!(e instanceof Unauthorized)) say(String(e.message || e), true);
    });
  }

  function say(text, isError) {
    const m = $("board-msg");
    m.textContent = text;
    m.className = isError ? "error" : "muted";
  }

  // ---- Access: loopback in protected mode needs nothing; otherwise a token, asked once. ----

  let locked = false;

  function needToken(why) {
    locked = true;
    $("login-why").textContent = why;
    $("login").hidden = false;
    $("logout").hidden = !token;
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    location.reload();
  });

  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  // ---- Device status. ----

  function bytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  function duration(s) {
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  async function refreshStatus() {
    const r = await api("/api/status");
    const s = await r.json();
    const max = s.max_connections === null ? "∞" : s.max_connections;
    const storage = s.storage.healthy ? "storage ok" : "storage degraded: " + s.storage.problem;
    $("status").textContent = [
      "v" + s.version,
      "up " + duration(s.uptime_seconds),
      s.connections + "/" + max + " connections",
      bytes(s.memory.rss_bytes) + " RAM",
      storage + " (" + bytes(s.storage.size_bytes) + ")",
      s.publications_per_second.toFixed(1) + " pub/s",
    ].join(" · ");
  }

  // ---- The channel list. ----

  function ago(ms) {
    if (!ms) return "";
    return duration(Math.max(0, Math.round((Date.now() - ms) / 1000))) + " ago";
  }

  async function refreshChannels() {
    const r = await api("/api/live/list");
    channels = (await r.json()).channels || [];
    renderChannels();
  }

  function renderChannels() {
    const filter = $("filter").value.toLowerCase();
    const rows = $("channel-rows");
    rows.textContent = "";
    for (const c of channels) {
      if (filter && !c.channel.toLowerCase().includes(filter)) continue;
      const tr = document.createElement("tr");
      tr.dataset.channel = c.channel;
      for (const text of [c.channel, c.minute_rate, c.subscribers || 0, ago(c.last_ms)]) {
        const td = document.createElement("td");
        td.textContent = text;
        td.title = String(text);
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => addPanel({ channel: c.channel }));
      rows.appendChild(tr);
    }
  }

  $("filter").addEventListener("input", renderChannels);

  // ---- Live panels. ----

  function palette(i) {
    return ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"][i % 8];
  }

  function addPanel(spec) {
    if (panels.has(spec.channel)) return panels.get(spec.channel);
    const windowKey = WINDOWS[spec.window] ? spec.window : "5m";
    const p = {
      channel: spec.channel,
      windowKey,
      paused: false,
      json: spec.channel.startsWith("grafana/broadcast/"),
      buffer: new EdgeFrames.FrameBuffer(WINDOWS[windowKey]),
      chart: null,
      seriesCount: -1,
      drawQueued: false,
      log: [],
    };
    const el = document.createElement("div");
    el.className = "panel";
    el.dataset.channel = spec.channel;
    el.innerHTML =
      '<div class="row"><h3></h3><span class="muted points"></span><select aria-label="Time window"></select>' +
      '<button class="plain pause">Pause</button><button class="plain close" aria-label="Close">✕</button></div>' +
      '<div class="chart"></div><div class="legend"></div><div class="log" hidden></div>';
    el.querySelector("h3").textContent = spec.channel;
    const sel = el.querySelector("select");
    for (const k of Object.keys(WINDOWS)) sel.add(new Option(k, k, false, k === windowKey));
    sel.addEventListener("change", () => {
      p.windowKey = sel.value;
      p.buffer.windowMs = WINDOWS[sel.value];
      p.buffer.trim();
      draw(p);
    });
    const pause = el.querySelector(".pause");
    pause.addEventListener("click", () => {
      p.paused = !p.paused;
      pause.textContent = p.paused ? "Resume" : "Pause";
      if (!p.paused) draw(p);
    });
    el.querySelector(".close").addEventListener("click", () => removePanel(p.channel));
    p.el = el;
    $("panels").appendChild(el);
    panels.set(spec.channel, p);

    p.sub = centrifuge.getSubscription(spec.channel) || centrifuge.newSubscription(spec.channel);
    p.sub.on("subscribed", (ctx) => { if (ctx.data) take(p, ctx.data, ctx.offset); });
    p.sub.on("publication", (ctx) => take(p, ctx.data, ctx.offset));
    p.sub.on("error", (ctx) => note(p, "error: " + (ctx.error && ctx.error.message)));
    p.sub.subscribe();
    return p;
  }

  function removePanel(channel) {
    const p = panels.get(channel);
    if (!p) return;
    p.sub.unsubscribe();
    centrifuge.removeSubscription(p.sub);
    if (p.chart) p.chart.destroy();
    p.el.remove();
    panels.delete(channel);
  }

  function note(p, line) {
    p.log.push(line);
    if (p.log.length > 200) p.log.shift();
    const log = p.el.querySelector(".log");
    log.hidden = false;
    log.textContent = p.log.slice().reverse().join("\n");
  }

  function take(p, data, offset) {
    if (!p.json && p.buffer.apply(data)) {
      if (!p.drawQueued && !p.paused) {
        p.drawQueued = true;
        requestAnimationFrame(() => { p.drawQueued = false; draw(p); });
      }
      return;
    }
    note(p, (offset ? offset + ": " : "") + JSON.stringify(data));
  }

  function draw(p) {
    if (p.paused || p.json) return;
    const data = p.buffer.aligned();
    const box = p.el.querySelector(".chart");
    const width = Math.max(200, box.clientWidth);
    if (!p.chart || p.seriesCount !== p.buffer.keys.length) {
      if (p.chart) p.chart.destroy();
      const series = [{}].concat(p.buffer.keys.map((k, i) => ({
        label: k, stroke: palette(i), width: 1.5, spanGaps: true,
      })));
      p.chart = new uPlot({
        width, height: 220, series, legend: { show: false },
        axes: [{ stroke: "#9fa7b3", grid: { stroke: "#22252b" } }, { stroke: "#9fa7b3", grid: { stroke: "#22252b" } }],
      }, data, box);
      p.seriesCount = p.buffer.keys.length;
    } else {
      p.chart.setData(data);
    }
    p.el.querySelector(".points").textContent = p.buffer.points() + " points";
    const legend = p.el.querySelector(".legend");
    legend.textContent = "";
    p.buffer.keys.forEach((k, i) => {
      const s = document.createElement("span");
      s.style.borderLeft = "3px solid " + palette(i);
      s.style.paddingLeft = "4px";
      s.textContent = k + " ";
      const b = document.createElement("b");
      b.textContent = String(p.buffer.last.get(k));
      s.appendChild(b);
      legend.appendChild(s);
    });
  }

  window.addEventListener("resize", () => {
    for (const p of panels.values()) {
      if (p.chart) p.chart.setSize({ width: Math.max(200, p.el.querySelector(".chart").clientWidth), height: 220 });
    }
  });

  // ---- Dashboards, saved on the device. ----

  async function refreshDashboards() {
    const r = await api("/api/search");
    const list = await r.json();
    const sel = $("dashboards");
    sel.length = 1;
    for (const d of list) sel.add(new Option(d.title, d.uid, false, d.uid === board.uid));
  }

  $("dashboards").addEventListener("change", (e) => {
    if (e.target.value) quietly(openDashboard(e.target.value));
  });

  async function openDashboard(uid) {
    const r = await api("/api/dashboards/uid/" + encodeURIComponent(uid));
    if (r.status === 404) { say("Dashboard " + uid + " not found.", true); return; }
    const { dashboard, meta } = await r.json();
    for (const c of Array.from(panels.keys())) removePanel(c);
    board = { uid: dashboard.uid, title: dashboard.title, version: dashboard.version, canSave: meta.canSave };
    $("board-title").textContent = dashboard.title;
    $("board-name").value = dashboard.title;
    $("save").disabled = !meta.canSave;
    say(meta.canSave ? "" : "Read only: your role cannot save dashboards.");
    for (const panel of dashboard.panels || []) if (panel.channel) addPanel(panel);
    const path = "/d/" + dashboard.uid + "/" + meta.slug;
    if (location.pathname !== path) history.replaceState(null, "", path);
    watchDashboard(dashboard.uid);
    await refreshDashboards();
  }

  async function saveDashboard() {
    const title = $("board-name").value.trim() || board.title || "Device";
    const dashboard = {
      title,
      version: board.version || undefined,
      panels: Array.from(panels.values()).map((p, i) => ({
        id: i + 1, type: p.json ? "logs" : "timeseries", title: p.channel,
        channel: p.channel, window: p.windowKey,
      })),
    };
    if (board.uid) dashboard.uid = board.uid;
    saving = true;
    try {
      await post(dashboard, title);
    } finally {
      saving = false;
    }
  }

  async function post(dashboard, title) {
    const r = await api("/api/dashboards/db", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ dashboard, overwrite: false }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.status === 412) { say("Changed elsewhere meanwhile: reloaded it.", true); await openDashboard(board.uid); return; }
    if (!r.ok) { say("Not saved: " + (body.message || r.status), true); return; }
    board = { uid: body.uid, title, version: body.version, canSave: true };
    $("board-title").textContent = title;
    history.replaceState(null, "", body.url);
    say("Saved (version " + body.version + ").");
    watchDashboard(body.uid);
    await refreshDashboards();
  }

  $("save").addEventListener("click", () => quietly(saveDashboard()));

  // Grafana's dashboard events: another page saved or deleted it; presence shows who watches.
  function watchDashboard(uid) {
    const channel = "grafana/dashboard/uid/" + uid;
    if (boardSub && boardSub.channel === channel) return;
    if (boardSub) { boardSub.unsubscribe(); centrifuge.removeSubscription(boardSub); }
    boardSub = centrifuge.newSubscription(channel, { joinLeave: true });
    const watchers = () => boardSub.presence()
      .then((p) => {
        const clients = Object.values(p.clients || {});
        const names = Array.from(new Set(clients.map((c) => c.user || "anonymous"))).sort();
        $("watchers").textContent = clients.length + " watching";
        $("watchers").title = names.join(", ");
        $("watchers").textContent += names.length ? ": " + names.join(", ") : "";
      })
      .catch(() => {});
    boardSub.on("subscribed", watchers);
    boardSub.on("join", watchers);
    boardSub.on("leave", watchers);
    boardSub.on("publication", (ctx) => {
      const ev = ctx.data || {};
      if (ev.action === "deleted") { say("This dashboard was deleted on the device.", true); return; }
      if (ev.action !== "saved" || saving || (ev.version && ev.version <= board.version)) return;
      quietly(openDashboard(uid).then(() => say("Updated from another page.")));
    });
    boardSub.subscribe();
  }

  // ---- Start. ----

  // Asks /api/health (which answers everyone) whether this page's credentials let it in,
  // so a missing token is asked for without a refused request.
  async function begin() {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const h = await fetch("/api/health", { headers }).then((r) => r.json()).catch(() => ({}));
    if (h.access === "required") {
      needToken(token ? "The device refused this token." : "This device needs a token.");
      return;
    }
    if (h.access === "loopback-only") {
      needToken("This device serves only its own loopback until credentials are configured ([auth] in /etc/edgelive/edgelive.toml).");
      return;
    }
    start();
  }

  function start() {
    if (started) return;
    started = true;
    $("logout").hidden = !token;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    centrifuge = new Centrifuge(scheme + location.host + "/api/live/ws", token ? { token } : {});
    centrifuge.on("disconnected", (ctx) => {
      if (ctx.code === 3500 || ctx.code === 3507 || ctx.code === 101) needToken("The device refused the token: " + ctx.reason);
    });
    centrifuge.connect();
    const every = (f, ms) => {
      quietly(f());
      setInterval(() => { if (!locked) quietly(f()); }, ms);
    };
    every(refreshStatus, STATUS_MS);
    every(refreshChannels, LIST_MS);
    quietly(refreshDashboards());
    const m = location.pathname.match(/^\/d\/([A-Za-z0-9_-]+)/);
    if (m) quietly(openDashboard(m[1]));
  }

  begin();
})();
