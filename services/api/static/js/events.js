/* One exchange as a list item: title, dates, host, delegations, status, partner, link. */

import { KIND_COLORS, el, fmt } from "./util.js";

export function dates(item) {
  return item.ends_on && item.ends_on !== item.starts_on ? `${item.starts_on} – ${item.ends_on}` : item.starts_on;
}

export function eventItem(item, nameOf, { change, onPair } = {}) {
  const cancelled = item.status === "cancelled";
  const delegations = item.delegations
    .map((d) => `${nameOf(d.country)}${d.participants ? ` (${fmt.format(d.participants)})` : ""}`)
    .join(", ");
  const title = item.url
    ? el("a", { href: item.url, target: "_blank", rel: "noopener noreferrer", text: item.title })
    : el("span", { text: item.title });
  const li = el("li", { class: `event${cancelled ? " cancelled" : ""}`, "data-key": item.key });
  li.append(
    el("div", { class: "event-title" },
      el("span", { class: "kind-dot", style: `background:${KIND_COLORS[item.kind] || "#888"}`, title: item.kind, "aria-hidden": "true" }),
      change ? el("span", { class: `badge change-${change}`, text: change }) : null,
      title,
      cancelled && change !== "cancelled" ? el("span", { class: "badge status-cancelled", text: "cancelled" }) : null),
    el("div", { class: "event-meta" },
      el("span", { text: dates(item) }),
      el("span", { text: `${nameOf(item.host_country)}${item.city ? `, ${item.city}` : ""} hosted ${delegations}` })),
    el("div", { class: "event-meta muted" },
      el("span", { text: `${item.kind} · ${item.status}${item.revision > 1 ? ` · revision ${item.revision}` : ""}` }),
      el("span", { text: `partner ${item.partner_id}` }),
      onPair && item.pairs.length
        ? el("span", {}, ...item.pairs.slice(0, 3).map((p) => el("button", { type: "button", class: "link", text: p, "aria-label": `open the pair ${p}`, onclick: () => onPair(p) })))
        : null),
  );
  return li;
}

export const EVENT_CSV_HEADER = ["key", "title", "kind", "status", "starts_on", "ends_on", "host_country", "delegations", "pairs", "partner_id", "url"];

export function eventRow(item) {
  return [item.key, item.title, item.kind, item.status, item.starts_on, item.ends_on || "", item.host_country, item.delegations.map((d) => d.country).join(" "), item.pairs.join(" "), item.partner_id, item.url || ""];
}
