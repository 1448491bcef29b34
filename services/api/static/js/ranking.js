/* The ranked pairs table: the text alternative of the map and the graph, keyboard reachable. */

import { $, KIND_COLORS, el, fmt, kindsText, signed } from "./util.js";

export class Ranking {
  constructor({ nameOf, onPair, onFocusPair, onBlur }) {
    this.nameOf = nameOf;
    this.rows = [];
    this.total = 0;
    this.selected = "";
    this.versions = new Map();
    const body = $("pairs-body");
    const activate = (event) => {
      const tr = event.target.closest("tr[data-pair]");
      if (!tr) return;
      if (event.type === "keydown") {
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          const next = event.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
          if (next) next.focus();
          event.preventDefault();
          return;
        }
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
      }
      onPair(tr.dataset.pair);
    };
    body.addEventListener("click", activate);
    body.addEventListener("keydown", activate);
    // focus moves while rows are replaced (render): only a person's focus changes the map
    body.addEventListener("focusin", (e) => { const tr = e.target.closest("tr[data-pair]"); if (tr && !this.rendering) onFocusPair(tr.dataset.pair); });
    body.addEventListener("focusout", (e) => { if (!this.rendering && !body.contains(e.relatedTarget)) onBlur(); });
  }

  set(page, view, compare) {
    const changed = new Set();
    for (const item of page.items) {
      const old = this.versions.get(item.pair);
      if (old !== undefined && old < item.version) changed.add(item.pair);
    }
    this.versions = new Map(page.items.map((i) => [i.pair, i.version]));
    this.rows = page.items;
    this.total = page.total;
    this.compare = compare;
    this.render(view, changed);
  }

  render(view, changed = new Set()) {
    const parts = [];
    if (view.country) parts.push(`with ${this.nameOf(view.country)} (${view.country})`);
    if (view.kind) parts.push(`with ${view.kind} events`);
    if (view.from || view.to) parts.push(`in ${view.from || "…"} to ${view.to || "…"}`);
    $("pairs-caption").textContent = `Top ${this.rows.length} of ${fmt.format(this.total)} country pairs${parts.length ? " " + parts.join(" ") : ""}`;
    $("value-col").textContent = view.from || view.to ? "Events in range" : view.kind ? `${view.kind} events` : "Events";
    $("pairs-table").classList.toggle("compare", Boolean(this.compare));
    const body = $("pairs-body");
    if (!this.rows.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "7", text: "No pairs match this view yet." })));
      return;
    }
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-pair]");
    const focusedPair = focused ? focused.dataset.pair : null;
    this.rendering = true;
    try {
      body.replaceChildren(...this.rows.map((item, i) => this.row(item, i + 1, changed.has(item.pair))));
      if (focusedPair) { const again = body.querySelector(`tr[data-pair="${focusedPair}"]`); if (again) again.focus({ preventScroll: true }); }
    } finally {
      this.rendering = false;
    }
  }

  row(item, rank, flash) {
    const [a, b] = item.countries;
    const label = `${a.name} – ${b.name}`;
    const change = item.change === null || item.change === undefined ? null : item.change;
    const tr = el("tr", {
      tabindex: "0", "data-pair": item.pair, class: flash ? "flash" : "",
      "aria-current": this.selected === item.pair ? "true" : null,
      "aria-label": `${label}: ${item.value} events, ${item.participants} participants${change === null ? "" : `, change ${signed(change)}`}. Press Enter for its events.`,
    });
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
      el("td", { class: "pair-cell", title: `${label} (${item.pair})` }, el("span", { class: "pair-name", text: label }), el("span", { class: "code", text: item.pair })),
      el("td", { class: "num", text: fmt.format(item.value) }),
      el("td", { class: `num c-change ${change > 0 ? "up" : change < 0 ? "down" : ""}`, text: change === null ? "" : signed(change) }),
      el("td", { class: "num c-part", text: fmt.format(item.participants) }),
      el("td", { class: "c-kinds", title: kindsText(item.by_kind) }, el("div", { class: "kinds-cell" }, bar, el("span", { class: "kinds-text", text: kindsText(item.by_kind) }))),
      el("td", { class: "c-last", text: item.last_date || "–" }),
    );
    return tr;
  }

  select(pair) {
    this.selected = pair;
    for (const tr of $("pairs-body").querySelectorAll("tr[data-pair]")) {
      if (tr.dataset.pair === pair) tr.setAttribute("aria-current", "true");
      else tr.removeAttribute("aria-current");
    }
  }

  csv() {
    const header = ["rank", "pair", "country_a", "country_b", "value", "previous_events", "change", "active_events", "participants", "cancelled", "first_date", "last_date", "checksum"];
    return {
      header,
      rows: this.rows.map((r, i) => [i + 1, r.pair, r.countries[0].name, r.countries[1].name, r.value, r.previous_events ?? "", r.change ?? "", r.active_events, r.participants, r.cancelled, r.first_date || "", r.last_date || "", r.checksum]),
    };
  }
}
