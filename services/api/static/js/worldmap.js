/* The world map: countries shaded by activity, the strongest ties drawn as lines between them. */

import { $, KIND_COLORS, dominantKind, el, fmt, kindsText, signed } from "./util.js";

const ANTARCTICA = "010";

/* A ring that crosses the antimeridian (Chukotka, Fiji) jumps from +180 to -180 and would be drawn
   as a band across the whole map: its western longitudes continue past 180 instead. */
export function unwrapRing(ring) {
  let crosses = false;
  for (let i = 1; i < ring.length; i++) if (Math.abs(ring[i][0] - ring[i - 1][0]) > 180) { crosses = true; break; }
  return crosses ? ring.map(([lon, lat]) => [lon < 0 ? lon + 360 : lon, lat]) : ring;
}

function unwrapGeometry(geometry) {
  if (!geometry) return geometry;
  if (geometry.type === "Polygon") return { ...geometry, coordinates: geometry.coordinates.map(unwrapRing) };
  if (geometry.type === "MultiPolygon") return { ...geometry, coordinates: geometry.coordinates.map((p) => p.map(unwrapRing)) };
  return geometry;
}

/* a tie's colour: its main kind; when comparing periods, rising green and falling red */
export function tieColor(tie, kind) {
  if (tie.change === null || tie.change === undefined) return KIND_COLORS[kind] || "#9fb3d1";
  return tie.change > 0 ? "#4ade80" : tie.change < 0 ? "#f87171" : "#9fb3d1";
}

export async function loadWorld() {
  const [topo, places] = await Promise.all([
    fetch("/static/vendor/world-atlas/countries-50m.json").then((r) => r.json()),
    fetch("/static/places.json").then((r) => r.json()),
  ]);
  const byId = new Map(Object.entries(places).filter(([, p]) => p.id).map(([code, p]) => [p.id, code]));
  const world = topojson.feature(topo, topo.objects.countries);
  world.features = world.features
    .filter((f) => f.id !== ANTARCTICA)
    .map((f) => ({ ...f, geometry: unwrapGeometry(f.geometry), properties: { name: byId.get(f.id) || `~${f.properties.name}`, label: f.properties.name } }));
  echarts.registerMap("world", world);
  return places;
}

export class WorldMap {
  constructor(box, places, { onPair, onCountry, nameOf }) {
    this.box = box;
    this.places = places;
    this.nameOf = nameOf;
    this.ties = [];
    this.focus = -1;
    this.chart = echarts.init(box, null, { renderer: "canvas" });
    this.chart.setOption({
      animation: false,
      tooltip: { trigger: "item", confine: true, backgroundColor: "#0f1a30", borderColor: "#3b4f75", textStyle: { color: "#e8eef7", fontSize: 14 } },
      visualMap: {
        type: "continuous", min: 0, max: 1, seriesIndex: 0, calculable: false, realtime: false,
        left: 12, bottom: 12, itemHeight: 90, itemWidth: 12, text: ["more", "fewer"],
        textStyle: { color: "#a9b6cc" }, inRange: { color: ["#1f3b63", "#3f7cc4", "#9fd0ff"] }, formatter: () => "",
      },
      geo: {
        map: "world", roam: true, scaleLimit: { min: 1, max: 8 }, boundingCoords: [[-170, 85], [190, -57]],
        top: 8, bottom: 8, left: 8, right: 8,
        itemStyle: { areaColor: "#18243b", borderColor: "#33476b", borderWidth: 0.6 },
        emphasis: { itemStyle: { areaColor: "#2c4770" }, label: { show: false } },
        select: { disabled: true }, label: { show: false },
        tooltip: { show: true },
      },
      series: [
        {
          id: "countries", type: "map", geoIndex: 0, data: [],
          tooltip: { formatter: (p) => this.countryTip(p.name) },
        },
        {
          id: "ties", type: "lines", coordinateSystem: "geo", zlevel: 1, data: [],
          lineStyle: { curveness: 0.25, opacity: 0.85, cap: "round" },
          emphasis: { focus: "self", lineStyle: { opacity: 1 } },
          blur: { lineStyle: { opacity: 0.15 } },
        },
        {
          id: "selected", type: "lines", coordinateSystem: "geo", zlevel: 2, data: [], silent: true,
          lineStyle: { curveness: 0.25, color: "#ffd166", opacity: 1, cap: "round", shadowBlur: 8, shadowColor: "#000" },
        },
        {
          id: "places", type: "scatter", coordinateSystem: "geo", zlevel: 2, data: [], symbolSize: 7,
          itemStyle: { color: "#ffd166", borderColor: "#0b1220", borderWidth: 1 },
          label: { show: true, position: "right", color: "#ffd166", fontSize: 12, formatter: (p) => p.data.label || "" },
          labelLayout: { hideOverlap: true },
        },
      ],
    });
    this.chart.on("click", (p) => {
      if (p.seriesId === "ties" && p.data) onPair(p.data.pair);
      else if ((p.seriesId === "countries" || p.componentType === "geo") && p.name && !p.name.startsWith("~")) onCountry(p.name);
      else if (p.seriesId === "places" && p.data) onCountry(p.data.code);
    });
    box.addEventListener("keydown", (e) => this.key(e, onPair));
    box.addEventListener("blur", () => { this.focusBox.hidden = true; });
    this.focusBox = document.getElementById("map-focus");
    new ResizeObserver(() => this.chart.resize()).observe(box);
  }

  at(code) { return this.places[code] ? this.places[code].at : null; }

