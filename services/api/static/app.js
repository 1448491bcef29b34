/* Handshake live dashboard: REST for the initial state, one EventSource for live updates. */
"use strict";

const LIMIT = 30;
const KIND_COLORS = {
  athletic: "#60a5fa", cultural: "#f472b6", scientific: "#34d399", educational: "#fbbf24",
  professional: "#a78bfa", humanitarian: "#f87171", civic: "#22d3ee",
};
const fmt = new Intl.NumberFormat("en");
const $ = (id) => document.getElementById(id);

const state = {
  filters: { country: "", kind: "" },
  rows: new Map(),       // pair -> item (PairItem shape) of the current ranking
  total: 0,
  names: new Map(),      // code -> name
  selected: null,        // pair key of the open detail
  source: null,
  dirty: false,
  summaryDue: false,
};

/* ---------- access token (only when the API asks for one) ---------- */

function token() { return sessionStorage.getItem("handshake-token") || ""; }

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    const input = $("token-input");
    const form = $("token-form");
    form.onsubmit = () => {
      sessionStorage.setItem("handshake-token", input.value.trim());
      resolve();
    };
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path) {
  for (;;) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const response = await fetch(path, { headers });
    if (response.status === 401) { await askToken(); continue; }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, body.detail || response.statusText);
    return body;
  }
}

/* ---------- helpers ---------- */

function nameOf(code) { return state.names.get(code) || code; }

function rememberNames(countries) {
  for (const c of countries) {
    if (c.name && !state.names.has(c.code)) {
      state.names.set(c.code, c.name);
      const option = document.createElement("option");
      option.value = c.code;
      option.label = c.name;
      $("country-codes").appendChild(option);
    }
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function kindsText(byKind) {
  return Object.entries(byKind).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(" · ");
}

function rankValue(stats) {
  return state.filters.kind ? (stats.by_kind[state.filters.kind] || 0) : stats.active_events;
}

function matchesFilters(stats) {
  // the stream is already filtered by the server; a pair can still lose its last event of a kind
  const f = state.filters;
  return !(f.kind && !(stats.by_kind[f.kind] > 0));
}

/* ---------- live indicator ---------- */

function setLive(kind, text) {
  $("live").dataset.state = kind;
  $("live-text").textContent = text;
}

function touched(when) {
  $("last-update").textContent = "updated " + new Date(when || Date.now()).toLocaleTimeString();
}

/* ---------- summary: totals and monthly chart ---------- */

let monthsChart = null;
let graphChart = null;

async function loadSummary() {
  const s = await api("/v1/summary");
  $("total-pairs").textContent = fmt.format(s.pairs);
  $("total-events").textContent = fmt.format(s.active_events);
  $("total-participants").textContent = fmt.format(s.participants);
  $("total-countries").textContent = fmt.format(s.countries);
  renderMonths(s.by_month);
  if (s.updated_at) touched(s.updated_at);
}

function renderMonths(byMonth) {
  const months = Object.keys(byMonth).sort();
  const values = months.map((m) => byMonth[m]);
  if (monthsChart) {
    monthsChart.setOption({
      xAxis: { data: months },
      series: [{ data: values }],
    });
  }
  const box = $("months");
  if (!months.length) {
    box.setAttribute("aria-label", "Events by month: no data yet");
  } else {
    let peak = 0;
    values.forEach((v, i) => { if (v > values[peak]) peak = i; });
    box.setAttribute("aria-label",
      `Events by month, ${months[0]} to ${months[months.length - 1]}: peak ${months[peak]} with ${fmt.format(values[peak])} pair-events. The table below lists every month.`);
  }
  const body = $("months-table").tBodies[0];
  body.replaceChildren(...months.map((m, i) => el("tr", {}, el("th", { scope: "row", text: m }), el("td", { text: String(values[i]) }))));
}

/* ---------- ranked pairs ---------- */

function query() {
  const p = new URLSearchParams({ limit: String(LIMIT) });
  if (state.filters.country) p.set("country", state.filters.country);
  if (state.filters.kind) p.set("kind", state.filters.kind);
  return p;
}

async function loadPairs() {
  const page = await api("/v1/pairs?" + query());
  state.rows = new Map(page.items.map((item) => [item.pair, item]));
  state.total = page.total;
  for (const item of page.items) rememberNames(item.countries);
  canonicalCountry(page.items);
  renderTable(new Set());
  renderGraph();
}

// the API accepts FRA or fra for FR: learn the canonical code from the answer (shared by every row)
function canonicalCountry(items) {
  if (!state.filters.country || !items.length) return;
  let common = items[0].countries.map((c) => c.code);
  for (const item of items) common = common.filter((code) => item.countries.some((c) => c.code === code));
  if (common.length === 1) state.filters.country = common[0];
}

function sortedRows() {
  return [...state.rows.values()].sort((a, b) => b.value - a.value || (a.pair < b.pair ? -1 : 1)).slice(0, LIMIT);
}

function renderTable(changed) {
  const f = state.filters;
  const parts = [];
  if (f.country) parts.push(`with ${nameOf(f.country)} (${f.country})`);
  if (f.kind) parts.push(`with ${f.kind} events`);
  $("pairs-caption").textContent =
    `Top ${Math.min(LIMIT, state.rows.size)} of ${fmt.format(state.total)} country pairs${parts.length ? " " + parts.join(" ") : ""}, by ${f.kind ? f.kind + " " : "active "}events`;
  $("value-col").textContent = f.kind ? `${f.kind} events` : "Events";
  const rows = sortedRows();
  const body = $("pairs-body");
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "6", text: "No pairs match these filters yet." })));
    return;
  }
  body.replaceChildren(...rows.map((item, i) => row(item, i + 1, changed.has(item.pair))));
}

