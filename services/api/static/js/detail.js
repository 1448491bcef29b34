/* The detail panel: a pair (figures and its events), a country's profile, or search results. */

import { api, query, request } from "./api.js";
import { eventItem } from "./events.js";
import { periods } from "./timeline.js";
import { $, KIND_COLORS, download, downloadCsv, el, fmt, shortName } from "./util.js";

const PAGE = 20;

function bars(counts, label, keepOrder = false) {
  const entries = Object.entries(counts);
  if (!keepOrder) entries.sort((x, y) => y[1] - x[1]);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  const list = el("ul", { class: "bars", "aria-label": label });
  for (const [k, n] of entries) {
    const bar = el("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${(100 * n) / max}%`;
    if (KIND_COLORS[k]) bar.style.background = KIND_COLORS[k];
    list.append(el("li", {}, el("span", { text: k }), bar, el("span", { class: "n", text: fmt.format(n) })));
  }
  if (!entries.length) list.append(el("li", { text: "none" }));
  return list;
}

function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [k, v, cls] of pairs) dl.append(el("div", {}, el("dt", { text: k }), el("dd", { class: cls, text: v })));
  return dl;
}

export class Detail {
  constructor({ nameOf, onPair, onCountry, onClose }) {
    this.nameOf = nameOf;
    this.onPair = onPair;
    this.onCountry = onCountry;
    this.onClose = onClose;
    this.mode = "";
    this.subject = "";
    this.params = {};
    this.list = null;
    this.token = 0;
  }

  eventParams(view) {
    return { country: view.country, kind: view.kind, from: view.from, to: view.to };
  }

  header(title, ...actions) {
    $("detail-title").textContent = title;
    $("detail-actions").replaceChildren(...actions, el("button", { type: "button", class: "small", text: "Close", "aria-label": "close the detail", onclick: () => this.onClose() }));
  }

  clear() {
    this.mode = "";
    this.subject = "";
    this.token += 1;
    $("detail-title").textContent = "Details";
    $("detail-actions").replaceChildren();
    $("detail-body").replaceChildren(el("p", { class: "muted", text: "Select a tie on the map or in the ranking for its events, a country on the map for its profile, or search the exchanges." }));
  }

  fail(err) { $("detail-body").replaceChildren(el("p", { class: "error", role: "alert", text: err.message })); }

  /* ---------- a pair and its events ---------- */

  async showPair(pair, view) {
    const token = ++this.token;
    this.mode = "pair";
    this.subject = pair;
    const [a, b] = pair.split("-");
    this.params = { ...this.eventParams(view), country: "", pair, sort: "-starts_on" };
    let d;
    try {
      d = await api(`/v1/pairs/${a}/${b}`);
    } catch (err) {
      if (token === this.token) { this.header(pair); this.fail(err); }
      return;
    }
    if (token !== this.token) return;
    this.header(this.pairTitle(d), this.csvButton(`events-${pair}`));
    this.figures = el("div", { class: "figures-box" }, ...this.pairFigures(d));
    const body = $("detail-body");
    body.replaceChildren(this.figures, el("h3", { id: "events-heading", text: "Events" }));
    await this.loadEvents(body, token);
  }

  pairTitle(d) {
    const [a, b] = d.countries;
    return `${shortName(a, d.names[a] || a)} – ${shortName(b, d.names[b] || b)}`;
  }

  pairFigures(d) {
    const directions = {};
    for (const [k, n] of Object.entries(d.by_direction)) {
      const [from, to] = k.split(">");
      directions[k === "third_country" ? "met in a third country" : `${from} visited ${to}`] = n;
    }
    return [
      facts([
        ["Active events", fmt.format(d.active_events)], ["Participants", fmt.format(d.participants)],
        ["Cancelled", fmt.format(d.cancelled)], ["First event", d.first_date || "–"], ["Last event", d.last_date || "–"],
        ["Checksum", d.checksum, "checksum"],
      ]),
      el("details", { class: "figures" }, el("summary", { text: "By kind, direction and status" }),
        el("h3", { text: "By kind" }), bars(d.by_kind, "events by kind"),
        el("h3", { text: "By direction" }), bars(directions, "events by direction"),
        el("h3", { text: "By status" }), bars(d.by_status, "events by status")),
    ];
  }

  /* a new snapshot of the open pair: its figures change in place (the event list stays as it is) */
  async refreshFigures() {
    if (this.mode !== "pair" || !this.figures) return;
    const token = this.token;
    const [a, b] = this.subject.split("-");
    try {
      const d = await api(`/v1/pairs/${a}/${b}`);
      if (token !== this.token) return;
      const open = this.figures.querySelector("details")?.open;
      this.figures.replaceChildren(...this.pairFigures(d));
      if (open) this.figures.querySelector("details").open = true;
    } catch { /* the next update tries again */ }
  }

  /* ---------- a country's profile ---------- */

