/* The circular graph of the strongest ties (the map's second view). */

import { fmt } from "./util.js";

export class TieGraph {
  constructor(box, { onPair, nameOf }) {
    this.box = box;
    this.nameOf = nameOf;
    this.chart = echarts.init(box, null, { renderer: "canvas" });
    this.chart.setOption({
      animationDurationUpdate: 300,
      tooltip: {},
      series: [{
        type: "graph", layout: "circular", top: 40, bottom: 40, left: 80, right: 80,
        circular: { rotateLabel: false }, roam: false,
        label: { position: "right", color: "#e8eef7", fontSize: 14, fontWeight: "bold" },
        itemStyle: { color: "#6cb6ff", borderColor: "#0b1220", borderWidth: 1 },
        lineStyle: { color: "source", curveness: 0.3 },
        emphasis: { focus: "adjacency", lineStyle: { width: 10 } },
        data: [], links: [],
      }],
    });
    this.chart.on("click", (p) => { if (p.dataType === "edge" && p.data.pair) onPair(p.data.pair); });
    new ResizeObserver(() => this.chart.resize()).observe(box);
  }

  set(rows) {
    const activity = new Map();
    for (const r of rows) for (const c of r.countries) activity.set(c.code, (activity.get(c.code) || 0) + r.value);
    const maxNode = Math.max(1, ...activity.values());
    const maxEdge = Math.max(1, ...rows.map((r) => r.value));
    const nodes = [...activity.entries()].sort((x, y) => y[1] - x[1]).map(([code, n]) => ({
      name: code, value: n, symbolSize: 14 + 34 * Math.sqrt(n / maxNode),
      label: { show: true, formatter: code },
      tooltip: { formatter: `${this.nameOf(code)} (${code}): ${fmt.format(n)} pair-events shown` },
    }));
    const links = rows.map((r) => ({
      source: r.countries[0].code, target: r.countries[1].code, value: r.value, pair: r.pair,
      lineStyle: { width: 1 + 9 * (r.value / maxEdge), opacity: 0.35 + 0.5 * (r.value / maxEdge) },
      tooltip: { formatter: `${r.countries[0].name} – ${r.countries[1].name}: ${fmt.format(r.value)}` },
    }));
    this.chart.setOption({ series: [{ data: nodes, links }] });
    const top = rows.slice(0, 3).map((r) => `${r.countries[0].name}–${r.countries[1].name} ${r.value}`).join("; ");
    this.box.setAttribute("aria-label", rows.length
      ? `Circular graph of the top ${rows.length} pairs among ${nodes.length} countries; strongest: ${top}. The same pairs are in the ranked table.`
      : "Circular graph of the top pairs: no data yet");
  }
}