function row(item, rank, flash) {
  const [a, b] = item.countries;
  const label = `${a.name} – ${b.name}`;
  const tr = el("tr", { tabindex: "0", "data-pair": item.pair, "aria-label": `${label}: ${item.value} events, ${item.participants} participants. Press Enter for details.` });
  if (flash) tr.classList.add("flash");
  if (state.selected === item.pair) tr.setAttribute("aria-current", "true");
  const pairCell = el("td", { title: `${label} (${item.pair})` }, label, el("span", { class: "code", text: item.pair }));
  const bar = el("span", { class: "kinds", "aria-hidden": "true" });
  const total = Object.values(item.by_kind).reduce((x, y) => x + y, 0) || 1;
  for (const [k, n] of Object.entries(item.by_kind)) {
    const seg = el("span");
    seg.style.width = `${(100 * n) / total}%`;
    seg.style.background = KIND_COLORS[k] || "#888";
    bar.append(seg);
  }
  tr.append(
    el("td", { class: "num", text: String(rank) }),
    pairCell,
    el("td", { class: "num", text: fmt.format(item.value) }),
    el("td", { class: "num", text: fmt.format(item.participants) }),
    el("td", { title: kindsText(item.by_kind) }, el("div", { class: "kinds-cell" }, bar, el("span", { class: "kinds-text", text: kindsText(item.by_kind) }))),
    el("td", { text: item.last_date || "–" }),
  );
  return tr;
}

function onRowActivate(event) {
  const tr = event.target.closest("tr[data-pair]");
  if (!tr) return;
  if (event.type === "keydown" && event.key !== "Enter" && event.key !== " ") return;
  if (event.type === "keydown") event.preventDefault();
  openDetail(tr.dataset.pair);
}

/* ---------- circular graph ---------- */

function renderGraph() {
  const rows = sortedRows();
  const activity = new Map();
  for (const r of rows) for (const c of r.countries) activity.set(c.code, (activity.get(c.code) || 0) + r.value);
  const maxNode = Math.max(1, ...activity.values());
  const maxEdge = Math.max(1, ...rows.map((r) => r.value));
  const nodes = [...activity.entries()].sort((x, y) => y[1] - x[1]).map(([code, n]) => ({
    name: code,
    value: n,
    symbolSize: 14 + 34 * Math.sqrt(n / maxNode),
    label: { show: true, formatter: code },
    tooltip: { formatter: `${nameOf(code)} (${code}): ${fmt.format(n)} pair-events shown` },
  }));
  const links = rows.map((r) => ({
    source: r.countries[0].code,
    target: r.countries[1].code,
    value: r.value,
    lineStyle: { width: 1 + 9 * (r.value / maxEdge), opacity: 0.35 + 0.5 * (r.value / maxEdge) },
    tooltip: { formatter: `${r.countries[0].name} – ${r.countries[1].name}: ${fmt.format(r.value)}` },
  }));
  if (graphChart) graphChart.setOption({ series: [{ data: nodes, links }] });
  const top = rows.slice(0, 3).map((r) => `${r.countries[0].name}–${r.countries[1].name} ${r.value}`).join("; ");
  $("graph").setAttribute("aria-label",
    rows.length
      ? `Circular graph of the top ${rows.length} pairs among ${nodes.length} countries; strongest: ${top}. The same pairs are in the ranked table.`
      : "Circular graph of the top pairs: no data yet");
  $("graph-desc").textContent = rows.map((r) => `${r.pair}: ${r.value}`).join(", ");
}

