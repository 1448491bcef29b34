/* The whole view lives in the URL: a link or a reload reproduces what someone saw. */

import { KINDS } from "./util.js";

const MONTH = /^\d{4}-(0[1-9]|1[0-2])$/;
const CODE = /^[A-Z]{2}([A-Z]{2})?$/;
const PAIR = /^[A-Z]{2,4}-[A-Z]{2,4}$/;
const TABS = ["map", "graph"];
const SORTS = ["events", "change", "-change"];

export function defaultView() {
  return { tab: "map", country: "", kind: "", from: "", to: "", compare: false, sort: "events", pair: "", profile: "", q: "" };
}

/* Values that are not valid are dropped (a hand-edited link still opens). */
export function parseView(search) {
  const p = new URLSearchParams(search);
  const view = defaultView();
  const get = (k) => (p.get(k) || "").trim();
  if (TABS.includes(get("tab"))) view.tab = get("tab");
  if (CODE.test(get("country").toUpperCase())) view.country = get("country").toUpperCase();
  if (KINDS.includes(get("kind"))) view.kind = get("kind");
  if (MONTH.test(get("from"))) view.from = get("from");
  if (MONTH.test(get("to"))) view.to = get("to");
  if (view.from && view.to && view.from > view.to) [view.from, view.to] = [view.to, view.from];
  view.compare = get("compare") === "previous" && Boolean(view.from && view.to);
  if (view.compare && SORTS.includes(get("sort"))) view.sort = get("sort");
  if (PAIR.test(get("pair").toUpperCase())) view.pair = get("pair").toUpperCase();
  else if (CODE.test(get("profile").toUpperCase())) view.profile = get("profile").toUpperCase();
  else if (get("q")) view.q = get("q").slice(0, 200);
  return view;
}

export function formatView(view) {
  const p = new URLSearchParams();
  const d = defaultView();
  for (const k of ["tab", "country", "kind", "from", "to", "sort", "pair", "profile", "q"]) if (view[k] && view[k] !== d[k]) p.set(k, view[k]);
  if (view.compare && view.from && view.to) p.set("compare", "previous");
  else p.delete("sort");
  const s = p.toString();
  return s ? "?" + s : "";
}

/* the range query of /v1/pairs, /v1/summary and /v1/countries (months) */
export function rangeParams(view) {
  return { from: view.from, to: view.to, compare: view.compare && view.from && view.to ? "previous" : "" };
}

export function rangeLabel(view) {
  if (!view.from && !view.to) return "all time";
  if (view.from && view.to) return view.from === view.to ? view.from : `${view.from} to ${view.to}`;
  return view.from ? `from ${view.from}` : `until ${view.to}`;
}
