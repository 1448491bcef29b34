/* Handshake's dashboard: one view (in the URL) drives every panel; REST for state, SSE for live. */

import { api, query, streamUrl } from "./api.js";
import { Detail } from "./detail.js";
import { TieGraph } from "./graph.js";
import { Ranking } from "./ranking.js";
import { formatView, parseView, rangeLabel, rangeParams } from "./state.js";
import { Ticker } from "./ticker.js";
import { previousWindow, sumMonths, Timeline } from "./timeline.js";
import { $, coalesce, downloadCsv, downloadPng, fmt, shortName, signed } from "./util.js";
import { loadWorld, WorldMap } from "./worldmap.js";

const LIMIT = 50;
let view = parseView(location.search);
const names = new Map();
const nameOf = (code) => names.get(code) || code;
const last = { page: { items: [], total: 0 }, activity: { items: [], total: 0 } }; // what the map and graph draw
let map = null;
let graph = null;
let streams = [];
let dirty = false;

function remember(countries) {
  for (const c of countries) {
    c.name = shortName(c.code, c.name);
    if (c.name && !names.has(c.code)) {
      names.set(c.code, c.name);
      $("country-codes").append(Object.assign(document.createElement("option"), { value: c.code, label: c.name }));
    }
  }
}

/* ---------- the view and the URL ---------- */

function setView(patch, { history: mode = "replace", reload = true } = {}) {
  const before = JSON.stringify(view);
  view = { ...view, ...patch };
  if (!(view.compare && view.from && view.to)) view.sort = "events";
  const url = formatView(view) || location.pathname;
  if (mode === "push") window.history.pushState(null, "", url);
  else window.history.replaceState(null, "", url);
  syncForm();
  if (reload && before !== JSON.stringify(view)) return refresh();
  return Promise.resolve();
}

function syncForm() {
  $("f-country").value = view.country;
  $("f-kind").value = view.kind;
  $("f-from").value = view.from;
  $("f-to").value = view.to;
  $("f-compare").checked = view.compare;
  $("f-compare").disabled = !(view.from && view.to);
  $("f-sort").value = view.sort;
  $("f-sort").disabled = !view.compare;
  $("q").value = view.q;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.tab === view.tab;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  $("range-label").textContent = rangeLabel(view);
  const active = [view.from || view.to ? rangeLabel(view) : "", view.country, view.kind].filter(Boolean);
  $("filters-toggle").textContent = `Filters and time range${active.length ? `: ${active.join(", ")}` : ""}`;
  $("map-legend").textContent = view.compare
    ? "line colour: green rising, red falling, grey flat · width = events"
    : "line colour = main kind · width = events";
}

/* ---------- loading ---------- */

let loading = null;
let detailKey = "";

async function refresh() {
  if (loading) { dirty = true; return loading; }
  loading = (async () => {
    try {
      await load();
      $("filter-error").hidden = true;
    } catch (err) {
      $("filter-error").textContent = err.message;
      $("filter-error").hidden = false;
    } finally {
      loading = null;
    }
    openDetail();
    if (dirty) refreshSoon();
  })();
  return loading;
}

async function load() {
  const range = rangeParams(view);
  const [summary, page, activity, country] = await Promise.all([
    api(`/v1/summary?${query(range)}`),
    api(`/v1/pairs?${query({ country: view.country, kind: view.kind, ...range, sort: view.sort, limit: LIMIT })}`),
    api(`/v1/countries?${query({ kind: view.kind, from: view.from, to: view.to })}`),
    // with a country filter the totals and the time chart are that country's
    view.country ? api(`/v1/countries/${encodeURIComponent(view.country)}`).catch(() => null) : null,
  ]);
  for (const item of page.items) remember(item.countries);
  for (const a of activity.items) remember([a.country]);
  canonicalCountry(page.items);
  Object.assign(last, { page, activity });
  document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  totals(summary, page, activity, country);
  timeline.set(country ? country.totals.by_month : summary.by_month, { from: view.from, to: view.to }, country ? nameOf(country.country.code) : "");
  ranking.set(page, view, view.compare);
  await nextFrame(); // the map's redraw is the longest piece: a frame of its own
  drawTies();
}

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

/* the api takes FRA or fra for FR: keep the canonical code (common to every row) in the view */
function canonicalCountry(items) {
  if (!view.country || !items.length) return;
  let common = items[0].countries.map((c) => c.code);
  for (const item of items) common = common.filter((code) => item.countries.some((c) => c.code === code));
  if (common.length === 1 && common[0] !== view.country) setView({ country: common[0] }, { reload: false });
}