function setupCharts() {
  if (!window.echarts) return;
  const text = { color: "#e8eef7" };
  graphChart = echarts.init($("graph"), null, { renderer: "canvas" });
  graphChart.setOption({
    animationDurationUpdate: 400,
    tooltip: {},
    series: [{
      type: "graph",
      layout: "circular",
      top: 30, bottom: 30, left: 60, right: 60,
      circular: { rotateLabel: false },
      roam: false,
      label: { position: "right", color: "#e8eef7", fontSize: 14, fontWeight: "bold" },
      itemStyle: { color: "#6cb6ff", borderColor: "#0b1220", borderWidth: 1 },
      lineStyle: { color: "source", curveness: 0.3 },
      emphasis: { focus: "adjacency", lineStyle: { width: 10 } },
      data: [],
      links: [],
    }],
  });
  monthsChart = echarts.init($("months"), null, { renderer: "canvas" });
  monthsChart.setOption({
    grid: { left: 50, right: 16, top: 16, bottom: 40 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: [], axisLabel: { ...text, fontSize: 13 }, axisLine: { lineStyle: { color: "#4a5d80" } } },
    yAxis: { type: "value", axisLabel: { ...text, fontSize: 13 }, splitLine: { lineStyle: { color: "#23314d" } } },
    series: [{ type: "bar", data: [], itemStyle: { color: "#6cb6ff", borderRadius: [3, 3, 0, 0] } }],
  });
  window.addEventListener("resize", () => { graphChart.resize(); monthsChart.resize(); });
}

/* ---------- pair detail ---------- */

async function openDetail(pair) {
  state.selected = pair;
  for (const tr of $("pairs-body").querySelectorAll("tr[data-pair]")) {
    if (tr.dataset.pair === pair) tr.setAttribute("aria-current", "true");
    else tr.removeAttribute("aria-current");
  }
  const [a, b] = pair.split("-");
  try {
    renderDetail(await api(`/v1/pairs/${a}/${b}`));
  } catch (err) {
    $("detail-body").replaceChildren(el("p", { class: "error", text: err.message }));
  }
}

