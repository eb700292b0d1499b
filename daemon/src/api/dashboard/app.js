// tollgate's dashboard: reads /dashboard/api/data and draws it. No library, no build step; every
// value from the ledger goes into the page as text (textContent), never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3358c4", "#e0803a", "#2f9e72", "#c2417a", "#7a5cc7", "#8c9a2b", "#2b8fb3", "#b35a2b", "#5f6b7d"];
const PAGES = ["spend", "cache", "redactions", "latency", "budgets", "experiments", "policy", "calls"];
const state = { data: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "color") e.style.background = v; // CSSOM: the page's CSP allows no style attribute
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const usd = (micros) => "$" + (micros / 1e6).toFixed(micros !== 0 && Math.abs(micros) < 10000 ? 6 : 2);
const num = (n) => Number(n).toLocaleString("en-US");
const ms = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
const day = (t) => new Date(t).toISOString().slice(0, 10);
const hour = (t) => new Date(t).toISOString().slice(11, 16);
const parseUsd = (s) => Math.round(parseFloat(s) * 1e6);

function query() {
  const p = document.getElementById("period").value, by = document.getElementById("by").value;
  return `period=${encodeURIComponent(p)}&by=${encodeURIComponent(by)}`;
}

function csvLink(table) {
  return el("a", { class: "csv", href: `api/csv/${table}?${query()}`, download: "" }, "Download CSV");
}

function section(title, table, ...body) {
  return el("section", { "data-section": title }, table ? csvLink(table) : null, el("h2", {}, title), ...body);
}

function tableOf(head, rows, opts) {
  const numeric = (opts && opts.numeric) || [];
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: numeric.includes(i) ? "n" : "" }, h)))),
    el("tbody", {}, rows.map((r) => {
      const tr = el("tr", r.attrs || {}, r.cells.map((c, i) => el("td", { class: numeric.includes(i) ? "n" : "" }, c)));
      if (r.onclick) tr.addEventListener("click", r.onclick);
      return tr;
    })));
}

function legend(keys) {
  return el("div", { class: "legend" }, keys.map((k, i) => el("span", {}, el("i", { color: COLORS[i % COLORS.length] }), k)));
}

// Stacked bars of a grid (buckets × keys), values shown through `fmt`.
function bars(grid, fmt, label) {
  const W = 900, H = 240, L = 70, B = 24, T = 10;
  const n = grid.buckets.length;
  const totals = grid.buckets.map((_, b) => grid.values.reduce((s, row) => s + row[b], 0));
  const max = Math.max(...totals, 0) || 1;
  const bw = (W - L - 10) / Math.max(n, 1);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, "data-chart": label });
  s.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - 10, y2: H - B }));
  for (const f of [0, 0.5, 1]) {
    const y = H - B - (H - B - T) * f;
    s.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, fmt(max * f)));
    s.append(svg("line", { class: "axis", x1: L, y1: y, x2: W - 10, y2: y, "stroke-opacity": 0.4 }));
  }
  const every = Math.ceil(n / 12);
  grid.buckets.forEach((t, b) => {
    let y = H - B;
    grid.values.forEach((row, k) => {
      const v = row[b];
      if (!v) return;
      const h = (H - B - T) * (v / max);
      y -= h;
      const r = svg("rect", { x: L + b * bw + 2, y, width: Math.max(bw - 4, 1), height: h, fill: COLORS[k % COLORS.length],
        "data-key": grid.keys[k], "data-bucket": t, "data-value": v });
      r.append(svg("title", {}, `${grid.keys[k]} ${n > 24 || state.data.period !== "day" ? day(t) : hour(t)}: ${fmt(v)}`));
      s.append(r);
    });
    if (b % every === 0) {
      s.append(svg("text", { x: L + b * bw + bw / 2, y: H - 6, "text-anchor": "middle" }, state.data.period === "day" ? hour(t) : day(t).slice(5)));
    }
  });
  return el("div", {}, s, legend(grid.keys));
}

