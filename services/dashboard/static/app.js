// Siaga command center. No framework, no network but this dashboard and the dispatch API.
//
// Frames from /ws are applied to an in-memory model at once; the DOM and the map are redrawn at
// most once per animation frame, from whatever changed since the last one, so hundreds of
// updates a second cost a few renders a second, not hundreds.
(() => {
  "use strict";

  const CONFIG = JSON.parse(document.getElementById("siaga-config").textContent);
  const FEED_MAX = 150;
  const QUEUE_MAX = 200;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const STALE_MS = (CONFIG.staleAfterS || 30) * 1000;
  const STATES = ["normal", "closed", "silent", "open", "escalated"]; // draw order: worst on top
  const LEGEND = ["normal", "open", "escalated", "silent", "closed"];
  const SEVERITY_RANK = { low: 0, medium: 1, high: 2, critical: 3 };
  const UNRESOLVED = new Set(["open", "escalated", "acknowledged"]);

  const $ = (id) => document.getElementById(id);
  const store = {
    get: (k) => { try { return localStorage.getItem(k); } catch (_) { return null; } },
    set: (k, v) => { try { localStorage.setItem(k, v); } catch (_) { /* private mode: keep in memory */ } },
    del: (k) => { try { localStorage.removeItem(k); } catch (_) { /* ignore */ } },
  };

  // ---- labels ----------------------------------------------------------------------------------
  let LABELS = {};
  let lang = store.get("siaga.lang") || CONFIG.language || "id";

  function t(key, vars) {
    const dict = LABELS[lang] || {};
    let s = dict[key];
    if (s === undefined) s = (LABELS.id || {})[key];
    if (s === undefined) s = key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
    return s;
  }
  function tg(group, value) {
    const g = (LABELS[lang] || {})[group] || {};
    return g[value] !== undefined ? g[value] : String(value);
  }

  function applyStaticLabels() {
    document.documentElement.lang = lang;
    document.title = t("title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    }
    for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    const toggle = $("lang-toggle");
    toggle.textContent = t("lang_toggle");
    toggle.title = t("lang_toggle_title");
    renderLegend();
    renderRole();
    renderConn();
  }

  // ---- model -----------------------------------------------------------------------------------
  const model = {
    seq: null, // the seq of the last message applied; resume from it
    incidents: new Map(),
    tps: new Map(),
    stats: null,
    feed: [], // incident ids, most recently changed first
    regions: new Map(), // the summary view's rows, by regionKey
  };
  const dirty = { geo: true, map: true, queue: true, feed: true, stats: true, detail: false, summary: false };
  let frameRequested = false;

  function invalidate(...parts) {
    for (const p of parts) dirty[p] = true;
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  function changedAt(inc) {
    return inc.updated_at || inc.received_at || inc.opened_at || "";
  }

  function loadSnapshot(m) {
    model.incidents = new Map(m.incidents.map((i) => [i.id, i]));
    model.tps = new Map(m.tps.map((x) => [x.tps_id, x]));
    model.stats = m.stats;
    model.feed = [...m.incidents]
      .sort((a, b) => (changedAt(a) < changedAt(b) ? 1 : -1))
      .slice(0, FEED_MAX)
      .map((i) => i.id);
    model.seq = m.seq;
    invalidate("geo", "map", "queue", "feed", "stats", "detail");
  }

  function applyIncident(inc) {
    const held = model.incidents.get(inc.id);
    if (held && held.version >= inc.version) return;
    model.incidents.set(inc.id, inc);
    const at = model.feed.indexOf(inc.id);
    if (at >= 0) model.feed.splice(at, 1);
    model.feed.unshift(inc.id);
    if (model.feed.length > FEED_MAX) model.feed.length = FEED_MAX;
    invalidate("queue", "feed");
    if (shownIncident && shownIncident.id === inc.id) invalidate("detail"); // the open incident view follows it
  }

  function applyTps(tps) {
    const held = model.tps.get(tps.tps_id);
    if (held && held.version >= tps.version) return;
    if (!held || held.lat !== tps.lat || held.lon !== tps.lon || held.kecamatan !== tps.kecamatan) dirty.geo = true;
    model.tps.set(tps.tps_id, tps);
    invalidate("map");
  }

  // ---- view: every TPS, or a regional summary (SPEC section 10) --------------------------------
  // The view lives in the address (?view=summary&by=kabupaten&provinsi=Banten), so a drill-down can
  // be bookmarked and a wall screen reopens where it was.
  const LEVELS = ["provinsi", "kabupaten", "kecamatan"];
  const SEVERITY_DESC = ["critical", "high", "medium", "low"];
  const view = readView();

  function defaultMode() {
    return CONFIG.defaultView === "summary" ? "summary" : "detail";
  }
  function readView() {
    const q = new URL(location.href).searchParams;
    const by = q.get("by");
    const v = { mode: q.get("view") || defaultMode(), by: LEVELS.includes(by) ? by : "kabupaten", region: null };
    if (v.mode !== "summary") v.mode = "detail";
    for (const kind of LEVELS) {
      if (q.get(kind)) {
        v.region = { kind, name: q.get(kind) };
        break;
      }
    }
    return v;
  }
  function writeView() {
    const url = new URL(location.href);
    for (const k of ["view", "by", ...LEVELS]) url.searchParams.delete(k);
    url.searchParams.set("view", view.mode);
    if (view.mode === "summary") url.searchParams.set("by", view.by);
    if (view.region) url.searchParams.set(view.region.kind, view.region.name);
    history.replaceState(null, "", url.toString());
  }
  function viewParams(params) {
    if (view.mode === "summary") {
      params.set("view", "summary");
      params.set("by", view.by);
    }
    if (view.region) params.set(view.region.kind, view.region.name);
  }
  function resetModel() {
    model.seq = null;
    model.incidents = new Map();
    model.tps = new Map();
    model.stats = null;
    model.feed = [];
    model.regions = new Map();
    for (const id of ["kpi-open", "kpi-escalated", "kpi-on-site", "kpi-median", "kpi-coverage", "kpi-silent",
      "kpi-alert-failures", "kpi-tps"]) $(id).textContent = "—";
    for (const id of ["kpi-open-sub", "kpi-escalated-sub", "kpi-on-site-sub", "kpi-coverage-sub"]) $(id).textContent = "";
    invalidate("geo", "map", "queue", "feed", "stats", "detail", "summary");
  }
  function setView(mode, by, region) {
    view.mode = mode;
    view.by = by;
    view.region = region;
    writeView();
    resetModel();
    renderView();
    conn.backoff = BACKOFF_MIN_MS;
    connect();
  }
  function renderView() {
    const summary = view.mode === "summary";
    $("summary-panel").hidden = !summary;
    $("detail-grid").hidden = summary;
    $("view-select").value = summary ? view.by : "detail";
    $("summary-title").textContent = t(`summary_title_${view.by}`);
    $("region-crumb").hidden = !view.region;
    $("region-name").textContent = view.region ? view.region.name.replace("/", " › ") : "";
  }

  function regionKey(r) {
    return LEVELS.filter((k) => k in r).map((k) => r[k]).join("/");
  }
  function loadSummary(m) {
    model.regions = new Map(m.regions.map((r) => [regionKey(r), r]));
    model.seq = m.seq;
    invalidate("summary");
  }
  function applySummary(rows) {
    for (const r of rows) model.regions.set(regionKey(r), r); // a row is always whole
    invalidate("summary");
  }
  const total = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);

  function bySeverity(counts) {
    const span = el("span");
    for (const sev of SEVERITY_DESC) {
      if (!counts[sev]) continue;
      if (span.childNodes.length) span.append(" · ");
      span.append(el("span", sev, `${counts[sev]} ${tg("severity", sev)}`));
    }
    return span;
  }

  function renderSummary() {
    const rows = [...model.regions.values()].sort(
      (a, b) => total(b.escalated) - total(a.escalated) || total(b.open) - total(a.open) ||
        regionKey(a).localeCompare(regionKey(b)),
    );
    const sums = { tps: 0, open: 0, escalated: 0, silent: 0, resolved: 0, assigned: 0, checkedIn: 0 };
    const out = [];
    for (const r of rows) {
      const key = regionKey(r);
      const name = r[view.by] || key;
      const tr = el("tr", total(r.escalated) ? "hot" : null);
      tr.dataset.region = key;
      const cell = el("td", "region");
      const drill = el("button", null, name);
      drill.type = "button";
      drill.dataset.drill = key;
      drill.title = view.by === "provinsi" ? t("drill_kabupaten", { name }) : t("drill_detail", { name });
      cell.append(drill);
      if (view.by === "kecamatan") cell.append(el("span", "muted", ` ${r.kabupaten}`));
      tr.append(cell, el("td", "num", total(r.tps)));
      for (const state of ["normal", "open", "escalated", "silent", "closed"]) {
        const n = r.tps[state] || 0;
        const td = el("td", n && (state === "escalated" || state === "silent") ? "num alarm" : "num", n);
        td.dataset.state = state;
        tr.append(td);
      }
      const open = total(r.open), escalated = total(r.escalated);
      tr.append(el("td", open ? "num hot" : "num", open));
      const sevOpen = el("td", "sev");
      sevOpen.append(bySeverity(r.open));
      tr.append(sevOpen, el("td", escalated ? "num alarm" : "num", escalated));
      const sevEsc = el("td", "sev");
      sevEsc.append(bySeverity(r.escalated));
      const cov = r.coverage || { assigned: 0, checked_in: 0 };
      tr.append(sevEsc, el("td", "num", r.resolved || 0));
      tr.append(el("td", "num", cov.assigned ? pct(Math.min(cov.checked_in, cov.assigned) / cov.assigned) : "–"));
      out.push(tr);
      sums.tps += total(r.tps);
      sums.open += open;
      sums.escalated += escalated;
      sums.silent += r.tps.silent || 0;
      sums.resolved += r.resolved || 0;
      sums.assigned += cov.assigned;
      sums.checkedIn += Math.min(cov.checked_in, cov.assigned);
    }
    $("summary-body").replaceChildren(...out);
    $("summary-count").textContent = rows.length;
    $("summary-empty").hidden = rows.length > 0;
    if (view.mode !== "summary" || model.seq === null) return;
    // The KPI strip from the regions: what a summary knows (no per-incident figures).
    $("kpi-open").textContent = sums.open;
    $("kpi-open-sub").textContent = t("kpi_total_incidents", { n: sums.open + sums.resolved });
    $("kpi-escalated").textContent = sums.escalated;
    $("kpi-coverage").textContent = sums.assigned ? pct(sums.checkedIn / sums.assigned) : "—";
    $("kpi-coverage-sub").textContent = t("kpi_checked_in", { a: sums.checkedIn, b: sums.assigned });
    $("kpi-silent").textContent = sums.silent;
    $("kpi-tps").textContent = sums.tps;
    document.querySelector('[data-kpi="silent"]').classList.toggle("alarm", sums.silent > 0);
  }

  // A summary row opens the next level down: a provinsi's kabupaten, a kabupaten's or kecamatan's TPS.
  function onSummaryClick(e) {
    const b = e.target.closest("button[data-drill]");
    if (!b) return;
    const r = model.regions.get(b.dataset.drill);
    if (!r) return;
    if (view.by === "provinsi") setView("summary", "kabupaten", { kind: "provinsi", name: r.provinsi });
    else if (view.by === "kabupaten") setView("detail", view.by, { kind: "kabupaten", name: r.kabupaten });
    else setView("detail", view.by, { kind: "kecamatan", name: `${r.kabupaten}/${r.kecamatan}` });
  }

  // One protocol message (a batch frame is unpacked before this). False: resync needed.
  function applyMessage(m) {
    if (m.type === "heartbeat") return true;
    if (m.type === "snapshot") {
      loadSnapshot(m);
      return true;
    }
    if (m.type === "summary" && m.full) {
      loadSummary(m);
      return true;
    }
    if (typeof m.seq !== "number") return true;
    if (model.seq !== null && m.seq <= model.seq) return true; // already applied
    if (model.seq === null || m.seq !== model.seq + 1) return false; // a gap: start over
    model.seq = m.seq;
    if (m.type === "incident") applyIncident(m.incident);
    else if (m.type === "tps") applyTps(m.tps);
    else if (m.type === "stats") {
      model.stats = m.stats;
      invalidate("stats");
    } else if (m.type === "summary") applySummary(m.regions);
    return true;
  }

  // ---- connection ------------------------------------------------------------------------------
  const conn = { ws: null, state: "connecting", lastFrameAt: 0, backoff: BACKOFF_MIN_MS, timer: null };
  let token = null;
  let role = null;

  function setConn(state) {
    conn.state = state;
    renderConn();
  }
  function renderConn() {
    const el = $("conn");
    el.dataset.state = conn.state;
    $("conn-label").textContent = t(`conn_${conn.state}`);
  }

  function wsUrl() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.searchParams.set("token", token);
    url.searchParams.set("batch", "1");
    viewParams(url.searchParams);
    if (model.seq !== null) url.searchParams.set("since", String(model.seq));
    return url.toString();
  }

  function connect() {
    clearTimeout(conn.timer);
    if (!token) return showLogin();
    if (conn.ws) {
      conn.ws.onclose = null;
      conn.ws.close();
    }
    setConn(conn.state === "live" ? "live" : "connecting");
    const ws = new WebSocket(wsUrl());
    conn.ws = ws;
    conn.lastFrameAt = Date.now();
    ws.onmessage = (e) => {
      conn.lastFrameAt = Date.now();
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      const messages = m.type === "batch" ? m.messages : [m];
      for (const one of messages) {
        if (!applyMessage(one)) {
          model.seq = null; // resume impossible: a fresh snapshot on the next connection
          ws.close(4000, "gap");
          return;
        }
      }
      conn.backoff = BACKOFF_MIN_MS;
      if (conn.state !== "live") setConn("live");
      renderLastUpdate();
    };
    ws.onclose = (e) => {
      if (conn.ws !== ws) return;
      conn.ws = null;
      if (e.code === 4401) {
        setConn("unauthorized");
        forgetToken();
        showLogin(t("token_refused"));
        return;
      }
      if ((e.code === 4404 || e.code === 4400) && (view.region || view.mode !== defaultMode())) {
        // A region that is gone or outside this token: say why and go back to the token's whole view.
        toast(t("view_refused", { reason: e.reason }), true);
        view.mode = defaultMode();
        view.by = "kabupaten";
        view.region = null;
        writeView();
        resetModel();
        renderView();
      }
      setConn("offline");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(conn.timer);
    const wait = conn.backoff * (0.75 + Math.random() * 0.5); // jitter: wall screens do not reconnect in step
    conn.backoff = Math.min(conn.backoff * 2, BACKOFF_MAX_MS);
    conn.timer = setTimeout(connect, wait);
  }

  // A connection that says nothing (no frame, no heartbeat) for too long is treated as dead.
  function watchdog() {
    if (conn.ws && Date.now() - conn.lastFrameAt > STALE_MS) {
      setConn("stale");
      const ws = conn.ws;
      conn.ws = null;
      ws.onclose = null;
      ws.close();
      scheduleReconnect();
    }
    renderLastUpdate();
    $("clock").textContent = new Date().toLocaleTimeString(lang === "en" ? "en-GB" : "id-ID", { hour12: false });
  }

  function renderLastUpdate() {
    const el = $("last-update");
    if (!conn.lastFrameAt || model.seq === null) {
      el.textContent = t("never");
      return;
    }
    el.textContent = t("seconds_ago", { n: Math.max(0, Math.round((Date.now() - conn.lastFrameAt) / 1000)) });
  }

  // ---- token and role --------------------------------------------------------------------------
  function takeTokenFromUrl() {
    const url = new URL(location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) {
      store.set("siaga.token", fromUrl);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.toString()); // keep it off the address bar and screenshots
    }
    return fromUrl || store.get("siaga.token");
  }

  function forgetToken() {
    token = null;
    role = null;
    store.del("siaga.token");
    renderRole();
  }

  async function loadRole() {
    role = null;
    try {
      const res = await fetch(new URL("me", location.href), { headers: { Authorization: `Bearer ${token}` } });
      if (res.ok) role = (await res.json()).role;
    } catch (_) {
      role = null;
    }
    renderRole();
    invalidate("queue", "detail");
  }

  function isOperator() {
    return role === "operator" || role === "admin";
  }

  function renderRole() {
    const el = $("role");
    el.hidden = !role;
    el.textContent = role ? t(`role_${role}`) : "";
    $("sign-out").hidden = !token;
    $("radio-open").hidden = !isOperator();
    $("message-open").hidden = !isOperator();
    $("sitrep-download").hidden = !role;
  }

  // The "Laporan" button: the sitrep of the token's regions as a PDF (SPEC section 10), fetched with
  // the bearer token (never in a URL) and handed to the browser as a download.
  async function downloadSitrep() {
    let res;
    try {
      res = await fetch(`${CONFIG.dispatchUrl}/v1/reports/sitrep?format=pdf`, { headers: { Authorization: `Bearer ${token}` } });
    } catch (_) {
      toast(t("action_network"), true);
      return;
    }
    if (!res.ok) {
      toast(await problem(res), true);
      return;
    }
    const disposition = res.headers.get("content-disposition") || "";
    const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "sitrep.pdf";
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast(t("sitrep_ready", { name }));
  }

  function showLogin(error) {
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !error;
    err.textContent = error || "";
    $("login-token").focus();
  }

  function signIn(newToken) {
    token = newToken;
    store.set("siaga.token", token);
    $("login").hidden = true;
    model.seq = null;
    conn.backoff = BACKOFF_MIN_MS;
    loadRole();
    connect();
  }

  // ---- operator actions ------------------------------------------------------------------------
  async function act(id, action, body) {
    const url = `${CONFIG.dispatchUrl}/v1/incidents/${encodeURIComponent(id)}/${action}`;
    let res;
    try {
      res = await fetch(url, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify(body || {}),
      });
    } catch (_) {
      toast(t("action_network"), true);
      return false;
    }
    if (res.ok) {
      toast(t(`action_ok_${action}`, { id }));
      try {
        return await res.json(); // the incident, with its timeline
      } catch (_) {
        return {};
      }
    }
    await refused(res);
    return null;
  }

  async function refused(res) {
    toast(await problem(res), true);
  }

  // What dispatch said was wrong, as the page shows it: its `detail` (a sentence, or the fields of a 422).
  async function problem(res) {
    let detail = res.statusText;
    try {
      const j = await res.json();
      detail = typeof j.detail === "string" ? j.detail
        : Array.isArray(j.detail) ? j.detail.map((p) => `${p.field}: ${p.message}`).join("; ")
          : JSON.stringify(j.detail);
    } catch (_) {
      /* not JSON: keep the status text */
    }
    return t("action_failed", { status: res.status, detail });
  }

  // One call to dispatch's API with the page's token (a POST when there is a body). Answers
  // {ok: true, doc} or {ok: false, error} with the text to show where the operator is looking.
  async function callDispatch(path, body) {
    const init = { method: body === undefined ? "GET" : "POST", headers: { Authorization: `Bearer ${token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(`${CONFIG.dispatchUrl}${path}`, init);
    } catch (_) {
      return { ok: false, error: t("action_network") };
    }
    if (!res.ok) return { ok: false, error: await problem(res) };
    try {
      return { ok: true, doc: await res.json() };
    } catch (_) {
      return { ok: true, doc: {} };
    }
  }

  // ---- the incident view: facts, timeline, and for operators the correction --------------------
  const CATEGORIES = ["flood", "violence", "crowd", "intimidation", "money_politics", "logistics", "neutrality",
    "fire", "medical", "equipment", "traffic", "hoax", "other"]; // silent_post is Siaga's own
  const SEVERITIES = ["low", "medium", "high", "critical"];
  let shownIncident = null;

  function options(select, values, group, chosen, blank) {
    const out = [];
    if (blank !== undefined) {
      const o = el("option", null, blank);
      o.value = "";
      out.push(o);
    }
    for (const v of values) {
      const o = el("option", null, group ? tg(group, v) : v);
      o.value = v;
      if (v === chosen) o.selected = true;
      out.push(o);
    }
    select.replaceChildren(...out);
  }

  async function openIncident(id) {
    let res;
    try {
      res = await fetch(`${CONFIG.dispatchUrl}/v1/incidents/${encodeURIComponent(id)}`, {
        headers: { Authorization: `Bearer ${token}` },
      });
    } catch (_) {
      toast(t("action_network"), true);
      return;
    }
    if (!res.ok) {
      await refused(res);
      return;
    }
    showIncident(await res.json());
  }

  function describeEntry(e) {
    const d = e.detail || {};
    if (e.action === "classified") {
      const parts = [];
      if (d.from.category !== d.to.category) parts.push(`${tg("category", d.from.category)} → ${tg("category", d.to.category)}`);
      if (d.from.severity !== d.to.severity) parts.push(`${tg("severity", d.from.severity)} → ${tg("severity", d.to.severity)}`);
      const override = d.override ? ` (${t("override", { severity: tg("severity", d.facts_demand) })})` : "";
      return `${t("tl_classified")}: ${parts.join(", ") || t("tl_confirmed")}: ${d.reason}${override}`;
    }
    if (e.action === "escalated") return `${t("tl_escalated")}: ${tg("level", d.from)} → ${tg("level", d.to)} (${d.reason})`;
    if (e.action === "stakeholders_told") return `${t("tl_stakeholders")}: ${(d.stakeholders || []).join(", ")}`;
    if (e.action === "alert_silenced") {
      return t("tl_alert_silenced", { who: d.to_whom, id: d.silence_id, reason: d.silence_reason, until: fmtTime(d.until) });
    }
    if (e.action === "alerts_released") return t("tl_alerts_released", { n: d.alerts, why: d.why });
    if (e.action === "held_alerts_dropped") return t("tl_held_alerts_dropped", { n: d.alerts });
    if (ORDER_ENTRIES.has(e.action)) return describeOrderEntry(e.action, d);
    const text = d.text || d.resolution || d.note || "";
    return text ? `${e.action}: ${text}` : e.action;
  }

  const ORDER_ENTRIES = new Set(["order_sent", "order_resent", "order_unanswered", "order_acknowledged", "notice_acknowledged"]);

  function describeOrderEntry(action, d) {
    const o = ((shownIncident && shownIncident.orders) || []).find((x) => x.order_id === d.order_id);
    const name = d.name || (o && o.name) || d.personnel_id || (o && o.personnel_id) || d.order_id;
    const extra = [];
    if (action === "order_sent" && d.nearest) extra.push(t("tl_order_nearest"));
    if (action === "order_sent" && d.eta_minutes !== null && d.eta_minutes !== undefined) extra.push(t("order_eta", { n: d.eta_minutes }));
    if (action === "order_acknowledged" && d.late) extra.push(t("tl_order_late"));
    const text = t(`tl_${action}`, { name }) + (extra.length ? ` (${extra.join(", ")})` : "");
    return d.note ? `${text}: ${d.note}` : text;
  }

  // A fresh open of the incident view: the forms start over.
  function showIncident(doc) {
    shownIncident = doc;
    options($("classify-category"), CATEGORIES, "category", doc.category);
    options($("classify-severity"), SEVERITIES, "severity", doc.severity);
    $("classify-reason").value = "";
    resetPicker(doc.id);
    renderIncident();
    if (!$("incident-dialog").open) $("incident-dialog").showModal();
  }

  // A newer copy of the shown incident (dispatch's answer, or a delta from the bus, which carries no
  // timeline) re-renders the view and leaves alone what the operator is typing.
  function updateIncident(doc) {
    if (!shownIncident || doc.id !== shownIncident.id || doc.version < shownIncident.version) return;
    shownIncident = doc.timeline ? doc : { ...doc, timeline: shownIncident.timeline };
    renderIncident();
  }

  function renderIncident() {
    const doc = shownIncident;
    $("incident-title").textContent = `${incidentTitle(doc)} · ${incidentWhere(doc)}`;
    const facts = [
      ["field_severity", tg("severity", doc.severity)],
      ["field_level", tg("level", doc.level)],
      ["field_status", tg("status", doc.status)],
      ["field_source", tg("source", doc.source || "field")],
      ["field_code", doc.code || "—"],
      ["field_silenced", doc.held_alerts ? heldText(doc) : "—"],
      ["field_deadline", doc.local_deadline && doc.level === 0 && doc.status === "open" ? fmtTime(doc.local_deadline) : "—"],
      ["field_reports", String(doc.reports)],
      ["field_description", doc.description || "—"],
      ["field_why", (doc.why || []).join("; ") || "—"],
    ];
    const dl = [];
    for (const [key, value] of facts) {
      const dd = el("dd", null, value);
      dd.dataset.fact = key.replace("field_", "");
      dl.push(el("dt", null, t(key)), dd);
    }
    $("incident-facts").replaceChildren(...dl);
    $("classify-form").hidden = !isOperator() || doc.status === "resolved";
    renderOrders(doc);
    $("assign-box").hidden = !isOperator() || doc.status === "resolved";
    $("incident-message").hidden = !doc.tps_id;
    renderCandidates();
    const items = (doc.timeline || []).map((e) => {
      const li = el("li");
      li.dataset.action = e.action;
      li.append(el("span", "time", `${fmtTime(e.at)} `), el("span", "actor", `${e.actor} · `), el("span", null, describeEntry(e)));
      return li;
    });
    $("incident-timeline").replaceChildren(...items);
  }

  // The open view after a frame: the model's newer copy, then its timeline from dispatch.
  function renderDetail() {
    if (!shownIncident || !$("incident-dialog").open) return;
    const inc = model.incidents.get(shownIncident.id);
    if (inc && inc.version > shownIncident.version) {
      updateIncident(inc);
      syncTimeline();
    } else {
      renderIncident(); // the role or the language changed
    }
  }

  // The bus carries incidents without their timeline: fetch it after a change, one call at a time.
  const timelineSync = { busy: false, again: false };
  async function syncTimeline() {
    if (timelineSync.busy) {
      timelineSync.again = true;
      return;
    }
    timelineSync.busy = true;
    try {
      do {
        timelineSync.again = false;
        const id = shownIncident && shownIncident.id;
        if (!id || !$("incident-dialog").open) break;
        const got = await callDispatch(`/v1/incidents/${encodeURIComponent(id)}`);
        if (got.ok) updateIncident(got.doc);
      } while (timelineSync.again);
    } finally {
      timelineSync.busy = false;
    }
  }

  // ---- field orders: who was sent, the candidates to send, messages to the field (SPEC section 9) --
  function renderOrders(doc) {
    const items = (doc.orders || []).map((o) => {
      const li = el("li", o.state === "unanswered" ? "order unanswered" : "order");
      li.dataset.orderId = o.order_id;
      li.dataset.personnelId = o.personnel_id;
      li.dataset.state = o.state;
      const who = o.name || o.personnel_id;
      const meta = [t("order_issued", { time: fmtTime(o.issued_at) })];
      if (o.attempt > 1) meta.push(t("order_attempt", { n: o.attempt }));
      if (o.eta_minutes !== null && o.eta_minutes !== undefined) meta.push(t("order_eta", { n: o.eta_minutes }));
      if (o.distance_km !== null && o.distance_km !== undefined) meta.push(fmtKm(o.distance_km));
      if (o.acknowledged_at) meta.push(t("order_acked_at", { time: fmtTime(o.acknowledged_at) }));
      li.append(
        el("span", `badge ord-${o.state}`, tg("order_state", o.state)),
        el("span", "order-who", o.unit ? `${who} · ${o.unit}` : who),
        el("span", "order-meta", meta.join(" · ")),
      );
      if (o.note) li.append(el("div", "order-note", o.note));
      if (o.state === "unanswered") li.append(el("div", "order-warn", t("order_unanswered_hint")));
      return li;
    });
    $("incident-orders").replaceChildren(...items);
    $("orders-empty").hidden = items.length > 0;
  }

  // The candidate list of the incident view: fetched on demand, for the incident it was fetched for.
  const picker = { incidentId: null, items: null, loading: false, sending: false };

  function resetPicker(id) {
    picker.incidentId = id;
    picker.items = null;
    picker.loading = false;
    $("assign-eta").value = "";
    $("assign-note").value = "";
    assignError("");
  }

  function assignError(text) {
    const e = $("assign-error");
    e.hidden = !text;
    e.textContent = text || "";
  }

  async function loadCandidates() {
    const id = shownIncident && shownIncident.id;
    if (!id) return;
    picker.loading = true;
    renderCandidates();
    const got = await callDispatch(`/v1/incidents/${encodeURIComponent(id)}/candidates`);
    if (picker.incidentId !== id) return; // another incident was opened meanwhile
    picker.loading = false;
    if (got.ok) picker.items = got.doc.items || [];
    else assignError(got.error);
    renderCandidates();
  }

  function renderCandidates() {
    $("candidates-box").hidden = picker.items === null && !picker.loading;
    const n = picker.items ? picker.items.length : 0;
    $("candidates-status").textContent = picker.loading ? t("candidates_loading")
      : picker.items === null ? "" : n ? t("candidates_count", { n }) : t("candidates_none");
    const rows = (picker.items || []).map((c) => {
      const tr = el("tr", c.available ? null : "busy");
      tr.dataset.personnelId = c.personnel_id;
      tr.dataset.available = String(c.available);
      const cell = (col, text, cls) => {
        const td = el("td", cls, text);
        td.dataset.col = col;
        return td;
      };
      const distance = cell("distance", fmtKm(c.distance_km), "num");
      if (c.located_by) distance.title = t(`located_${c.located_by}`);
      const send = el("button", null, t("btn_send_person"));
      send.type = "button";
      send.dataset.assign = c.personnel_id;
      send.disabled = !c.available || picker.sending;
      const action = el("td");
      action.append(send);
      tr.append(
        cell("name", c.name),
        cell("unit", [c.unit, c.role ? tg("role", c.role) : ""].filter(Boolean).join(" · ")),
        distance,
        cell(
          "status",
          [c.status ? tg("personnel_status", c.status) : "—",
            c.fatigued ? t("cand_fatigued", { h: c.hours_on_duty_24h }) : ""].filter(Boolean).join(" · "),
        ),
        cell("battery", c.battery === null || c.battery === undefined ? "—" : `${c.battery}%`, "num"),
        cell("checkin", fmtMinutesAgo(c.checkin_age_minutes)),
        cell("assignment", describeAssignment(c.assignment)),
        action,
      );
      return tr;
    });
    $("candidates-body").replaceChildren(...rows);
    $("assign-nearest").disabled = picker.sending;
  }

  function describeAssignment(a) {
    if (!a) return t("assignment_free");
    if (shownIncident && a.incident_id === shownIncident.id) return t("assignment_here");
    const other = model.incidents.get(a.incident_id);
    return t("assignment_other", { incident: (other && other.code) || a.incident_id });
  }

  // One click: the person named (or the nearest free one), with the ETA and note if given.
  async function sendAssign(personnelId) {
    const doc = shownIncident;
    if (!doc || picker.sending) return;
    const body = personnelId ? { personnel_id: personnelId } : { nearest: true };
    const eta = $("assign-eta").value.trim();
    if (eta !== "") body.eta_minutes = Number(eta);
    const note = $("assign-note").value.trim();
    if (note) body.note = note;
    picker.sending = true;
    assignError("");
    renderCandidates();
    const got = await callDispatch(`/v1/incidents/${encodeURIComponent(doc.id)}/assign`, body);
    picker.sending = false;
    renderCandidates();
    if (!got.ok) {
      assignError(got.error);
      if (picker.items !== null) loadCandidates(); // the list may have been stale: show who is free now
      return;
    }
    const order = (got.doc.orders || [])[(got.doc.orders || []).length - 1];
    toast(t("order_sent", { name: order ? order.name || order.personnel_id : "", id: doc.id }));
    $("assign-eta").value = "";
    $("assign-note").value = "";
    updateIncident(got.doc);
    if (picker.items !== null) loadCandidates();
  }

  const RECIPIENTS = ["kecamatan", "tps_ids", "personnel_ids", "all"];
  const PRIORITIES = ["normal", "urgent"];

  // preset: {kind, ids} to open it addressed already (the incident view's "message this TPS").
  function openMessage(preset) {
    options($("message-to"), RECIPIENTS, "recipients", preset ? preset.kind : "kecamatan");
    const kecamatan = [...new Set([...model.tps.values()].map((x) => x.kecamatan))].filter(Boolean).sort();
    options($("message-kecamatan"), kecamatan, null);
    options($("message-priority"), PRIORITIES, "priority", "normal");
    $("message-ids").value = preset ? preset.ids.join(", ") : "";
    $("message-text").value = "";
    messageNote("", "");
    renderMessageTo();
    $("message-dialog").showModal();
    $("message-text").focus();
  }

  function renderMessageTo() {
    const kind = $("message-to").value;
    $("message-kecamatan-field").hidden = kind !== "kecamatan";
    $("message-ids-field").hidden = kind !== "tps_ids" && kind !== "personnel_ids";
    $("message-hint").hidden = kind !== "all";
    const which = kind === "tps_ids" ? "tps_ids" : "personnel_ids";
    $("message-ids-label").textContent = t(`field_${which}`);
    $("message-ids").placeholder = t(`${which}_placeholder`);
  }

  function messageNote(error, result) {
    $("message-error").hidden = !error;
    $("message-error").textContent = error;
    $("message-result").hidden = !result;
    $("message-result").textContent = result;
  }

  async function sendMessage(e) {
    e.preventDefault();
    const kind = $("message-to").value;
    const text = $("message-text").value.trim();
    if (!text) return;
    let to;
    if (kind === "all") to = { all: true };
    else if (kind === "kecamatan") to = { kecamatan: [...$("message-kecamatan").selectedOptions].map((o) => o.value) };
    else to = { [kind]: $("message-ids").value.split(/[\s,;]+/).filter(Boolean) };
    if (!to.all && !to[kind].length) {
      messageNote(t("message_no_recipient"), "");
      return;
    }
    messageNote("", "");
    $("message-send").disabled = true;
    const got = await callDispatch("/v1/messages", { to, text, priority: $("message-priority").value });
    $("message-send").disabled = false;
    if (!got.ok) {
      messageNote(got.error, "");
      return;
    }
    const targets = (got.doc.items || []).map((i) => i.target).join(", ");
    messageNote("", t("message_sent", { n: got.doc.count, targets }));
    $("message-text").value = "";
  }

  async function sendCorrection(e) {
    e.preventDefault();
    const doc = shownIncident;
    const reason = $("classify-reason").value.trim();
    if (!doc || !reason) return;
    const category = $("classify-category").value;
    const severity = $("classify-severity").value;
    const body = { reason };
    if (category !== doc.category) body.category = category;
    if (severity !== doc.severity) body.severity = severity;
    if (!body.category && !body.severity) Object.assign(body, { category, severity }); // a confirmation
    $("classify-send").disabled = true;
    const answered = await act(doc.id, "classify", body);
    $("classify-send").disabled = false;
    if (answered && answered.id) {
      $("classify-reason").value = "";
      updateIncident(answered);
    }
  }

  // ---- a report taken by radio or phone at the command post ------------------------------------
  const TPS_OPTIONS_MAX = 200;

  function openRadio() {
    const kecamatan = [...new Set([...model.tps.values()].map((x) => x.kecamatan))].sort();
    options($("radio-kecamatan"), kecamatan, null, undefined, t("all_kecamatan"));
    options($("radio-category"), CATEGORIES, "category", undefined, t("category_from_text"));
    for (const id of ["radio-search", "radio-description", "radio-injuries", "radio-crowd"]) $(id).value = "";
    $("radio-weapons").checked = false;
    fillRadioTps();
    $("radio-dialog").showModal();
    $("radio-search").focus();
  }

  function fillRadioTps() {
    const kec = $("radio-kecamatan").value;
    const q = $("radio-search").value.trim().toLowerCase();
    const found = [...model.tps.values()]
      .filter((x) => (!kec || x.kecamatan === kec)
        && (!q || `${x.name} ${x.tps_id} ${x.desa || ""}`.toLowerCase().includes(q)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .slice(0, TPS_OPTIONS_MAX);
    const opts = found.map((x) => {
      const o = el("option", null, `${x.name} · ${x.desa ? `${x.desa}, ` : ""}${x.kecamatan} (${x.tps_id})`);
      o.value = x.tps_id;
      return o;
    });
    $("radio-tps").replaceChildren(...opts);
    if (opts.length === 1) opts[0].selected = true;
  }

  async function sendRadio(e) {
    e.preventDefault();
    const tpsId = $("radio-tps").value;
    const description = $("radio-description").value.trim();
    if (!tpsId || !description) return;
    const body = { tps_id: tpsId, description };
    if ($("radio-category").value) body.category = $("radio-category").value;
    if ($("radio-injuries").value !== "") body.injuries = Number($("radio-injuries").value);
    if ($("radio-crowd").value !== "") body.crowd_size = Number($("radio-crowd").value);
    if ($("radio-weapons").checked) body.weapons = true;
    $("radio-send").disabled = true;
    let res;
    try {
      res = await fetch(`${CONFIG.dispatchUrl}/v1/incidents`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (_) {
      toast(t("action_network"), true);
      return;
    } finally {
      $("radio-send").disabled = false;
    }
    if (!res.ok) {
      await refused(res);
      return;
    }
    const doc = await res.json();
    $("radio-dialog").close();
    toast(t("radio_ok", { id: doc.id, severity: tg("severity", doc.severity), level: tg("level", doc.level) }));
    applyIncident(doc);
    showIncident(doc);
  }

  let dialogTarget = null;
  function askText(id, action) {
    dialogTarget = { id, action };
    $("text-title").textContent = t(action === "resolve" ? "dialog_resolve" : "dialog_note", { id });
    const input = $("text-input");
    input.value = "";
    input.placeholder = t(action === "resolve" ? "resolution_placeholder" : "note_placeholder");
    $("text-dialog").showModal();
    input.focus();
  }

  async function onQueueClick(e) {
    const opener = e.target.closest("button[data-open]");
    if (opener) return openIncident(opener.closest("[data-id]").dataset.id);
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const card = button.closest("[data-id]");
    const id = card.dataset.id;
    const action = button.dataset.action;
    if (action === "resolve" || action === "notes") return askText(id, action);
    button.disabled = true;
    await act(id, action, action === "assign" ? { nearest: true } : undefined);
    button.disabled = false;
  }

  function toast(text, isError) {
    const el = document.createElement("div");
    el.className = isError ? "toast error" : "toast";
    el.textContent = text;
    $("toasts").appendChild(el);
    setTimeout(() => el.remove(), isError ? 8000 : 4000);
  }

  // ---- rendering -------------------------------------------------------------------------------
  function render() {
    frameRequested = false;
    if (dirty.geo) computeGeo();
    if (dirty.map || dirty.geo) drawMap();
    if (dirty.stats) renderStats();
    if (dirty.queue) renderQueue();
    if (dirty.feed) renderFeed();
    if (dirty.detail) renderDetail();
    if (dirty.summary) renderSummary();
    for (const k of Object.keys(dirty)) dirty[k] = false;
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return t("no_data");
    const mins = Math.round(seconds / 60);
    if (mins < 60) return t("duration_min", { n: mins });
    return t("duration_hour", { h: Math.floor(mins / 60), m: mins % 60 });
  }

  function fmtAge(iso) {
    const ms = Date.now() - Date.parse(iso);
    if (!isFinite(ms)) return "";
    const mins = Math.floor(ms / 60000);
    if (mins < 1) return t("age_now");
    if (mins < 60) return t("age_min", { n: mins });
    if (mins < 24 * 60) return t("age_hour", { h: Math.floor(mins / 60), m: mins % 60 });
    return t("age_days", { n: Math.floor(mins / (24 * 60)) });
  }

  function locale() {
    return lang === "en" ? "en-GB" : "id-ID";
  }

  function fmtKm(km) {
    if (km === null || km === undefined) return "—";
    return `${km.toLocaleString(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 })} km`;
  }

  function fmtMinutesAgo(minutes) {
    if (minutes === null || minutes === undefined) return "—";
    const mins = Math.floor(minutes);
    if (mins < 1) return t("age_now");
    const age = mins < 60 ? t("age_min", { n: mins }) : t("age_hour", { h: Math.floor(mins / 60), m: mins % 60 });
    return t("ago", { age });
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toLocaleTimeString(lang === "en" ? "en-GB" : "id-ID", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function pct(share) {
    return share === null || share === undefined ? t("no_data") : `${Math.round(share * 100)}%`;
  }

  function renderStats() {
    const s = model.stats;
    if (!s) return;
    const inc = s.incidents;
    $("kpi-open").textContent = inc.open;
    $("kpi-open-sub").textContent = t("kpi_total_incidents", { n: inc.total });
    $("kpi-escalated").textContent = inc.escalated;
    $("kpi-escalated-sub").textContent = inc.acknowledged ? `${tg("status", "acknowledged")}: ${inc.acknowledged}` : "";
    $("kpi-on-site").textContent = pct(s.resolved_on_site.share);
    $("kpi-on-site-sub").textContent = t("kpi_of_resolved", { n: s.resolved_on_site.resolved });
    $("kpi-median").textContent = fmtDuration(s.median_resolve_s);
    $("kpi-coverage").textContent = pct(s.coverage.share);
    $("kpi-coverage-sub").textContent = t("kpi_checked_in", { a: s.coverage.checked_in, b: s.coverage.assigned });
    $("kpi-silent").textContent = s.silent_posts;
    $("kpi-alert-failures").textContent = s.alert_failures;
    $("kpi-tps").textContent = s.tps.total;
    document.querySelector('[data-kpi="silent"]').classList.toggle("alarm", s.silent_posts > 0);
    document.querySelector('[data-kpi="alert_failures"]').classList.toggle("alarm", s.alert_failures > 0);
    renderKecamatan(s.by_kecamatan);
  }

  function renderKecamatan(byKec) {
    const rows = Object.entries(byKec || {}).sort(
      (a, b) => b[1].escalated - a[1].escalated || b[1].open - a[1].open || a[0].localeCompare(b[0]),
    );
    const body = $("kec-body");
    const out = [];
    for (const [name, c] of rows) {
      const tr = el("tr");
      tr.dataset.kecamatan = name;
      tr.append(el("td", null, name), el("td", "num", c.tps));
      tr.append(el("td", c.open ? "num hot" : "num", c.open), el("td", c.escalated ? "num alarm" : "num", c.escalated));
      tr.append(el("td", "num", c.resolved));
      // The health of the kecamatan's personnel (SPEC section 9): who is on duty, who is not, and
      // who is worn out or has gone quiet.
      tr.append(el("td", "num health", c.on_duty || 0));
      for (const key of ["unwell", "off_duty", "fatigued", "lapsed"]) {
        const td = el("td", c[key] ? "num health warn" : "num health", c[key] || 0);
        td.dataset.health = key;
        tr.append(td);
      }
      tr.append(el("td", "num health", c.duty_days || "–"));
      out.push(tr);
    }
    body.replaceChildren(...out);
  }

  function incidentTitle(inc) {
    return tg("category", inc.category);
  }
  function incidentWhere(inc) {
    const place = inc.tps_name || inc.tps_id || t("area_incident");
    return inc.kecamatan ? `${place} · ${inc.kecamatan}` : place;
  }

  // The queue and the feed keep one element per incident and rebuild it only when that incident
  // changed, so a button under the pointer survives the re-renders of everything else.
  const queueEls = new Map();
  const feedEls = new Map();

  function queueOrder(a, b) {
    return (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0)
      || (a.opened_at < b.opened_at ? -1 : a.opened_at > b.opened_at ? 1 : 0);
  }

  // Alerts a silence holds back (SPEC section 5): the incident still shows and escalates.
  function heldText(inc) {
    return t("alerts_held", { n: inc.held_alerts, ids: (inc.silenced_by || []).join(", ") });
  }

  function fillCard(card, inc) {
    card.dataset.status = inc.status;
    card.dataset.severity = inc.severity;
    card.dataset.level = inc.level;
    const head = el("div", "card-head");
    head.append(
      el("span", `badge sev-${inc.severity}`, tg("severity", inc.severity)),
      el("span", "card-title", incidentTitle(inc)),
      el("span", "badge lvl", tg("level", inc.level)),
      el("span", `badge st-${inc.status}`, tg("status", inc.status)),
    );
    if (inc.code) head.append(el("span", "badge code", inc.code)); // what an SMS follow-up names
    const age = el("span", "age", fmtAge(inc.opened_at));
    age.dataset.opened = inc.opened_at;
    head.append(age);
    const where = el("div", "card-where", incidentWhere(inc));
    if (inc.reports > 1) where.textContent += ` · ${t("reports", { n: inc.reports })}`;
    const parts = [head, where];
    const why = inc.description || (inc.why || []).join(", ");
    if (why) parts.push(el("div", "card-why", why));
    if (inc.last_alert_failure) parts.push(el("div", "card-warn", t("alert_failed", { why: inc.last_alert_failure })));
    if (inc.held_alerts) parts.push(el("div", "card-silenced", heldText(inc)));
    for (const o of inc.orders || []) {
      // Field orders (SPEC section 9): an unanswered one stands out for the command center.
      const line = t("order_line", { name: o.name || o.personnel_id, state: tg("order_state", o.state) });
      parts.push(el("div", o.state === "unanswered" ? "card-warn" : "card-order", line));
    }
    const actions = el("div", "card-actions");
    const button = (action, cls, label) => {
      const b = el("button", cls, t(label));
      b.type = "button";
      b.dataset.action = action;
      return b;
    };
    if (isOperator()) {
      if (inc.status !== "acknowledged") actions.append(button("ack", "ack", "btn_ack"));
      if ((inc.level || 0) < 3) actions.append(button("escalate", "escalate", "btn_escalate"));
      if (inc.tps_id) actions.append(button("assign", "ghost", "btn_assign"));
      actions.append(button("resolve", "ghost", "btn_resolve"), button("notes", "ghost", "btn_note"));
    }
    const detail = el("button", "ghost", t(isOperator() ? "btn_detail_correct" : "btn_detail"));
    detail.type = "button";
    detail.dataset.open = "detail"; // not an action: viewers have it too
    actions.append(detail);
    parts.push(actions);
    card.replaceChildren(...parts);
  }

  function syncList(list, cache, items, make, fill) {
    const keep = new Set();
    let prev = null;
    for (const inc of items) {
      let entry = cache.get(inc.id);
      if (!entry) {
        entry = { node: make(inc), version: null };
        entry.node.dataset.id = inc.id;
        cache.set(inc.id, entry);
      }
      const stamp = `${inc.version}:${lang}:${role}`;
      if (entry.version !== stamp) {
        fill(entry.node, inc);
        entry.version = stamp;
      }
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== entry.node) list.insertBefore(entry.node, want);
      prev = entry.node;
      keep.add(inc.id);
    }
    for (const [id, entry] of cache) {
      if (!keep.has(id)) {
        entry.node.remove();
        cache.delete(id);
      }
    }
  }

  function renderQueue() {
    const waiting = [];
    for (const inc of model.incidents.values()) if (UNRESOLVED.has(inc.status)) waiting.push(inc);
    waiting.sort(queueOrder);
    const shown = waiting.slice(0, QUEUE_MAX);
    syncList($("queue"), queueEls, shown, () => el("li", "card"), fillCard);
    $("queue-count").textContent = waiting.length;
    $("queue-empty").hidden = waiting.length > 0;
    const more = $("queue-more");
    more.hidden = waiting.length <= QUEUE_MAX;
    more.textContent = t("queue_more", { n: waiting.length - QUEUE_MAX });
  }

  function fillFeedItem(li, inc) {
    li.dataset.status = inc.status;
    li.dataset.severity = inc.severity;
    const body = el("div");
    const what = el("div", "what", `${incidentTitle(inc)} — ${tg("status", inc.status)} · ${tg("level", inc.level)}`);
    body.append(what, el("div", "where", incidentWhere(inc)));
    li.replaceChildren(el("span", "time", fmtTime(changedAt(inc))), body);
  }

  function renderFeed() {
    const items = [];
    for (const id of model.feed) {
      const inc = model.incidents.get(id);
      if (inc) items.push(inc);
    }
    syncList($("feed"), feedEls, items, () => el("li"), fillFeedItem);
    $("feed-empty").hidden = items.length > 0;
  }

  function refreshAges() {
    for (const e of document.querySelectorAll("[data-opened]")) e.textContent = fmtAge(e.dataset.opened);
  }

  // ---- map -------------------------------------------------------------------------------------
  const geo = { points: [], labels: [], project: null };
  let screen = []; // [x, y, tps] in CSS pixels, for hover

  function computeGeo() {
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    const byKec = new Map();
    for (const p of model.tps.values()) {
      if (typeof p.lat !== "number" || typeof p.lon !== "number") continue;
      minLat = Math.min(minLat, p.lat); maxLat = Math.max(maxLat, p.lat);
      minLon = Math.min(minLon, p.lon); maxLon = Math.max(maxLon, p.lon);
      const k = byKec.get(p.kecamatan) || { lat: 0, lon: 0, n: 0 };
      k.lat += p.lat; k.lon += p.lon; k.n += 1;
      byKec.set(p.kecamatan, k);
    }
    geo.labels = [...byKec.entries()].filter(([name]) => name).map(([name, k]) => ({ name, lat: k.lat / k.n, lon: k.lon / k.n }));
    if (minLat === Infinity) {
      geo.project = null;
      return;
    }
    // Equirectangular with the longitude squeezed by cos(latitude): true enough for a regency.
    const kx = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    const spanX = Math.max((maxLon - minLon) * kx, 0.01);
    const spanY = Math.max(maxLat - minLat, 0.01);
    const midX = ((minLon + maxLon) / 2) * kx;
    const midY = (minLat + maxLat) / 2;
    geo.project = (w, h, pad) => {
      const scale = Math.min((w - 2 * pad) / spanX, (h - 2 * pad) / spanY);
      return (lat, lon) => [w / 2 + (lon * kx - midX) * scale, h / 2 - (lat - midY) * scale];
    };
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  const COLORS = {};
  function loadColors() {
    for (const s of LEGEND) COLORS[s] = cssVar(`--${s}`) || "#888";
  }

  function drawMap() {
    const canvas = $("map");
    const wrap = $("map-wrap");
    const dpr = window.devicePixelRatio || 1;
    const w = wrap.clientWidth, h = wrap.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let escorts = { moving: 0, overdue: 0 };
    const counts = Object.fromEntries(LEGEND.map((s) => [s, 0]));
    screen = [];
    let drawn = 0;
    if (geo.project && w > 0 && h > 0) {
      const proj = geo.project(w, h, 24);
      const n = Math.max(model.tps.size, 1);
      const r = Math.max(2, Math.min(7, Math.sqrt((w * h) / n) * 0.16));
      const byState = new Map(STATES.map((s) => [s, []]));
      for (const p of model.tps.values()) {
        if (typeof p.lat !== "number" || typeof p.lon !== "number") continue;
        const state = byState.has(p.state) ? p.state : "normal";
        byState.get(state).push(p);
      }
      for (const state of STATES) {
        const big = state === "open" || state === "escalated" || state === "silent";
        const radius = big ? r * 1.6 : r;
        ctx.fillStyle = COLORS[state];
        ctx.globalAlpha = state === "normal" || state === "closed" ? 0.75 : 1;
        ctx.beginPath();
        for (const p of byState.get(state)) {
          const [x, y] = proj(p.lat, p.lon);
          ctx.moveTo(x + radius, y);
          ctx.arc(x, y, radius, 0, Math.PI * 2);
          screen.push([x, y, p]);
        }
        ctx.fill();
        if (state === "escalated" && byState.get(state).length) {
          ctx.globalAlpha = 0.9;
          ctx.strokeStyle = "#ffffff";
          ctx.lineWidth = 1.5;
          ctx.stroke();
        }
        counts[state] = byState.get(state).length;
        drawn += byState.get(state).length;
      }
      ctx.globalAlpha = 1;
      escorts = drawEscorts(ctx, proj);
      ctx.font = `600 ${w > 900 ? 13 : 11}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.lineJoin = "round";
      for (const k of geo.labels) {
        const [x, y] = proj(k.lat, k.lon);
        ctx.lineWidth = 4;
        ctx.strokeStyle = "rgba(11,15,20,0.85)";
        ctx.strokeText(k.name, x, y);
        ctx.fillStyle = "#cdd9e5";
        ctx.fillText(k.name, x, y);
      }
    }
    // Hooks for tests and for anyone checking the wall screen from a script.
    canvas.dataset.tpsCount = drawn;
    canvas.dataset.escorts = escorts.moving;
    canvas.dataset.escortsOverdue = escorts.overdue;
    for (const s of LEGEND) canvas.dataset[`state${s[0].toUpperCase()}${s.slice(1)}`] = counts[s];
    for (const s of LEGEND) {
      const n = document.querySelector(`#legend [data-state="${s}"] .n`);
      if (n) n.textContent = counts[s];
    }
  }

  // Ballot boxes in transit (SPEC section 9): a dashed line from the TPS towards its PPK, drawn at
  // the kecamatan's centre (the PPK sits at kecamatan level), as far as the escort should have come
  // by now; red and full length once overdue.
  function drawEscorts(ctx, proj) {
    const out = { moving: 0, overdue: 0 };
    const centre = new Map(geo.labels.map((k) => [k.name, k]));
    const now = Date.now();
    ctx.save();
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 2;
    for (const p of model.tps.values()) {
      if (!p.escorts || !p.escorts.length || typeof p.lat !== "number") continue;
      const k = centre.get(p.kecamatan);
      if (!k) continue;
      const [x0, y0] = proj(p.lat, p.lon);
      const [x1, y1] = proj(k.lat, k.lon);
      for (const e of p.escorts) {
        const left = Date.parse(e.departed_at), due = Date.parse(e.expected_at);
        const share = e.overdue ? 1 : Math.max(0.15, Math.min(1, (now - left) / Math.max(due - left, 1)));
        ctx.strokeStyle = e.overdue ? COLORS.escalated : "#f2c94c";
        ctx.beginPath();
        ctx.moveTo(x0, y0);
        ctx.lineTo(x0 + (x1 - x0) * share, y0 + (y1 - y0) * share);
        ctx.stroke();
        out.moving += 1;
        if (e.overdue) out.overdue += 1;
      }
    }
    ctx.restore();
    return out;
  }

  function renderLegend() {
    const items = LEGEND.map((s) => {
      const li = el("li");
      li.dataset.state = s;
      li.append(el("span", `swatch ${s}`), el("span", null, tg("state", s)), el("span", "n", "0"));
      return li;
    });
    $("legend").replaceChildren(...items);
    dirty.map = true;
  }

  function onMapHover(e) {
    const tip = $("map-tip");
    const rect = $("map").getBoundingClientRect();
    const mx = e.clientX - rect.left, my = e.clientY - rect.top;
    let best = null, bestD = 100; // within 10 px
    for (const [x, y, p] of screen) {
      const d = (x - mx) ** 2 + (y - my) ** 2;
      if (d < bestD) { bestD = d; best = [x, y, p]; }
    }
    if (!best) {
      tip.hidden = true;
      return;
    }
    const p = best[2];
    let text = `${p.name || p.tps_id} · ${p.kecamatan} — ${tg("state", p.state)} · ${t("tooltip_personnel", { a: p.checked_in ?? 0, b: p.assigned ?? 0 })}`;
    for (const e of p.escorts || []) {
      text += ` · ${t(e.overdue ? "tooltip_escort_overdue" : "tooltip_escort", { n: e.box_ids.length, to: e.to })}`;
    }
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = `${Math.min(best[0] + 12, rect.width - tip.offsetWidth - 4)}px`;
    tip.style.top = `${Math.max(best[1] - 30, 4)}px`;
  }

  // ---- start -----------------------------------------------------------------------------------
  function wire() {
    $("lang-toggle").addEventListener("click", () => {
      lang = lang === "id" ? "en" : "id";
      store.set("siaga.lang", lang);
      applyStaticLabels();
      renderView();
      invalidate("stats", "queue", "feed", "map", "detail", "summary");
    });
    $("sign-out").addEventListener("click", () => {
      forgetToken();
      if (conn.ws) {
        conn.ws.onclose = null;
        conn.ws.close();
        conn.ws = null;
      }
      setConn("connecting");
      showLogin();
    });
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("login-token").value.trim();
      if (value) signIn(value);
    });
    $("queue").addEventListener("click", onQueueClick);
    $("summary-body").addEventListener("click", onSummaryClick);
    $("view-select").addEventListener("change", (e) => {
      const v = e.target.value;
      if (v === "detail") setView("detail", view.by, view.region);
      else setView("summary", v, view.region);
    });
    $("region-clear").addEventListener("click", () => setView(view.mode, view.by, null));
    $("text-cancel").addEventListener("click", () => $("text-dialog").close());
    $("text-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = $("text-input").value.trim();
      if (!text || !dialogTarget) return;
      const { id, action } = dialogTarget;
      const ok = await act(id, action, action === "resolve" ? { resolution: text } : { text });
      if (ok) $("text-dialog").close();
    });
    $("feed").addEventListener("click", (e) => {
      const li = e.target.closest("[data-id]");
      if (li) openIncident(li.dataset.id);
    });
    $("incident-close").addEventListener("click", () => $("incident-dialog").close());
    $("classify-form").addEventListener("submit", sendCorrection);
    $("radio-open").addEventListener("click", openRadio);
    $("sitrep-download").addEventListener("click", downloadSitrep);
    $("radio-cancel").addEventListener("click", () => $("radio-dialog").close());
    $("radio-kecamatan").addEventListener("change", fillRadioTps);
    $("radio-search").addEventListener("input", fillRadioTps);
    $("radio-form").addEventListener("submit", sendRadio);
    $("assign-open").addEventListener("click", () => {
      assignError("");
      loadCandidates();
    });
    $("assign-nearest").addEventListener("click", () => sendAssign(null));
    $("candidates-body").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-assign]");
      if (b && !b.disabled) sendAssign(b.dataset.assign);
    });
    $("incident-message").addEventListener("click", () => {
      if (shownIncident && shownIncident.tps_id) openMessage({ kind: "tps_ids", ids: [shownIncident.tps_id] });
    });
    $("message-open").addEventListener("click", () => openMessage());
    $("message-to").addEventListener("change", renderMessageTo);
    $("message-cancel").addEventListener("click", () => $("message-dialog").close());
    $("message-form").addEventListener("submit", sendMessage);
    $("map").addEventListener("mousemove", onMapHover);
    $("map").addEventListener("mouseleave", () => { $("map-tip").hidden = true; });
    new ResizeObserver(() => invalidate("map")).observe($("map-wrap"));
    setInterval(watchdog, 1000);
    setInterval(refreshAges, 15000);
  }

  async function main() {
    try {
      const res = await fetch(new URL("static/i18n.json", location.href));
      LABELS = await res.json();
    } catch (_) {
      LABELS = {};
    }
    if (!LABELS[lang]) lang = "id";
    loadColors();
    wire();
    applyStaticLabels();
    renderView();
    watchdog();
    token = takeTokenFromUrl();
    if (!token) {
      setConn("connecting");
      showLogin();
      return;
    }
    renderRole();
    loadRole();
    connect();
  }

  main();
})();