  /* activity: [{country:{code}, value, pairs}], ties: PairItem[] (the ranking, strongest first),
     selected: the open pair. One setOption per call: each one redraws the whole map. */
  set(activity, ties, selected) {
    const max = Math.max(1, ...activity.map((a) => a.value));
    this.activity = new Map(activity.map((a) => [a.country.code, a]));
    // shading changes in steps of 1/50: a map whose shades did not move is not sent again
    const shaded = activity.map((a) => ({ name: a.country.code, value: Math.round(50 * Math.sqrt(a.value / max)) / 50 }));
    const shadeKey = shaded.map((d) => `${d.name}:${d.value}`).join(",");
    this.ties = ties.filter((t) => this.at(t.countries[0].code) && this.at(t.countries[1].code));
    const top = Math.max(1, ...this.ties.map((t) => t.value));
    const lines = this.ties.map((t) => {
      const kind = dominantKind(t.by_kind);
      t.width = 1.2 + 8 * Math.sqrt(t.value / top);
      const [a, b] = t.countries;
      const change = t.change === null || t.change === undefined ? "" : `<br>change ${signed(t.change)} (previous ${fmt.format(t.previous_events)})`;
      return {
        pair: t.pair,
        coords: [this.at(a.code), this.at(b.code)],
        lineStyle: { width: t.width, color: tieColor(t, kind) },
        tooltip: { formatter: `<b>${a.name} – ${b.name}</b> (${t.pair})<br>${fmt.format(t.value)} events · ${fmt.format(t.participants)} participants${change}<br>${kindsText(t.by_kind)}<br>last ${t.last_date || "–"}<br><i>click for its events</i>` },
      };
    });
    const ends = new Set(this.ties.flatMap((t) => t.countries.map((c) => c.code)));
    const points = [...ends].map((code) => ({
      code, value: this.at(code), label: code.length === 4 ? this.nameOf(code) : "",
      symbolSize: code.length === 4 ? 10 : 5,
      tooltip: { formatter: `<b>${this.nameOf(code)}</b> (${code})${code.length === 4 ? "<br>former country, shown where it was governed from" : ""}` },
    }));
    this.selected = selected;
    const series = [{ id: "ties", data: lines }, { id: "selected", data: this.selectedLine(selected) }, { id: "places", data: points }];
    if (shadeKey !== this.shadeKey) {
      series.unshift({ id: "countries", data: shaded });
      this.shadeKey = shadeKey;
    }
    this.chart.setOption({ visualMap: { show: this.box.clientWidth > 560 }, series });
    this.focus = -1;
    $("map-table").tBodies[0].replaceChildren(...activity.slice(0, 100).map((a) => el("tr", {},
      el("th", { scope: "row", text: `${this.nameOf(a.country.code)} (${a.country.code})` }),
      el("td", { text: fmt.format(a.value) }), el("td", { text: fmt.format(a.pairs) }))));
    const strongest = this.ties.slice(0, 3).map((t) => `${t.countries[0].name}–${t.countries[1].name} ${fmt.format(t.value)}`).join("; ");
    this.box.setAttribute("aria-label", this.ties.length
      ? `World map of ${activity.length} countries shaded by activity, with lines for the ${this.ties.length} strongest ties; strongest: ${strongest}. Arrow keys step through the ties, Enter opens one. The ranked table lists the same ties; a table of the countries follows the map.`
      : "World map: no ties in this view yet");
  }

  key(e, onPair) {
    if (!this.ties.length) return;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") this.focus = (this.focus + 1) % this.ties.length;
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") this.focus = (this.focus - 1 + this.ties.length) % this.ties.length;
    else if (e.key === "Enter" && this.focus >= 0) { onPair(this.ties[this.focus].pair); e.preventDefault(); return; }
    else return;
    e.preventDefault();
    this.showTie(this.focus);
  }

  showTie(index, withFigures = true) {
    this.chart.dispatchAction({ type: "downplay", seriesId: "ties" });
    this.chart.dispatchAction({ type: "highlight", seriesId: "ties", dataIndex: index });
    if (!withFigures) return;
    const t = this.ties[index];
    const [a, b] = t.countries;
    const change = t.change === null || t.change === undefined ? "" : `, change ${signed(t.change)}`;
    this.focusBox.textContent = `${index + 1} of ${this.ties.length}: ${a.name} – ${b.name}: ${fmt.format(t.value)} events, ${fmt.format(t.participants)} participants${change}; ${kindsText(t.by_kind)}. Enter opens its events.`;
    this.focusBox.hidden = false;
  }

  countryTip(code) {
    if (!code || code.startsWith("~")) return "";
    const a = this.activity && this.activity.get(code);
    const figures = a ? `${fmt.format(a.value)} pair-events with ${fmt.format(a.pairs)} partner countries` : "no exchanges in this view";
    return `<b>${this.nameOf(code)}</b> (${code})<br>${figures}<br><i>click for its profile</i>`;
  }

  selectedLine(pair) {
    const [a, b] = (pair || "").split("-");
    const ends = [this.at(a), this.at(b)];
    const tie = this.ties.find((t) => t.pair === pair);
    return pair && ends[0] && ends[1] ? [{ coords: ends, lineStyle: { width: tie ? tie.width + 2 : 4 } }] : [];
  }

  /* the open (or focused) pair drawn on top in gold, the other ties left as they are */
  highlightPair(pair) {
    if ((pair || "") === (this.selected || "")) return;
    this.selected = pair;
    this.chart.setOption({ series: [{ id: "selected", data: this.selectedLine(pair) }] });
  }

  static csv(activity) {
    return { header: ["country", "name", "pair_events", "partner_countries"], rows: activity.map((a) => [a.country.code, a.country.name, a.value, a.pairs]) };
  }
}
