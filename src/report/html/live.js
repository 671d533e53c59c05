// The daemon's live view: /api/live once, then the same document every
// second from /events. Read-only.
(function () {
  const token = new URLSearchParams(location.search).get("token");
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  const app = document.getElementById("app");
  const sub = document.getElementById("sub");
  const health = document.getElementById("health");
  const when = (ms) => fmt.time(ms, false, true);

  const cards = {
    rate: statCard("requests/s now"), bytes: statCard("bandwidth/s"), m1: statCard("last minute"),
    m5: statCard("last 5 minutes"), m15: statCard("last 15 minutes"), clients: statCard("active clients"),
    bans: statCard("bans in force"), lines: statCard("lines read"),
  };
  const spark = el("div", { class: "chart", id: "spark" });
  const mix = el("div");
  const problems = el("div", { id: "problems" });
  app.append(el("section", { class: "card wide", id: "site" }, el("h2", {}, "Site"), problems,
    el("div", { class: "cards" }, Object.values(cards).map((c) => c.node)),
    el("p", { class: "note" }, "Requests per second over the last minute:"), spark,
    el("p", { class: "note" }, "Statuses over the last 5 minutes:"), mix,
    legend(CLASSES.slice(1).concat(CLASSES[0]).map((c) => [c.name, c.color]))));

  const n = (label, get) => ({ label, kind: "num", get, show: (r) => fmt.num(get(r)) });
  const clients = makeTable("Clients", [
    { label: "client", kind: "text", cls: "key", get: (r) => r.client },
    n("now r/s", (r) => r.per_second), n("1 min", (r) => r.last_1m), n("5 min", (r) => r.last_5m),
    n("15 min", (r) => r.last_15m), { label: "%", kind: "num", get: (r) => r.percent, show: (r) => fmt.pct(r.percent) },
    { label: "top path", kind: "text", get: (r) => r.top_path }, { label: "user agent", kind: "text", get: (r) => r.user_agent },
  ], [], { wide: true, id: "clients", empty: "no requests yet" });
  const decisions = makeTable("Decisions", [
    { label: "time", kind: "time", get: (d) => d.at_ms, show: (d) => when(d.at_ms) },
    { label: "rule", kind: "text", cls: "key", get: (d) => d.rule }, { label: "client", kind: "text", cls: "key", get: (d) => d.client },
    { label: "action", kind: "text", get: (d) => d.action === "ban" ? `ban ${fmt.duration(d.duration_s)}` : d.action },
    { label: "reason", kind: "text", get: (d) => d.reason },
  ], [], { id: "decisions", empty: "no decision since the start" });
  const bans = makeTable("Bans in force", [
    { label: "client", kind: "text", cls: "key", get: (b) => b.client }, { label: "rule", kind: "text", cls: "key", get: (b) => b.rule },
    { label: "since", kind: "time", get: (b) => b.started_ms, show: (b) => when(b.started_ms) },
    { label: "until", kind: "time", get: (b) => b.expires_ms, show: (b) => when(b.expires_ms) },
    { label: "reason", kind: "text", get: (b) => b.reason },
  ], [], { id: "bans", empty: "nobody is banned", note: "The newest hundred." });
  const guards = makeTable("Guards", [
    { label: "guard", kind: "text", cls: "key", get: (g) => g.name }, { label: "when", kind: "text", get: (g) => g.when },
    { label: "state", kind: "text", get: (g) => g.state, show: (g) => el("span", { class: `tag ${g.state === "firing" ? "bad" : g.state === "pending" ? "warn" : "ok"}` }, g.state) },
    { label: "values", kind: "text", get: (g) => (g.values || []).map(([k, v]) => `${k}=${v === null ? "?" : fmt.num(v)}`).join(" ") },
  ], [], { id: "guards", empty: "no guard configured" });
  const conns = makeTable("Connections", [
    { label: "client", kind: "text", cls: "key", get: (c) => c.client }, n("total", (c) => c.total),
    n("established", (c) => c.established), n("SYN_RECV", (c) => c.syn_recv),
  ], [], { id: "conns", empty: "no inbound connection" });
  const lan = makeTable("LAN: BitTorrent by local address", [
    { label: "address", kind: "text", cls: "key", get: (r) => r.address },
    n("BitTorrent packets", (r) => r.p2p_packets), n("tcp", (r) => r.bittorrent.packets), n("utp", (r) => r.utp.packets),
    n("dht", (r) => r.dht.packets), n("tracker", (r) => r.tracker.packets), n("peers", (r) => r.p2p_peers), n("all packets", (r) => r.all_packets),
  ], [], { id: "lan", empty: "no packet sample yet", note: "The last [packets] sample." });
  for (const t of [clients, decisions, bans, guards, conns]) app.append(t.node);

  function draw(d) {
    const s = d.site || {};
    cards.rate.set(fmt.num(s.per_second ?? 0));
    cards.bytes.set(fmt.bytes(Math.round(s.bytes_per_second ?? 0)));
    cards.m1.set(fmt.num(s.last_1m ?? 0));
    cards.m5.set(fmt.num(s.last_5m ?? 0));
    cards.m15.set(fmt.num(s.last_15m ?? 0));
    cards.clients.set(fmt.num(s.active_clients ?? 0));
    cards.bans.set(fmt.num(d.bans_active ?? 0));
    cards.lines.set(fmt.num(d.lines ?? 0));
    health.textContent = d.protecting ? "protecting" : "NOT PROTECTING";
    health.className = `badge ${d.protecting ? "ok" : "bad"}`;
    problems.replaceChildren(...(d.problems || []).map((p) => el("p", { class: "tag bad" }, p)));
    const st = s.status || [0, 0, 0, 0, 0, 0];
    // The snapshot counts 1xx..5xx then other; the bar wants other first.
    mix.replaceChildren(mixBar([st[5], st[0], st[1], st[2], st[3], st[4]]));
    drawSpark(s.history || []);
    clients.setRows(s.clients || []);
    decisions.setRows(d.decisions || []);
    bans.setRows(d.bans || []);
    guards.setRows(d.guards || []);
    conns.setRows((d.conns && d.conns.clients) || []);
    if (d.packets && !lan.node.isConnected) app.append(lan.node);
    if (d.packets) lan.setRows(d.packets.top || []);
    sub.textContent = `updated ${when(d.now_ms)} · webfence ${d.version}` + (d.lag_seconds > 5 ? ` · reading ${Math.round(d.lag_seconds)} s behind` : "");
    document.body.setAttribute("data-updated", String(d.now_ms));
  }
  function drawSpark(h) {
    const W = Math.max(300, Math.round(spark.clientWidth || 800)), H = 70;
    const max = Math.max(1, ...h);
    const bw = W / Math.max(1, h.length);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "requests per second" });
    h.forEach((v, k) => {
      const ht = (H - 14) * v / max;
      if (ht > 0) root.append(svg("rect", { x: k * bw + 0.5, y: H - ht, width: Math.max(0.5, bw - 1), height: ht, style: "fill:var(--accent)" }));
    });
    root.append(svg("text", { x: 2, y: 10 }, `${fmt.num(max)}/s`));
    spark.replaceChildren(root);
  }

  fetch(`/api/live${q}`).then((r) => r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))).then(draw)
    .catch((e) => { sub.textContent = `cannot read /api/live: ${e.message}`; });
  const events = new EventSource(`/events${q}`);
  events.onmessage = (m) => draw(JSON.parse(m.data));
  events.onerror = () => { sub.textContent = "connection lost: retrying…"; };
})();
