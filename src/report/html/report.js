// The report: data from the JSON element, drawn once, then redrawn for the
// time range the timeline's brush (or the From/To fields, or the URL's
// #from=…&to=…) selects.
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const R = data.report, T = data.timeline, utc = data.utc;
  const app = document.getElementById("app");
  app.replaceChildren();
  const when = (ms, s) => fmt.time(ms, utc, s);
  const bucketMs = T.bucket_s * 1000;
  const rowsEnd = T.start_ms + T.rows.length * bucketMs;
  const state = { from: null, to: null, zoom: false, metric: "status", bucket: "auto" };

  document.getElementById("sub").textContent =
    `${R.summary.first ? `${when(Date.parse(R.summary.first), true)} to ${when(Date.parse(R.summary.last), true)}` : "no requests"}` +
    ` · format ${R.summary.format} · made ${data.generated}${utc ? " · times in UTC" : " · times in your zone"}`;

  // ---- summary ----
  const cards = {
    requests: statCard("requests"), bytes: statCard("bandwidth"), mean: statCard("mean req/s"),
    peak: statCard("peak req/s", null, "the busiest bucket of the timeline's finest resolution"),
    clients: statCard("clients"), c4: statCard("4xx"), c5: statCard("5xx"),
    malformed: statCard("malformed lines", fmt.num(R.summary.malformed)),
  };
  const rangeNote = el("p", { class: "note" });
  const mixHolder = el("div");
  app.append(el("section", { class: "card wide", id: "summary" }, el("h2", {}, "Summary"), rangeNote,
    el("div", { class: "cards" }, Object.values(cards).map((c) => c.node)), mixHolder,
    legend(CLASSES.slice(1).concat(CLASSES[0]).map((c) => [c.name, c.color]))));

  // ---- timeline ----
  const chart = el("div", { class: "chart", id: "timeline-chart" });
  const fromIn = el("input", { class: "when", id: "from", placeholder: "from (YYYY-MM-DD HH:MM)", "aria-label": "from" });
  const toIn = el("input", { class: "when", id: "to", placeholder: "to", "aria-label": "to" });
  const apply = () => {
    const f = fmt.parseTime(fromIn.value, utc), t = fmt.parseTime(toIn.value, utc);
    if (Number.isNaN(f) || Number.isNaN(t)) { rangeNote.textContent = "unreadable time: use YYYY-MM-DD HH:MM"; return; }
    setRange(f, t === null ? null : t);
  };
  fromIn.addEventListener("change", apply);
  toIn.addEventListener("change", apply);
  const bucketSel = el("select", { "aria-label": "bucket", onchange: (e) => { state.bucket = e.target.value; drawChart(); } },
    el("option", { value: "auto" }, "auto"),
    [60, 300, 900, 3600, 21600, 86400, 604800].filter((s) => s >= T.bucket_s && s % T.bucket_s === 0)
      .map((s) => el("option", { value: s }, fmt.duration(s))));
  const metricSel = el("select", { "aria-label": "metric", onchange: (e) => { state.metric = e.target.value; drawChart(); } },
    el("option", { value: "status" }, "requests by status"), el("option", { value: "bytes" }, "bandwidth"));
  const zoomBtn = el("button", { onclick: () => { state.zoom = !state.zoom; drawChart(); } }, "zoom to range");
  app.append(el("section", { class: "card wide", id: "timeline" }, el("h2", {}, "Timeline"),
    el("div", { class: "controls" }, el("label", {}, "show ", metricSel), el("label", {}, "bucket ", bucketSel),
      el("label", {}, "from ", fromIn), el("label", {}, "to ", toIn),
      el("button", { id: "reset", onclick: () => setRange(null, null) }, "whole log"), zoomBtn),
    chart, el("p", { class: "note" }, "Drag across the chart to choose a time range; the summary, status mix, clients and decisions follow it.")));

  // ---- tables ----
  const num = (label, key, title) => ({ label, kind: "num", get: (r) => r[key], show: (r) => fmt.num(r[key]), title });
  const bytesCol = { label: "bytes", kind: "num", get: (r) => r.bytes, show: (r) => fmt.bytes(r.bytes) };
  const pctCol = { label: "%", kind: "num", get: (r) => r.percent, show: (r) => fmt.pct(r.percent) };
  const decisions = data.decisions.map((d, i) => Object.assign({ index: i }, d));
  const clients = R.ips.map((r, i) => Object.assign({}, r, data.clients[i]));
  const looks = (c) => c.static_hits === 0 && c.pages >= 10 ? ["pages only", "warn"] : c.static_hits > 0 ? ["loads assets", "ok"] : ["–", ""];
  const clientTable = makeTable("Clients", [
    { label: "client", kind: "text", cls: "key", get: (r) => r.ip },
    num("hits", "hits"), pctCol, bytesCol,
    num("req/min", "per_minute", "requests per minute between first and last seen"),
    num("pages", "pages"), num("static", "static_hits", "requests for static files (css, js, images…)"),
    { label: "looks like", kind: "text", get: (r) => looks(r)[0], show: (r) => el("span", { class: `tag ${looks(r)[1]}` }, looks(r)[0]),
      title: "browsers fetch assets beside their pages; most bots and scripts fetch pages only" },
    num("4xx", "status_4xx"), num("5xx", "status_5xx"),
    { label: "first seen", kind: "time", get: (r) => r.first_ms, show: (r) => when(r.first_ms, true) },
    { label: "last seen", kind: "time", get: (r) => r.last_ms, show: (r) => when(r.last_ms, true) },
    { label: "rule decisions", kind: "text", get: (r) => r.decisions.map((k) => decisionText(decisions[k])).join(", "),
      show: (r) => r.decisions.length === 0 ? "" : el("span", {}, r.decisions.slice(0, 4).map((k) =>
        el("span", { class: `tag ${decisions[k].action === "ban" ? "bad" : "warn"}`, title: decisions[k].reason }, decisionText(decisions[k]))),
        r.decisions.length > 4 ? ` +${r.decisions.length - 4}` : "") },
  ], clients, { wide: true, id: "clients",
    note: data.rules ? `Decisions are what ${data.rules.source} (${data.rules.rules} rules) would do in a replay of this log.` : "Run with --rules (or with a configuration) to see what the rules would decide for each client." });
  app.append(clientTable.node);

  function decisionText(d) {
    return d.action === "ban" ? `${d.rule}: ban ${fmt.duration(d.duration_s)}` : `${d.rule}: ${d.action}`;
  }
  let decisionTable = null;
  if (data.rules) {
    decisionTable = makeTable("Decisions", [
      { label: "time", kind: "time", get: (d) => d.at_ms, show: (d) => when(d.at_ms, true) },
      { label: "rule", kind: "text", cls: "key", get: (d) => d.rule },
      { label: "client", kind: "text", cls: "key", get: (d) => d.ip || d.cidr },
      { label: "action", kind: "text", get: (d) => d.action === "ban" ? `ban ${fmt.duration(d.duration_s)}${d.repeat ? ` (×${d.repeat + 1})` : ""}` : d.action },
      { label: "reason", kind: "text", get: (d) => d.reason },
      { label: "evidence", kind: "text", get: (d) => evidenceText(d.evidence) },
    ], decisions, { wide: true, id: "decisions", empty: "the rules decide nothing on this log",
      note: data.decisions_total > decisions.length ? `The first ${decisions.length} of ${fmt.num(data.decisions_total)} decisions.` : null });
    app.append(decisionTable.node);
  }
  function evidenceText(e) {
    if (!e) return "";
    const lines = e.first_line === e.last_line ? `line ${e.first_line}` : `lines ${e.first_line}–${e.last_line}`;
    const sample = (e.samples || [])[0];
    return `${e.count} in ${fmt.duration(e.window_s)} (threshold ${e.threshold}), ${lines}${sample ? `; e.g. ${sample}` : ""}`;
  }

  const keyed = (title, rows, key, id, note) => makeTable(title,
    [{ label: key.replace("_", " "), kind: "text", get: (r) => r[key] }, num("hits", "hits"), pctCol, bytesCol],
    rows, { id, note });
  const wholeLog = "Over the whole log.";
  const tables = [
    keyed("Pages", R.paths, "path", "paths", wholeLog),
    keyed("Static files", R.static_files, "path", "static"),
    keyed("Not found (404)", R.not_found, "path", "not_found"),
    keyed("User agents", R.user_agents, "user_agent", "user_agents"),
    makeTable("Statuses", [{ label: "status", kind: "text", get: (r) => String(r.status) }, num("hits", "hits"), pctCol, bytesCol], R.statuses, { id: "statuses" }),
    keyed("Methods", R.methods, "method", "methods"),
    R.hosts.length ? keyed("Hosts", R.hosts, "host", "hosts") : null,
    R.referrers.length ? keyed("Referrers", R.referrers, "referrer", "referrers") : null,
    R.levels.length ? keyed("Error levels", R.levels, "level", "levels") : null,
    R.error_messages.length ? keyed("Error messages", R.error_messages, "message", "messages") : null,
  ].filter(Boolean);
  for (const t of tables) app.append(t.node);
  if (R.warnings.length || R.malformed_samples.length) {
    app.append(el("section", { class: "card wide", id: "problems" }, el("h2", {}, "Warnings and malformed lines"),
      R.warnings.map((w) => el("p", {}, w)),
      R.malformed_samples.map((s) => el("pre", {}, JSON.stringify(s)))));
  }

  // ---- the range and what follows it ----
  function setRange(from, to) {
    state.from = from; state.to = to;
    if (from === null && to === null) state.zoom = false;
    fromIn.value = from === null ? "" : when(from, true);
    toIn.value = to === null ? "" : when(to, true);
    try {
      const hash = from === null && to === null ? "" : `#from=${from ?? ""}&to=${to ?? ""}`;
      history.replaceState(null, "", hash || location.pathname + location.search);
    } catch (e) { /* file:// pages in some browsers refuse: the range still applies */ }
    update();
  }
  function inRange(startMs, endMs) {
    return (state.from === null || endMs > state.from) && (state.to === null || startMs < state.to);
  }
  function update() {
    let hits = 0, bytes = 0, peak = 0, first = null, last = null;
    const cls = [0, 0, 0, 0, 0, 0];
    T.rows.forEach((r, k) => {
      const s = T.start_ms + k * bucketMs;
      if (!inRange(s, s + bucketMs)) return;
      hits += r[0]; bytes += r[1];
      for (let c = 0; c < 6; c++) cls[c] += r[2 + c];
      peak = Math.max(peak, r[0]);
      if (first === null) first = s;
      last = s + bucketMs;
    });
    const ranged = state.from !== null || state.to !== null;
    const spanS = ranged ? Math.max(1, ((last ?? 0) - (first ?? 0)) / 1000) : Math.max(1, R.summary.span_s);
    cards.requests.set(fmt.num(hits));
    cards.bytes.set(fmt.bytes(bytes));
    cards.mean.set(fmt.num(Math.round(hits / spanS * 100) / 100));
    cards.peak.set(fmt.num(ranged ? Math.round(peak / T.bucket_s * 100) / 100 : R.summary.peak_rps));
    const shown = clients.filter((c) => inRange(c.first_ms, c.last_ms + 1));
    cards.clients.set(ranged ? `${fmt.num(shown.length)} of top ${clients.length}` : fmt.num(R.summary.unique_ips));
    cards.c4.set(`${fmt.num(cls[4])} (${fmt.pct(hits ? cls[4] * 100 / hits : 0)})`);
    cards.c5.set(`${fmt.num(cls[5])} (${fmt.pct(hits ? cls[5] * 100 / hits : 0)})`);
    mixHolder.replaceChildren(mixBar(cls));
    rangeNote.textContent = ranged
      ? `From ${state.from === null ? "the start" : when(state.from, true)} to ${state.to === null ? "the end" : when(state.to, true)} (whole buckets of ${fmt.duration(T.bucket_s)}). The clients table shows the top clients seen in this range; the other tables are over the whole log.`
      : "The whole log.";
    clientTable.setVisible((c) => inRange(c.first_ms, c.last_ms + 1));
    if (decisionTable) decisionTable.setVisible((d) => inRange(d.at_ms, d.at_ms + 1));
    drawChart();
  }

  // ---- the chart ----
  function bucketFor(domainMs) {
    if (state.bucket !== "auto") return Number(state.bucket) * 1000;
    for (const s of [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800]) {
      if (s * 1000 >= bucketMs && s * 1000 % bucketMs === 0 && domainMs / (s * 1000) <= 150) return s * 1000;
    }
    return Math.max(bucketMs, Math.ceil(domainMs / 150 / bucketMs) * bucketMs);
  }
  let geometry = null;
  function drawChart() {
    zoomBtn.disabled = state.from === null && state.to === null;
    zoomBtn.textContent = state.zoom ? "show all" : "zoom to range";
    if (T.rows.length === 0) { chart.replaceChildren(el("p", { class: "note" }, "no requests")); return; }
    let lo = T.start_ms, hi = rowsEnd;
    if (state.zoom) { lo = state.from ?? lo; hi = state.to ?? hi; }
    const step = bucketFor(hi - lo);
    const first = Math.floor(lo / step) * step;
    const n = Math.max(1, Math.ceil((hi - first) / step));
    const bars = Array.from({ length: n }, () => [0, 0, 0, 0, 0, 0, 0, 0]);
    T.rows.forEach((r, k) => {
      const s = T.start_ms + k * bucketMs;
      if (s < lo || s >= hi) return;
      const b = Math.floor((s - first) / step);
      if (b >= 0 && b < n) for (let c = 0; c < 8; c++) bars[b][c] += r[c];
    });
    const W = Math.max(320, Math.round(chart.clientWidth || 1000)), H = 240, left = 56, right = 8, top = 10, bottom = 34;
    const pw = W - left - right, ph = H - top - bottom;
    const value = (b) => state.metric === "bytes" ? b[1] : b[0];
    const max = Math.max(1, ...bars.map(value));
    const bw = pw / n;
    const x = (ms) => left + (ms - first) / step * bw;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "timeline" });
    for (let g = 0; g <= 4; g++) {
      const y = top + ph - ph * g / 4;
      root.append(svg("line", { class: "grid", x1: left, x2: W - right, y1: y, y2: y }));
      const v = max * g / 4;
      root.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, state.metric === "bytes" ? fmt.bytes(Math.round(v)) : fmt.num(Math.round(v))));
    }
    const ticks = Math.min(n, Math.max(2, Math.floor(pw / 140)));
    for (let t = 0; t < ticks; t++) {
      const b = Math.round(t * (n - 1) / Math.max(1, ticks - 1));
      const ms = first + b * step;
      root.append(svg("text", { x: t === 0 ? left : t === ticks - 1 ? W - right : x(ms) + bw / 2, y: H - 12, "text-anchor": t === 0 ? "start" : t === ticks - 1 ? "end" : "middle" }, step >= 86400000 ? when(ms, true).slice(0, 10) : when(ms, true).slice(5)));
    }
    const order = [2, 3, 4, 5, 1, 0];
    bars.forEach((b, k) => {
      const s = first + k * step;
      const dim = !inRange(s, s + step);
      const g = svg("g", { opacity: dim ? 0.35 : 1 });
      const gap = bw > 4 ? 1 : 0;
      if (state.metric === "bytes") {
        const h = ph * b[1] / max;
        if (h > 0) g.append(svg("rect", { x: x(s) + gap / 2, y: top + ph - h, width: Math.max(0.5, bw - gap), height: h, style: "fill:var(--bw)" }));
      } else {
        let y = top + ph;
        for (const c of order) {
          const h = ph * b[2 + c] / max;
          if (h <= 0) continue;
          y -= h;
          g.append(svg("rect", { x: x(s) + gap / 2, y, width: Math.max(0.5, bw - gap), height: h, style: `fill:${CLASSES[c].color}` }));
        }
      }
      g.append(svg("title", {}, `${when(s, true)}: ${fmt.num(b[0])} requests, ${fmt.bytes(b[1])}, 4xx ${fmt.num(b[6])}, 5xx ${fmt.num(b[7])}`));
      root.append(g);
    });
    if (state.from !== null || state.to !== null) {
      const a = x(Math.max(first, state.from ?? first)), z = x(Math.min(first + n * step, state.to ?? first + n * step));
      if (z > a) root.append(svg("rect", { class: "sel", x: a, y: top, width: z - a, height: ph, "pointer-events": "none" }));
    }
    const brush = svg("rect", { class: "sel", x: 0, y: top, width: 0, height: ph, "pointer-events": "none", visibility: "hidden" });
    root.append(brush);
    chart.replaceChildren(root);
    geometry = { root, brush, first, step, bw, left, pw, n, W };
  }
  // The brush: drag across the chart to choose a range, snapped to buckets.
  let dragFrom = null;
  const toMs = (ev) => {
    const g = geometry, box = g.root.getBoundingClientRect();
    const px = (ev.clientX - box.left) * g.W / box.width;
    const b = Math.min(g.n, Math.max(0, (px - g.left) / g.bw));
    return { px: Math.min(g.left + g.pw, Math.max(g.left, px)), ms: g.first + b * g.step };
  };
  chart.addEventListener("pointerdown", (ev) => {
    if (!geometry) return;
    dragFrom = toMs(ev);
    chart.setPointerCapture(ev.pointerId);
  });
  chart.addEventListener("pointermove", (ev) => {
    if (dragFrom === null || !geometry) return;
    const at = toMs(ev);
    const a = Math.min(at.px, dragFrom.px), z = Math.max(at.px, dragFrom.px);
    Object.entries({ x: a, width: z - a, visibility: "visible" }).forEach(([k, v]) => geometry.brush.setAttribute(k, v));
  });
  chart.addEventListener("pointerup", (ev) => {
    if (dragFrom === null || !geometry) return;
    const at = toMs(ev), start = dragFrom;
    dragFrom = null;
    if (Math.abs(at.px - start.px) < 4) return;
    const g = geometry;
    const snap = (ms, up) => g.first + (up ? Math.ceil : Math.floor)((ms - g.first) / g.step) * g.step;
    setRange(snap(Math.min(at.ms, start.ms), false), snap(Math.max(at.ms, start.ms), true));
  });
  window.addEventListener("resize", () => drawChart());

  // A range in the URL: #from=<ms or time>&to=<ms or time>.
  const params = new URLSearchParams(location.hash.slice(1));
  const read = (k) => params.has(k) && params.get(k) !== "" ? fmt.parseTime(params.get(k), utc) : null;
  const f = read("from"), t = read("to");
  if ((f !== null || t !== null) && !Number.isNaN(f) && !Number.isNaN(t)) setRange(f, t);
  else update();
  document.body.setAttribute("data-ready", "1");
})();