function drawTies() {
  if (map) map.set(last.activity.items, last.page.items, view.pair);
  if (graph) graph.set(last.page.items);
}

function totals(summary, page, activity, country) {
  const ranged = Boolean(view.from || view.to);
  const byMonth = country ? country.totals.by_month : summary.by_month;
  const base = country ? country.totals : summary;
  // by kind: the aggregates count kinds over all time, not per month
  const ofKind = view.kind && !ranged;
  const events = ranged ? sumMonths(byMonth, view.from, view.to) : ofKind ? base.by_kind[view.kind] || 0 : base.active_events;
  const whose = country ? ` with ${nameOf(country.country.code)}` : "";
  $("total-pairs").textContent = fmt.format(page.total);
  $("total-events").textContent = fmt.format(events);
  $("events-label").textContent = ranged
    ? `Pair-events${whose}, ${rangeLabel(view)}${view.kind ? " (all kinds)" : ""}`
    : `Active ${ofKind ? view.kind + " " : ""}pair-events${whose}`;
  let change = "";
  if (view.compare && view.from && view.to) {
    const [before, after] = previousWindow(view.from, view.to);
    change = `${signed(events - sumMonths(byMonth, before, after))} vs ${before}…${after}`;
  }
  $("total-change").textContent = change;
  $("total-participants").textContent = fmt.format((country ? country.totals : summary).participants);
  $("participants-label").textContent = ranged ? "Participants, all time" : "Participants";
  $("total-countries").textContent = fmt.format(country ? country.partners.length : activity.total);
  $("countries-label").textContent = country ? "Partner countries" : "Countries";
  if (summary.updated_at) $("last-update").textContent = "updated " + new Date(summary.updated_at).toLocaleTimeString();
}

/* ---------- detail: pair, country profile or search ---------- */

function openDetail() {
  const key = JSON.stringify([view.pair, view.profile, view.q, view.country, view.kind, view.from, view.to]);
  if (key === detailKey) return;
  detailKey = key;
  ranking.select(view.pair);
  if (map) map.highlightPair(view.pair);
  document.body.classList.toggle("has-detail", Boolean(view.pair || view.profile || view.q));
  if (view.pair) detail.showPair(view.pair, view);
  else if (view.profile) detail.showCountry(view.profile);
  else if (view.q) detail.showSearch(view.q, view);
  else detail.clear();
}

function showPair(pair) {
  setView({ pair, profile: "", q: "" }, { history: "push", reload: false });
  openDetail();
  if (window.matchMedia("(max-width: 1500px)").matches) $("detail").scrollIntoView({ block: "start", behavior: "smooth" });
}

function showCountry(code) {
  setView({ pair: "", profile: code, q: "" }, { history: "push", reload: false });
  openDetail();
}

const detail = new Detail({ nameOf, onPair: showPair, onCountry: showCountry, onClose: () => { setView({ pair: "", profile: "", q: "" }, { history: "push", reload: false }); openDetail(); } });
const ranking = new Ranking({ nameOf, onPair: showPair, onFocusPair: (pair) => { if (map && view.tab === "map") map.highlightPair(pair); }, onBlur: () => { if (map) map.highlightPair(view.pair); } });
const ticker = new Ticker({ nameOf, onPair: showPair });
const timeline = new Timeline($("time"), { onRange: (from, to) => setView({ from, to, compare: view.compare && Boolean(from && to) }) });

/* ---------- live ---------- */

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text;
}

const refreshSoon = coalesce(() => { dirty = false; refresh(); }, 1000);
const pairSoon = coalesce(() => detail.refreshFigures(), 1000);

function connect() {
  for (const s of streams) s.close();
  const filters = { country: view.country, kind: view.kind };
  const pairs = new EventSource(streamUrl("/v1/stream", filters));
  const events = new EventSource(streamUrl("/v1/stream/events", filters));
  streams = [pairs, events];
  setLive("connecting", "Connecting…");
  const opened = () => { if (pairs.readyState === EventSource.OPEN && events.readyState === EventSource.OPEN) setLive("live", "Live"); };
  for (const s of streams) {
    s.onopen = opened;
    s.addEventListener("hello", opened);
    s.onerror = () => {
      if (s.readyState === EventSource.CLOSED) {
        setLive("offline", "Offline – retrying");
        setTimeout(() => { if (streams.includes(s)) connect(); }, 3000);
      } else setLive("connecting", "Reconnecting…");
    };
  }
  pairs.addEventListener("pair", (e) => {
    const stats = JSON.parse(e.data);
    dirty = true;
    refreshSoon();
    if (stats.pair === view.pair) pairSoon();
  });
  pairs.addEventListener("reset", () => { dirty = true; refreshSoon(); });
  events.addEventListener("event", (e) => {
    const change = JSON.parse(e.data);
    ticker.push(change);
    detail.live(change);
  });
  events.addEventListener("reset", seedTicker);
}