function bars(counts, label, keepOrder = false) {
  const entries = Object.entries(counts);
  if (!keepOrder) entries.sort((x, y) => y[1] - x[1]);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  const list = el("ul", { class: "bars", "aria-label": label });
  for (const [k, n] of entries) {
    const bar = el("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${(100 * n) / max}%`;
    if (KIND_COLORS[k]) bar.style.background = KIND_COLORS[k];
    list.append(el("li", {}, el("span", { text: k }), bar, el("span", { class: "n", text: String(n) })));
  }
  if (!entries.length) list.append(el("li", { text: "none" }));
  return list;
}

function directionLabel(key, names) {
  if (key === "third_country") return "met in a third country";
  const [from, to] = key.split(">");
  return `${from} visited ${to}`;
}

function renderDetail(d) {
  const names = d.names || {};
  const [a, b] = d.countries;
  $("detail-title").textContent = `${names[a] || a} – ${names[b] || b}`;
  const facts = el("dl", {});
  const add = (k, v, cls) => facts.append(el("dt", { text: k }), el("dd", cls ? { class: cls, text: v } : { text: v }));
  add("Pair", d.pair);
  add("Active events", fmt.format(d.active_events));
  add("Participants", fmt.format(d.participants));
  add("Cancelled", fmt.format(d.cancelled));
  add("First event", d.first_date || "–");
  add("Last event", d.last_date || "–");
  add("Checksum", d.checksum, "checksum");
  add("Version", String(d.version));
  add("Updated", new Date(d.updated_at).toLocaleString());
  const directions = {};
  for (const [k, n] of Object.entries(d.by_direction)) directions[directionLabel(k, names)] = n;
  const months = {};
  for (const m of Object.keys(d.by_month).sort().slice(-12)) months[m] = d.by_month[m];
  $("detail-body").replaceChildren(
    facts,
    el("h3", { text: "By kind" }), bars(d.by_kind, "events by kind"),
    el("h3", { text: "By direction" }), bars(directions, "events by direction"),
    el("h3", { text: "By status" }), bars(d.by_status, "events by status"),
    el("h3", { text: "By month (latest 12)" }), bars(months, "events by month", true),
  );
}

/* ---------- live stream ---------- */

function connect() {
  if (state.source) state.source.close();
  const p = new URLSearchParams();
  if (state.filters.country) p.set("country", state.filters.country);
  if (state.filters.kind) p.set("kind", state.filters.kind);
  if (token()) p.set("access_token", token());
  const source = new EventSource("/v1/stream?" + p);
  state.source = source;
  setLive("connecting", "Connecting…");
  source.onopen = () => setLive("live", "Live");
  source.addEventListener("hello", () => setLive("live", "Live"));
  source.addEventListener("reset", () => { refreshAll(); });
  source.addEventListener("pair", (event) => {
    setLive("live", "Live");
    onSnapshot(JSON.parse(event.data));
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setLive("offline", "Offline – retrying");
      setTimeout(() => { if (state.source === source) connect(); }, 3000);
    } else {
      setLive("connecting", "Reconnecting…");
    }
  };
}

const changedPairs = new Set();

function onSnapshot(stats) {
  const known = state.rows.has(stats.pair);
  if (matchesFilters(stats)) {
    const countries = stats.countries.map((c) => ({ code: c, name: nameOf(c) }));
    state.rows.set(stats.pair, {
      pair: stats.pair, countries, value: rankValue(stats), active_events: stats.active_events,
      participants: stats.participants, cancelled: stats.cancelled, by_kind: stats.by_kind,
      first_date: stats.first_date, last_date: stats.last_date, version: stats.version, updated_at: stats.updated_at,
    });
    if (!known) state.total += 1;
  } else if (known) {
    state.rows.delete(stats.pair);
    state.total = Math.max(0, state.total - 1);
  }
  changedPairs.add(stats.pair);
  if (state.selected === stats.pair) {
    openDetail(stats.pair);
  }
  state.dirty = true;
  state.summaryDue = true;
  touched(stats.updated_at);
}

// re-render at most twice a second; totals refetched at most every 2 s
setInterval(() => {
  if (!state.dirty) return;
  state.dirty = false;
  // keep the map bounded to what is shown (plus nothing else): rows below the cut drop out
  const keep = new Set(sortedRows().map((r) => r.pair));
  for (const pair of [...state.rows.keys()]) if (!keep.has(pair)) state.rows.delete(pair);
  renderTable(new Set(changedPairs));
  changedPairs.clear();
  renderGraph();
}, 500);

// totals, the monthly chart and the ranking (pairs below the cut) are reconciled through REST at most every 2 s
setInterval(() => {
  if (!state.summaryDue) return;
  state.summaryDue = false;
  loadSummary().catch(() => {});
  reconcilePairs().catch(() => {});
}, 2000);

async function reconcilePairs() {
  const page = await api("/v1/pairs?" + query());
  const changed = new Set();
  for (const item of page.items) {
    const old = state.rows.get(item.pair);
    if (!old || old.version < item.version) changed.add(item.pair);
  }
  state.rows = new Map(page.items.map((item) => [item.pair, item]));
  state.total = page.total;
  for (const item of page.items) rememberNames(item.countries);
  renderTable(changed);
  renderGraph();
}

/* ---------- filters ---------- */

async function applyFilters(event) {
  if (event) event.preventDefault();
  const country = $("f-country").value.trim().toUpperCase();
  const kind = $("f-kind").value;
  const previous = { ...state.filters };
  state.filters = { country, kind };
  $("filter-error").hidden = true;
  try {
    await loadPairs();
    connect();
  } catch (err) {
    state.filters = previous;
    $("filter-error").textContent = err.message;
    $("filter-error").hidden = false;
  }
}

async function refreshAll() {
  try {
    await Promise.all([loadSummary(), loadPairs()]);
  } catch (err) {
    setLive("offline", "API unavailable");
  }
}

function init() {
  setupCharts();
  $("filters").addEventListener("submit", applyFilters);
  $("f-kind").addEventListener("change", applyFilters);
  $("f-clear").addEventListener("click", () => {
    $("f-country").value = "";
    $("f-kind").value = "";
    applyFilters();
  });
  $("pairs-body").addEventListener("click", onRowActivate);
  $("pairs-body").addEventListener("keydown", onRowActivate);
  refreshAll().then(connect);
}

document.addEventListener("DOMContentLoaded", init);
