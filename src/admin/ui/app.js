// Arc dashboard: reads the control API with the bearer token entered once (kept for this tab).
"use strict";
(function () {
  const api = "/api/v1";
  const $ = (s) => document.querySelector(s);
  let token = sessionStorage.getItem("arc-token") || "";
  let last = null; // previous /stats sample, for rates
  let timers = [];

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  async function call(path, method) {
    const r = await fetch(api + path, {
      method: method || "GET",
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
    });
    if (r.status === 401) throw Object.assign(new Error("wrong token"), { auth: true });
    if (r.status === 404 && path !== "/routes") throw new Error("not found: " + path);
    if (r.status === 404) throw Object.assign(new Error("the control API is disabled (no token configured)"), { auth: true });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  }

  function showLogin(message) {
    timers.forEach(clearInterval);
    timers = [];
    $("#dashboard").hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = message || "";
    $("#token").focus();
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  let routes = [];
  async function loadStatic() {
    const [r, b, c, h] = await Promise.all([call("/routes"), call("/build"), call("/certificates"), call("/reloads")]);
    routes = r.routes;
    $("#build").textContent = b.name + " " + b.version + " (" + b.io_driver + ")";
    $("#version").textContent = "v" + r.version;
    $("#config-version").textContent = r.version;
    $("#compiled-at").textContent = r.compiled_at || "-";
    fill($("#certificates tbody"), c.certificates.map((x) => {
      const tr = el("tr");
      tr.append(el("td", x.hosts.join(", ")), el("td", x.dns_names.join(", ") || x.common_name || "-"),
        el("td", x.not_after + " (" + x.expires_in_days + " days)"));
      return tr;
    }));
    fill($("#reloads tbody"), h.reloads.slice().reverse().map((x) => {
      const tr = el("tr");
      tr.append(el("td", x.time), el("td", x.trigger), el("td", x.success ? "applied" : "rejected", x.success ? "health-healthy" : "error"),
        el("td", x.version, "num"), el("td", x.message));
      return tr;
    }));
    renderRoutes(null);
  }

  function renderRoutes(stats) {
    const byName = {};
    if (stats) stats.routes.forEach((s) => { byName[s.name] = s; });
    const prev = {};
    if (last) last.routes.forEach((s) => { prev[s.name] = s; });
    const dt = stats && last ? (Date.parse(stats.time) - Date.parse(last.time)) / 1000 : 0;
    fill($("#routes tbody"), routes.map((r) => {
      const s = byName[r.name];
      const p = prev[r.name];
      let rate = "-", errors = "-", latency = "-";
      if (s && p && dt > 0) {
        const dr = s.requests - p.requests;
        rate = (dr / dt).toFixed(1);
        errors = dr > 0 ? ((100 * (s.errors - p.errors)) / dr).toFixed(1) + "%" : "0.0%";
        const dc = s.latency.count - p.latency.count;
        latency = dc > 0 ? ((1000 * (s.latency.sum_seconds - p.latency.sum_seconds)) / dc).toFixed(2) + " ms" : "-";
      }
      const tr = el("tr");
      tr.dataset.route = r.name;
      tr.append(el("td", r.name), el("td", r.host || "*"), el("td", r.path + " (" + r.path_type + ")"),
        el("td", r.backend_kind + ": " + r.backend), el("td", rate, "num rate"), el("td", errors, "num errors"),
        el("td", latency, "num latency"));
      return tr;
    }));
  }

  async function loadUpstreams() {
    const u = await call("/upstreams");
    const rows = [];
    u.upstreams.forEach((up) => up.endpoints.forEach((e) => {
      const tr = el("tr");
      const b = el("button", e.disabled ? "Enable" : "Disable");
      b.type = "button";
      b.addEventListener("click", async () => {
        const action = e.disabled ? "enable" : "disable";
        try {
          await call("/upstreams/" + encodeURIComponent(up.name) + "/endpoints/" + encodeURIComponent(e.address) + "/" + action, "POST");
        } catch (err) { $("#status").textContent = err.message; }
        loadUpstreams();
      });
      const action = el("td");
      action.append(b);
      tr.append(el("td", up.name), el("td", e.address), el("td", e.health, "health-" + e.health),
        el("td", e.requests, "num"), el("td", e.failures, "num"),
        el("td", e.pool ? e.pool.idle : "", "num pool-idle"), el("td", e.pool ? e.pool.active : "", "num pool-active"), action);
      rows.push(tr);
    }));
    fill($("#upstreams tbody"), rows);
    $("#pool").textContent = "Pooled connections reused: " + u.pool.hits + ", opened: " + u.pool.misses;
  }

  async function tick() {
    try {
      const s = await call("/stats");
      if (last && s.version !== last.version) await loadStatic();
      renderRoutes(s);
      last = s;
      $("#status").textContent = "live · " + s.connections_active + " open connections";
    } catch (err) {
      if (err.auth) showLogin(err.message); else $("#status").textContent = err.message;
    }
  }

  async function start() {
    try {
      await loadStatic();
    } catch (err) {
      showLogin(err.auth ? err.message : "cannot reach the control API: " + err.message);
      return;
    }
    $("#login").hidden = true;
    $("#dashboard").hidden = false;
    await loadUpstreams().catch(() => {});
    await tick();
    timers.push(setInterval(tick, 1000));
    timers.push(setInterval(() => { loadUpstreams().catch(() => {}); loadStatic().catch(() => {}); }, 5000));
  }

  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("arc-token", token);
    start();
  });
  $("#reload").addEventListener("click", async () => {
    try {
      const r = await call("/reload", "POST");
      $("#status").textContent = "reloaded: version " + r.version;
    } catch (err) { $("#status").textContent = "reload rejected: " + err.message; }
    loadStatic().catch(() => {});
  });

  if (token) start(); else showLogin("");
})();