async function seedTicker() {
  try {
    const r = await api(`/v1/events?${query({ country: view.country, kind: view.kind, sort: "-received_at", limit: 20 })}`);
    ticker.seed(r.items);
  } catch { /* the stream fills it */ }
}

/* ---------- controls ---------- */

function applyFilters(event) {
  if (event) event.preventDefault();
  const previous = { country: view.country, kind: view.kind };
  let from = $("f-from").value;
  let to = $("f-to").value;
  if (from && to && from > to) [from, to] = [to, from];
  setView({
    country: $("f-country").value.trim().toUpperCase(), kind: $("f-kind").value, from, to,
    compare: $("f-compare").checked && Boolean(from && to), sort: $("f-sort").value,
  }).then(() => {
    if (view.country !== previous.country || view.kind !== previous.kind) { connect(); seedTicker(); }
  });
}

function setupControls() {
  $("filters-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("filters-open");
    $("filters-toggle").setAttribute("aria-expanded", String(open));
  });
  $("filters").addEventListener("submit", applyFilters);
  for (const id of ["f-kind", "f-from", "f-to", "f-compare", "f-sort"]) $(id).addEventListener("change", applyFilters);
  $("f-country").addEventListener("change", applyFilters);
  $("f-clear").addEventListener("click", () => {
    for (const id of ["f-country", "f-kind", "f-from", "f-to"]) $(id).value = "";
    $("f-compare").checked = false;
    applyFilters();
  });
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    setView({ q, pair: "", profile: "" }, { history: "push", reload: false });
    openDetail();
  });
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => { setView({ tab: tab.dataset.tab }, { reload: false }); ensureGraph(); });
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const next = tabs[(tabs.indexOf(tab) + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      next.focus();
      next.click();
    });
  }
  document.addEventListener("click", (e) => {
    const button = e.target.closest("[data-csv], [data-png]");
    if (!button) return;
    const what = button.dataset.csv || button.dataset.png;
    if (button.dataset.png) {
      const tie = view.tab === "graph" ? graph : map; // the main panel's button draws its visible tab
      const chart = what === "time" ? timeline.chart : tie && tie.chart;
      if (chart) downloadPng(`handshake-${what === "time" ? "time" : view.tab}.png`, chart);
      return;
    }
    const table = { ranking: () => ranking.csv(), map: () => WorldMap.csv(last.activity.items), time: () => timeline.csv(), ticker: () => ticker.csv() }[what]();
    downloadCsv(`handshake-${what}.csv`, table.header, table.rows);
  });
  $("share").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(location.href); $("share").textContent = "Link copied"; } catch { $("share").textContent = "Copy the address bar"; }
    setTimeout(() => { $("share").textContent = "Copy link"; }, 2500);
  });
  window.addEventListener("popstate", () => {
    const before = JSON.stringify([view.country, view.kind, view.from, view.to, view.compare, view.sort]);
    view = parseView(location.search);
    syncForm();
    if (before !== JSON.stringify([view.country, view.kind, view.from, view.to, view.compare, view.sort])) refresh();
    else openDetail();
  });
}

function ensureGraph() {
  if (view.tab !== "graph" || graph || !window.echarts) return;
  graph = new TieGraph($("graph"), { onPair: showPair, nameOf });
  graph.set(last.page.items);
}

async function init() {
  syncForm();
  setupControls();
  detail.clear();
  const world = window.echarts && window.topojson ? loadWorld().catch(() => null) : Promise.resolve(null);
  await refresh();
  connect();
  seedTicker();
  ensureGraph();
  const places = await world;
  if (places) {
    map = new WorldMap($("map"), places, { onPair: showPair, onCountry: showCountry, nameOf });
    drawTies();
  } else {
    $("map").setAttribute("aria-label", "The world map could not be drawn; the ranked table lists the same ties.");
  }
  document.body.dataset.ready = "true";
  performance.mark("handshake-ready");
}

init();
