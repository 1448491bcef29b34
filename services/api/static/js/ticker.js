/* "Latest exchanges": accepted events as they arrive (/v1/stream/events), redrawn at most 3 times a second. */

import { eventItem, eventRow, EVENT_CSV_HEADER } from "./events.js";
import { $, coalesce } from "./util.js";

const KEEP = 40;

export class Ticker {
  constructor({ nameOf, onPair }) {
    this.nameOf = nameOf;
    this.onPair = onPair;
    this.items = []; // [{change, item}] newest first
    this.draw = coalesce(() => this.render(), 300);
  }

  seed(items) {
    this.items = items.map((item) => ({ change: "", item }));
    this.render();
  }

  push(change) {
    this.items = [change, ...this.items.filter((c) => c.item.key !== change.item.key)].slice(0, KEEP);
    this.draw();
  }

  render() {
    const list = $("ticker-list");
    list.replaceChildren(...this.items.slice(0, KEEP).map((c) => eventItem(c.item, this.nameOf, { change: c.change, onPair: this.onPair })));
    $("ticker-count").textContent = this.items.length ? `${this.items.length} latest` : "waiting for exchanges";
  }

  csv() { return { header: ["change", ...EVENT_CSV_HEADER], rows: this.items.map((c) => [c.change, ...eventRow(c.item)]) }; }
}