  async showCountry(code) {
    const token = ++this.token;
    this.mode = "country";
    this.subject = code;
    let d;
    try {
      d = await api(`/v1/countries/${code}`);
    } catch (err) {
      if (token === this.token) { this.header(this.nameOf(code)); this.fail(err); }
      return;
    }
    if (token !== this.token) return;
    for (const p of d.partners) p.country.name = shortName(p.country.code, p.country.name);
    this.header(`${shortName(d.country.code, d.country.name)} (${d.country.code})`,
      el("button", { type: "button", class: "small", text: "CSV", "aria-label": "download this country's partners as CSV", onclick: () => this.countryCsv(d) }));
    const partners = el("ol", { class: "partners", "aria-label": "partners ranked by active events" });
    const max = Math.max(1, ...d.partners.map((p) => p.active_events));
    for (const p of d.partners.slice(0, 25)) {
      const bar = el("span", { class: "bar", "aria-hidden": "true" });
      bar.style.width = `${(100 * p.active_events) / max}%`;
      partners.append(el("li", {},
        el("button", { type: "button", class: "link", text: p.country.name, "aria-label": `${p.country.name}: ${p.active_events} events, open the pair`, onclick: () => this.onPair(p.pair) }),
        bar, el("span", { class: "n", text: fmt.format(p.active_events) })));
    }
    const years = periods(d.totals.by_month);
    const overTime = Object.fromEntries(years.rows.slice(-12));
    $("detail-body").replaceChildren(
      facts([
        ["Partner countries", fmt.format(d.partners.length)], ["Pair-events", fmt.format(d.totals.active_events)],
        ["Participants", fmt.format(d.totals.participants)], ["Cancelled", fmt.format(d.totals.cancelled)],
      ]),
      el("h3", { text: "Partners" }), partners,
      el("h3", { text: "By kind" }), bars(d.totals.by_kind, "pair-events by kind"),
      el("h3", { text: `Over time (latest ${Object.keys(overTime).length} ${years.unit}s with events)` }), bars(overTime, "pair-events over time", true),
    );
  }

  countryCsv(d) {
    const rows = d.partners.map((p, i) => [i + 1, p.country.code, p.country.name, p.pair, p.active_events, p.participants, p.last_date || ""]);
    downloadCsv(`partners-${d.country.code}.csv`, ["rank", "partner", "name", "pair", "active_events", "participants", "last_date"], rows);
  }

  /* ---------- search ---------- */

  async showSearch(q, view) {
    const token = ++this.token;
    this.mode = "search";
    this.subject = q;
    this.params = { ...this.eventParams(view), q, sort: "-starts_on" };
    this.header(`Search: ${q}`, this.csvButton("search"));
    const body = $("detail-body");
    body.replaceChildren(el("h3", { id: "events-heading", text: "Exchanges" }));
    await this.loadEvents(body, token);
  }

  /* ---------- event lists (pair and search), paged with the cursor ---------- */

  async loadEvents(body, token) {
    this.list = el("ol", { class: "events", "aria-labelledby": "events-heading" });
    const more = el("button", { type: "button", class: "more", text: "More events" });
    body.append(this.list, more);
    let cursor = null;
    const page = async () => {
      more.disabled = true;
      try {
        const r = await api(`/v1/events?${query({ ...this.params, limit: PAGE, cursor })}`);
        if (token !== this.token) return;
        $("events-heading").textContent = `${this.mode === "search" ? "Exchanges" : "Events"} (${fmt.format(r.total)}${this.params.from || this.params.to ? " in range" : ""}, newest first)`;
        for (const item of r.items) this.append(item);
        if (!r.items.length && !cursor) this.list.append(el("li", { class: "muted", text: "No events match." }));
        cursor = r.next_cursor;
        more.hidden = !cursor;
      } catch (err) {
        if (token === this.token) this.list.append(el("li", { class: "error", text: err.message }));
      } finally {
        more.disabled = false;
      }
    };
    more.addEventListener("click", page);
    await page();
  }

  append(item) {
    this.list.append(eventItem(item, this.nameOf, { onPair: this.mode === "search" ? this.onPair : null }));
  }

  /* does an event belong to the open list's kind and date range? */
  inView(item) {
    const { kind, from, to } = this.params;
    const month = item.starts_on.slice(0, 7);
    return (!kind || item.kind === kind) && (!from || month >= from) && (!to || month <= to);
  }

  /* a live change: shown at once in the open pair's list (new at the top, corrections in place) */
  live(change) {
    if (this.mode !== "pair" || !this.list) return false;
    const old = this.list.querySelector(`li[data-key="${CSS.escape(change.item.key)}"]`);
    const belongs = change.item.pairs.includes(this.subject) && this.inView(change.item);
    if (!belongs) { if (old) old.remove(); return false; } // a correction moved it out of this pair or range
    const node = eventItem(change.item, this.nameOf, { change: change.change });
    node.classList.add("flash");
    if (old) old.replaceWith(node);
    else { this.list.querySelector("li.muted")?.remove(); this.list.prepend(node); }
    return true;
  }

  csvButton(name) {
    return el("button", {
      type: "button", class: "small", text: "CSV", "aria-label": "download these events as CSV (every page)",
      onclick: async () => {
        const r = await request(`/v1/events?${query({ ...this.params, format: "csv" })}`, "text/csv");
        download(`${name}.csv`, await r.blob());
      },
    });
  }
}
