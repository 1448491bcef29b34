/* Small shared helpers: DOM building, number formats, CSV and file downloads. */

export const KINDS = ["athletic", "cultural", "scientific", "educational", "professional", "humanitarian", "civic"];
export const KIND_COLORS = {
  athletic: "#60a5fa", cultural: "#f472b6", scientific: "#34d399", educational: "#fbbf24",
  professional: "#a78bfa", humanitarian: "#f87171", civic: "#22d3ee",
};
export const fmt = new Intl.NumberFormat("en");
export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

/* "USSR, Union of Soviet Socialist Republics" -> "USSR": former countries' ISO names are long */
export function shortName(code, name) {
  return code && code.length === 4 && name ? name.split(",")[0] : name;
}

export function signed(n) {
  return n > 0 ? `+${fmt.format(n)}` : n < 0 ? `\u2212${fmt.format(-n)}` : "0";
}

export function dominantKind(byKind) {
  let best = null;
  for (const [k, n] of Object.entries(byKind || {})) if (n > 0 && (best === null || n > byKind[best])) best = k;
  return best;
}

export function kindsText(byKind) {
  return Object.entries(byKind || {}).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(" · ");
}

/* RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled; CRLF lines. */
export function csv(header, rows) {
  const field = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [header, ...rows].map((r) => r.map(field).join(",")).join("\r\n") + "\r\n";
}

export function download(filename, blob) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function downloadCsv(filename, header, rows) {
  download(filename, new Blob([csv(header, rows)], { type: "text/csv;charset=utf-8" }));
}

export async function downloadPng(filename, chart) {
  const url = chart.getDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#121b2e" });
  download(filename, await (await fetch(url)).blob());
}

/* run fn at most once per `ms`, the last call winning (redraws coalesced) */
export function coalesce(fn, ms) {
  let timer = null;
  let again = false;
  const run = () => {
    timer = null;
    if (again) { again = false; fn(); timer = setTimeout(run, ms); }
  };
  return () => {
    again = true;
    if (timer === null) run();
  };
}