// One horizontal bar per item ([label, value]), for comparing arms on one measure.
function hbars(title, items, fmt) {
  const W = 900, row = 26, L = 300, H = items.length * row + 8;
  const max = Math.max(...items.map(([, v]) => v), 0) || 1;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-chart": title });
  items.forEach(([label, v], i) => {
    const y = 4 + i * row;
    s.append(svg("text", { x: L - 8, y: y + 15, "text-anchor": "end" }, label));
    s.append(svg("rect", { x: L, y: y + 3, width: Math.max((W - L - 90) * (v / max), 1), height: row - 8, fill: COLORS[i % COLORS.length], "data-key": label, "data-value": v }));
    s.append(svg("text", { x: L + (W - L - 90) * (v / max) + 6, y: y + 15 }, fmt(v)));
  });
  return el("div", {}, el("h3", {}, title), s);
}

// Spend so far in the period: the running total, each money budget of the same period as a line,
// and the forecast to the period's end at the pace so far.
function runningSpend(d) {
  const W = 900, H = 220, L = 70, B = 24, T = 12;
  const sums = d.spend.buckets.map((_, b) => d.spend.values.reduce((s, row) => s + row[b], 0));
  let acc = 0;
  const running = sums.map((v) => (acc += v));
  const spent = acc;
  const elapsed = Math.max(d.now - d.since, 1), length = d.until - d.since;
  const forecast = Math.round(spent * (length / elapsed));
  const limits = d.budgets.filter((b) => b.period === d.period && b.limit_usd !== null && b.limit_usd !== undefined)
    .map((b) => ({ name: b.name, micros: parseUsd(b.limit_usd) }));
  const max = Math.max(forecast, ...limits.map((l) => l.micros), spent, 1);
  const x = (t) => L + (W - L - 10) * ((t - d.since) / length);
  const y = (v) => H - B - (H - B - T) * (v / max);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "spend so far", "data-chart": "running" });
  s.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - 10, y2: H - B }));
  s.append(svg("text", { x: L - 6, y: y(max) + 4, "text-anchor": "end" }, usd(max)));
  s.append(svg("text", { x: L - 6, y: H - B + 4, "text-anchor": "end" }, "$0"));
  const step = d.spend.buckets.length > 1 ? d.spend.buckets[1] - d.spend.buckets[0] : length;
  const points = [[x(d.since), y(0)]];
  d.spend.buckets.forEach((t, b) => { if (t <= d.now) points.push([x(Math.min(t + step, d.now)), y(running[b])]); });
  s.append(svg("polyline", { class: "cumulative", points: points.map((p) => p.join(",")).join(" "), "data-spent": spent }));
  s.append(svg("line", { class: "forecast", x1: x(d.now), y1: y(spent), x2: x(d.until), y2: y(forecast), "data-forecast": forecast }));
  for (const l of limits) {
    s.append(svg("line", { class: "budget", x1: L, y1: y(l.micros), x2: W - 10, y2: y(l.micros), "data-budget": l.name, "data-limit": l.micros }));
    s.append(svg("text", { x: W - 12, y: y(l.micros) - 4, "text-anchor": "end" }, `${l.name} ${usd(l.micros)}`));
  }
  return el("div", {}, s,
    el("p", { class: "muted" }, `Spent ${usd(spent)} so far; at this pace ${usd(forecast)} by the period's end`,
      limits.length ? ` (budgets: ${limits.map((l) => `${l.name} ${usd(l.micros)}`).join(", ")}).` : "."));
}

function stats(items) {
  return el("div", { class: "stats" }, items.map(([label, value, key]) => el("div", { class: "stat" }, el("b", { "data-stat": key }, value), el("span", {}, label))));
}

function usageTable(report, first) {
  return tableOf([first, "requests", "input", "output", "cached", "cost (USD)", "cache hits", "errors"],
    report.lines.map((l) => ({ attrs: { "data-key": l.key }, cells: [l.key, num(l.requests), num(l.input_tokens), num(l.output_tokens), num(l.cached_tokens), l.cost_usd, num(l.cache_hits), num(l.errors)] })),
    { numeric: [1, 2, 3, 4, 5, 6, 7] });
}

