"use strict";
// Shared by the report and the live page. Every piece of log text reaches
// the page as a DOM text node (el() never parses HTML), so a User-Agent
// holding markup shows as the characters it is.

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmt = {
  num(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 });
  },
  bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = Number(n) || 0, u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
  },
  pct(n) { return `${(Number(n) || 0).toFixed(2)} %`; },
  pad(n) { return String(n).padStart(2, "0"); },
  // utc: the log's times as UTC (the default); else the viewer's zone.
  time(ms, utc, seconds) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
    const d = new Date(ms);
    const p = fmt.pad;
    const [y, mo, da, h, mi, s] = utc
      ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
      : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
    return `${y}-${p(mo)}-${p(da)} ${p(h)}:${p(mi)}${seconds ? ":" + p(s) : ""}`;
  },
  // "2024-05-01 13:00[:ss]", ISO with T or a zone, or epoch ms.
  parseTime(text, utc) {
    const t = String(text).trim();
    if (t === "") return null;
    if (/^\d{11,}$/.test(t)) return Number(t);
    const m = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d))?)?$/.exec(t);
    if (m) {
      const parts = m.slice(1).map((x) => Number(x || 0));
      return utc
        ? Date.UTC(parts[0], parts[1] - 1, parts[2], parts[3], parts[4], parts[5])
        : new Date(parts[0], parts[1] - 1, parts[2], parts[3], parts[4], parts[5]).getTime();
    }
    const ms = Date.parse(t);
    return Number.isFinite(ms) ? ms : NaN;
  },
  duration(s) {
    if (s === null || s === undefined) return "–";
    if (s % 86400 === 0 && s >= 86400) return `${s / 86400}d`;
    if (s % 3600 === 0 && s >= 3600) return `${s / 3600}h`;
    if (s % 60 === 0 && s >= 60) return `${s / 60}m`;
    return `${s}s`;
  },
};

// A table that sorts by any column (click its header) and filters rows by
// text. columns: [{label, get(row) -> value, kind: "num"|"text"|"time",
// show(row) -> node or text (optional), title}]. rows: plain objects.
function makeTable(title, columns, rows, opts) {
  opts = opts || {};
  let sortCol = -1, sortDir = 1, filterText = "", visible = () => true;
  let all = rows;
  const tbody = el("tbody");
  const count = el("span", { class: "count" });
  const heads = columns.map((c, i) =>
    el("th", { class: c.kind === "num" ? "num" : null, title: c.title || null, scope: "col",
      tabindex: 0, onclick: () => sortBy(i), onkeydown: (e) => { if (e.key === "Enter") sortBy(i); } }, c.label));
  const filter = el("input", { type: "search", placeholder: "filter…", "aria-label": `filter ${title}`,
    oninput: (e) => { filterText = e.target.value.toLowerCase(); draw(); } });
  const table = el("table", {}, el("thead", {}, el("tr", {}, heads)), tbody);
  const node = el("section", { class: `card ${opts.wide ? "wide" : ""}`, "data-table": opts.id || title },
    el("div", { class: "tablehead" }, el("h2", {}, title), el("span", {}, count, " ", filter)),
    opts.note ? el("p", { class: "note" }, opts.note) : null,
    el("div", { class: "tablewrap" }, table));

  function sortBy(i) {
    if (sortCol === i) sortDir = -sortDir;
    else { sortCol = i; sortDir = columns[i].kind === "text" ? 1 : -1; }
    heads.forEach((h, k) => h.setAttribute("aria-sort", k === sortCol ? (sortDir > 0 ? "ascending" : "descending") : "none"));
    draw();
  }
  function text(row) {
    return columns.filter((c) => c.kind === "text").map((c) => String(c.get(row) ?? "")).join("\u0000").toLowerCase();
  }
  function draw() {
    let shown = all.filter((r) => visible(r) && (filterText === "" || text(r).includes(filterText)));
    if (sortCol >= 0) {
      const get = columns[sortCol].get;
      shown = shown.slice().sort((a, b) => {
        const x = get(a), y = get(b);
        if (typeof x === "number" && typeof y === "number") return (x - y) * sortDir;
        return String(x ?? "").localeCompare(String(y ?? "")) * sortDir;
      });
    }
    tbody.replaceChildren(...shown.map((r) => el("tr", {},
      columns.map((c) => el("td", { class: c.cls || c.kind || "text" }, c.show ? c.show(r) : c.get(r))))));
    const rows = (k) => `${k} row${k === 1 ? "" : "s"}`;
    count.textContent = shown.length === all.length ? rows(all.length) : `${shown.length} of ${rows(all.length)}`;
    if (all.length === 0) tbody.replaceChildren(el("tr", {}, el("td", { colspan: columns.length, class: "note" }, opts.empty || "nothing")));
  }
  draw();
  return {
    node,
    setRows(r) { all = r; draw(); },
    setVisible(f) { visible = f; draw(); },
  };
}

function statCard(label, value, title) {
  const v = el("div", { class: "v" }, value);
  const node = el("div", { class: "stat", title: title || null }, v, el("div", { class: "k" }, label));
  return { node, set(x) { v.textContent = x; } };
}

// Status classes in the order the data holds them: other, 1xx..5xx.
const CLASSES = [
  { name: "other", color: "var(--c0)" }, { name: "1xx", color: "var(--c1)" },
  { name: "2xx", color: "var(--c2)" }, { name: "3xx", color: "var(--c3)" },
  { name: "4xx", color: "var(--c4)" }, { name: "5xx", color: "var(--c5)" },
];

// counts: other, 1xx..5xx. Drawn 2xx, 3xx, 4xx, 5xx, then 1xx and other,
// so the bar reads from good to bad.
function mixBar(counts) {
  const total = counts.reduce((a, b) => a + b, 0) || 1;
  return el("div", { class: "mix", role: "img", "aria-label": "status mix" },
    [2, 3, 4, 5, 1, 0].map((k) => counts[k] > 0 ? el("span", { style: `width:${(counts[k] * 100 / total).toFixed(3)}%;background:${CLASSES[k].color}`,
      title: `${CLASSES[k].name}: ${fmt.num(counts[k])}` }) : null));
}

function legend(items) {
  return el("div", { class: "legend" }, items.map(([name, color]) => el("span", {}, el("i", { style: `background:${color}` }), name)));
}
