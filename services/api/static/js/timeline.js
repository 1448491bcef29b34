/* The time chart: a real time axis (years when the data spans decades), brushed to set the range. */

import { $, el, fmt } from "./util.js";

const YEARS_FROM_MONTHS = 8 * 12; // a span longer than this is shown by year

export function monthIndex(month) { return Number(month.slice(0, 4)) * 12 + Number(month.slice(5, 7)) - 1; }
export function monthOf(index) { return `${String(Math.floor(index / 12)).padStart(4, "0")}-${String((index % 12) + 1).padStart(2, "0")}`; }
function startOf(month) { return Date.UTC(Number(month.slice(0, 4)), Number(month.slice(5, 7)) - 1, 1); }
function monthAt(ms) { const d = new Date(ms); return `${String(d.getUTCFullYear()).padStart(4, "0")}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`; }

/* events of the months in [from, to] (either end open) */
export function sumMonths(byMonth, from, to) {
  let n = 0;
  for (const [m, v] of Object.entries(byMonth)) if ((!from || m >= from) && (!to || m <= to)) n += v;
  return n;
}

/* the window of the same number of months just before [from, to] (the api's compare=previous) */
export function previousWindow(from, to) {
  const length = monthIndex(to) - monthIndex(from) + 1;
  return [monthOf(monthIndex(from) - length), monthOf(monthIndex(from) - 1)];
}

/* {YYYY-MM: n} -> {unit: "month"|"year", rows: [[label, n]]}, rolled up to years over long spans */
export function periods(byMonth) {
  const months = Object.keys(byMonth).sort();
  if (!months.length) return { unit: "month", rows: [] };
  const span = monthIndex(months[months.length - 1]) - monthIndex(months[0]);
  if (span <= YEARS_FROM_MONTHS) return { unit: "month", rows: months.map((m) => [m, byMonth[m]]) };
  const years = new Map();
  for (const m of months) years.set(m.slice(0, 4), (years.get(m.slice(0, 4)) || 0) + byMonth[m]);
  return { unit: "year", rows: [...years.entries()] };
}

export class Timeline {
  constructor(box, { onRange }) {
    this.box = box;
    this.onRange = onRange;
    this.unit = "month";
    this.rows = [];
    this.range = { from: "", to: "" };
    this.chart = window.echarts ? echarts.init(box, null, { renderer: "canvas" }) : null;
    if (!this.chart) return;
    const text = { color: "#e8eef7", fontSize: 13 };
    this.chart.setOption({
      animation: false,
      grid: { left: 48, right: 18, top: 14, bottom: 30 },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" }, valueFormatter: (v) => fmt.format(v) },
      brush: { xAxisIndex: 0, brushType: "lineX", brushMode: "single", transformable: true, throttleType: "debounce", throttleDelay: 200, brushStyle: { color: "rgba(255, 209, 102, 0.18)", borderColor: "#ffd166", borderWidth: 1 }, outOfBrush: { colorAlpha: 0.35 } },
      toolbox: { show: false },
      xAxis: { type: "time", axisLabel: text, axisLine: { lineStyle: { color: "#4a5d80" } }, splitLine: { show: false } },
      yAxis: { type: "value", axisLabel: text, splitLine: { lineStyle: { color: "#23314d" } }, minInterval: 1 },
      series: [{ id: "events", type: "bar", data: [], barMaxWidth: 28, barMinWidth: 2, itemStyle: { color: "#6cb6ff" } }],
    });
    this.chart.on("brushEnd", (p) => this.brushed(p.areas));
    this.arm();
    new ResizeObserver(() => this.chart.resize()).observe(box);
  }

  arm() {
    this.chart.dispatchAction({ type: "takeGlobalCursor", key: "brush", brushOption: { brushType: "lineX", brushMode: "single" } });
  }

  brushed(areas) {
    if (!areas || !areas.length) { this.onRange("", ""); return; }
    let [t0, t1] = areas[0].coordRange;
    if (t1 < t0) [t0, t1] = [t1, t0];
    let from = monthAt(t0);
    let to = monthAt(t1);
    if (this.unit === "year") { from = from.slice(0, 4) + "-01"; to = to.slice(0, 4) + "-12"; }
    this.onRange(from, to);
  }

  set(byMonth, range, whose = "") {
    const { unit, rows } = periods(byMonth);
    this.whose = whose;
    this.unit = unit;
    this.rows = rows;
    this.range = range;
    const stamp = (label) => (unit === "year" ? Date.UTC(Number(label), 6, 1) : startOf(label) + 14 * 86400000);
    if (this.chart) {
      this.chart.setOption({
        xAxis: unit === "year" ? { minInterval: 365 * 86400000 } : { minInterval: 28 * 86400000 },
        series: [{ id: "events", name: unit === "year" ? "Pair-events per year" : "Pair-events per month", data: rows.map(([label, n]) => [stamp(label), n, label]) }],
        tooltip: { formatter: (ps) => `${ps[0].data[2]}: <b>${fmt.format(ps[0].data[1])}</b> pair-events` },
      });
      this.drawRange();
    }
    this.describe();
  }

  drawRange() {
    const { from, to } = this.range;
    const areas = [];
    if ((from || to) && this.rows.length) {
      const first = this.unit === "year" ? `${this.rows[0][0]}-01` : this.rows[0][0];
      const last = this.unit === "year" ? `${this.rows[this.rows.length - 1][0]}-12` : this.rows[this.rows.length - 1][0];
      const end = monthIndex(to || last) + 1;
      areas.push({ brushType: "lineX", xAxisIndex: 0, coordRange: [startOf(from || first), startOf(monthOf(end)) - 1] });
    }
    this.chart.dispatchAction({ type: "brush", areas });
  }

  describe() {
    const title = `${this.unit === "year" ? "Pair-events by year" : "Pair-events by month"}${this.whose ? `: ${this.whose}` : ""}`;
    $("time-title").textContent = title;
    const body = $("time-table").tBodies[0];
    $("time-table").querySelector("th").textContent = this.unit === "year" ? "Year" : "Month";
    body.replaceChildren(...this.rows.map(([label, n]) => el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: String(n) }))));
    if (!this.rows.length) { this.box.setAttribute("aria-label", `${title}: no data yet`); return; }
    let peak = this.rows[0];
    for (const r of this.rows) if (r[1] > peak[1]) peak = r;
    this.box.setAttribute("aria-label",
      `${title}, ${this.rows[0][0]} to ${this.rows[this.rows.length - 1][0]}: peak ${peak[0]} with ${fmt.format(peak[1])}. Drag across the chart to choose a time range; the From and To fields do the same. The table after the chart lists every value.`);
  }

  csv() { return { header: [this.unit, "pair_events"], rows: this.rows }; }
}