const render = {
  spend(d) {
    const t = d.usage.total;
    return [
      section("Totals", null, stats([
        ["requests", num(t.requests), "requests"], ["cost (USD)", "$" + t.cost_usd, "cost"],
        ["input tokens", num(t.input_tokens), "input_tokens"], ["output tokens", num(t.output_tokens), "output_tokens"],
      ])),
      section("Spend so far and budgets", null, runningSpend(d)),
      section(`Spend by ${d.by}`, null, bars({ ...d.spend }, usd, "spend")),
      section(`Tokens by ${d.by}`, null, bars(d.tokens, (v) => num(Math.round(v)), "tokens")),
      section(`Usage by ${d.by}`, "usage", usageTable(d.usage, d.by)),
    ];
  },
  cache(d) {
    const c = d.cache;
    return [section("Cache", null, stats([
      ["hit rate", (c.hit_rate * 100).toFixed(1) + "%", "hit_rate"], ["answered from the cache", num(c.hits), "hits"],
      ["requests", num(c.requests), "cache_requests"], ["saved", "$" + c.saved_usd, "saved"],
    ]), c.unpriced_hits ? el("p", { class: "muted" }, `${c.unpriced_hits} hits of models without a price are not counted in what was saved.`) : null)];
  },
  redactions(d) {
    const total = d.redactions.values.reduce((s, row) => s + row.reduce((a, b) => a + b, 0), 0);
    return [section("Values masked, by kind (counts only)", "redactions",
      total ? bars(d.redactions, (v) => num(Math.round(v)), "redactions") : el("p", { class: "muted" }, "Nothing was masked in this period."),
      tableOf(["kind", "masked"], d.redactions.keys.map((k, i) => ({ attrs: { "data-kind": k }, cells: [k, num(d.redactions.values[i].reduce((a, b) => a + b, 0))] })), { numeric: [1] }))];
  },
  latency(d) {
    return [section("Latency per target (answered calls) and circuits", "targets",
      tableOf(["target", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "circuit", "last error"],
        d.targets.map((t) => ({ attrs: { "data-target": t.target }, cells: [t.target, num(t.requests), num(t.errors), ms(t.latency_ms_p50), ms(t.latency_ms_p95), ms(t.latency_ms_p99), el("span", { class: "badge " + t.circuit }, t.circuit.replace("-", " ")), t.last_error || ""] })),
        { numeric: [1, 2, 3, 4, 5] }))];
  },
  budgets(d) {
    return [section("Budgets", "budgets", d.budgets.length ? tableOf(["budget", "scope", "period", "spent", "limit", "tokens", "token limit", "resets", "action"],
      d.budgets.map((b) => ({ attrs: { "data-budget": b.name }, cells: [b.name, b.scope + (b.key ? ` ${b.key}` : ""), b.period, "$" + b.spent_usd, b.limit_usd ? "$" + b.limit_usd : "–", num(b.spent_tokens), b.limit_tokens ? num(b.limit_tokens) : "–", b.resets_at.replace("T", " ").slice(0, 16), b.action] })),
      { numeric: [3, 4, 5, 6] }) : el("p", { class: "muted" }, "No budget is set (the policy or the config's [[budgets]])."))];
  },
  experiments(d) {
    if (!d.arms.lines.length) return [section("Experiments", null, el("p", { class: "muted" }, "No request took part in an experiment in this period. A route's `split` or a prompt's versions start one."))];
    const lines = d.arms.lines;
    const perRequest = (l) => (l.requests ? parseUsd(l.cost_usd) / l.requests : 0);
    return [section("Arms compared", "arms",
      tableOf(["experiment: arm", "requests", "cost (USD)", "per request", "tokens", "errors", "error rate", "cache hits", "p50 ms", "p95 ms", "findings/chunk", "dismissed"],
        lines.map((l) => ({ attrs: { "data-arm": l.key }, cells: [l.key, num(l.requests), l.cost_usd, usd(perRequest(l)), num(l.input_tokens + l.output_tokens), num(l.errors), (l.requests ? (100 * l.errors / l.requests).toFixed(1) : "0.0") + "%", num(l.cache_hits), ms(l.latency_ms_p50), ms(l.latency_ms_p95),
          l.review && l.review.chunks ? (l.review.findings / l.review.chunks).toFixed(2) : "–", l.review ? num(l.review.dismissed) : "–"] })),
        { numeric: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] }),
      hbars("cost per request", lines.map((l) => [l.key, perRequest(l)]), usd),
      hbars("error rate", lines.map((l) => [l.key, l.requests ? l.errors / l.requests : 0]), (v) => (100 * v).toFixed(1) + "%"),
      hbars("p95 latency", lines.map((l) => [l.key, l.latency_ms_p95 || 0]), (v) => ms(v) + " ms"))];
  },
  policy(d) {
    const p = d.policy || {};
    const rows = Object.entries(p).filter(([, v]) => v !== null && typeof v !== "object");
    return [section("Policy in force", null, el("dl", {}, rows.flatMap(([k, v]) => [el("dt", {}, k.replace(/_/g, " ")), el("dd", { "data-policy": k }, String(v) || "none")]))),
      ...Object.entries(p).filter(([, v]) => v && typeof v === "object" && (!Array.isArray(v) || v.length)).map(([k, v]) => section(k.replace(/_/g, " "), null, el("pre", {}, JSON.stringify(v, null, 2))))];
  },
  calls(d) {
    const detail = el("div", { id: "call" });
    const show = async (id) => {
      detail.replaceChildren(el("p", { class: "muted" }, "Loading…"));
      const r = await fetch(`api/call/${encodeURIComponent(id)}`, { credentials: "same-origin" });
      const c = await r.json();
      detail.replaceChildren(section(`Call ${id}`, null,
        el("h3", {}, "Ledger row"), el("pre", {}, JSON.stringify({ ...c, request: undefined, response: undefined }, null, 2)),
        c.request ? [el("h3", {}, "Prompt as sent (redacted)"), el("pre", {}, JSON.stringify(c.request, null, 2)), el("h3", {}, "Answer"), el("pre", {}, JSON.stringify(c.response, null, 2))]
          : el("p", { class: "muted" }, c.unreadable ? "The audit log kept this call sealed with a key no longer held." : "The audit log was off for this call: only its ledger row is kept.")));
    };
    return [section("Recent calls", "calls", tableOf(["time", "task", "tool", "target", "tokens in/out", "cost", "ms", "outcome", "arm"],
      d.calls.map((c) => ({ attrs: { class: "call", "data-request": c.request_id }, onclick: () => show(c.request_id),
        cells: [new Date(c.ts_ms).toISOString().replace("T", " ").slice(0, 19), c.task, c.caller, `${c.provider || "-"}/${c.model || "-"}`, `${num(c.input_tokens)} / ${num(c.output_tokens)}`, c.cost_micros === null ? "?" : usd(c.cost_micros), ms(c.latency_ms), el("span", { class: c.outcome === "ok" ? "" : "bad" }, c.outcome + (c.cache_hit ? " (cache)" : "")), c.arm || ""] })),
      { numeric: [4, 5, 6] })), detail];
  },
};

function page() {
  const name = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "spend";
  for (const a of document.querySelectorAll("#pages a")) a.classList.toggle("current", a.getAttribute("href") === "#" + name);
  return name;
}

function draw() {
  const main = document.getElementById("main");
  const name = page();
  main.replaceChildren(...render[name](state.data));
  main.dataset.page = name;
  main.dataset.ready = `${state.data.period}/${state.data.by}/${name}`;
}

async function load() {
  const r = await fetch(`api/data?${query()}`, { credentials: "same-origin" });
  if (!r.ok) {
    document.getElementById("main").replaceChildren(el("section", {}, el("h2", {}, "The dashboard could not be read"),
      el("p", {}, r.status === 401 ? "The session ended: run `tollgate dashboard` for a new link." : `The daemon answered ${r.status}.`)));
    return;
  }
  state.data = await r.json();
  draw();
}

// The figures move while the page is open: read them again every 30 s while it is in view, unless
// a call is open (a redraw would close it).
setInterval(() => {
  if (!document.hidden && !document.querySelector("#call section")) load();
}, 30000);
document.getElementById("period").addEventListener("change", load);
document.getElementById("by").addEventListener("change", load);
window.addEventListener("hashchange", () => state.data && draw());
load();
