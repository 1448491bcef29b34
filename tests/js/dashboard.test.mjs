// The dashboard's pure functions, run by Node's own test runner (tests/unit/test_dashboard_js.py).
import assert from "node:assert/strict";
import test from "node:test";

import { defaultView, formatView, parseView, rangeParams } from "../../services/api/static/js/state.js";
import { monthIndex, monthOf, periods } from "../../services/api/static/js/timeline.js";
import { csv, dominantKind, shortName, signed } from "../../services/api/static/js/util.js";

test("a view survives the URL both ways", () => {
  const view = { ...defaultView(), tab: "graph", country: "FR", kind: "civic", from: "1970-01", to: "1979-12", compare: true, sort: "-change", pair: "CN-US" };
  const url = formatView(view);
  assert.equal(url, "?tab=graph&country=FR&kind=civic&from=1970-01&to=1979-12&sort=-change&pair=CN-US&compare=previous");
  assert.deepEqual(parseView(url), view);
  assert.equal(formatView(defaultView()), "");
});

test("a hand-edited link still opens: bad values are dropped, reversed ranges swapped", () => {
  const view = parseView("?tab=pie&country=France&kind=chess&from=1979-12&to=1970-01&pair=cn-us&compare=previous&sort=change");
  assert.equal(view.tab, "map");
  assert.equal(view.country, "");
  assert.equal(view.kind, "");
  assert.deepEqual([view.from, view.to], ["1970-01", "1979-12"]);
  assert.equal(view.pair, "CN-US");
  assert.equal(view.compare, true);
  assert.equal(view.sort, "change");
  assert.equal(parseView("?from=1970-13").from, "");
  assert.equal(parseView("?compare=previous&from=1970-01").compare, false); // needs both ends
  assert.equal(parseView("?sort=change").sort, "events"); // needs compare
  assert.equal(parseView("?pair=CN-US&profile=FR&q=x").profile, ""); // one detail at a time
  assert.equal(parseView("?profile=suhh").profile, "SUHH");
  assert.equal(parseView("?q=" + "x".repeat(500)).q.length, 200);
});

test("the range query sends compare only with both ends", () => {
  assert.deepEqual(rangeParams({ ...defaultView(), from: "1970-01", compare: true }), { from: "1970-01", to: "", compare: "" });
  assert.deepEqual(rangeParams({ ...defaultView(), from: "1970-01", to: "1970-12", compare: true }), { from: "1970-01", to: "1970-12", compare: "previous" });
});

test("spans of decades roll up to years, short spans stay monthly", () => {
  const history = { "1957-07": 2, "1959-07": 1, "1959-09": 4, "1998-02": 1, "2004-03": 3 };
  assert.deepEqual(periods(history), { unit: "year", rows: [["1957", 2], ["1959", 5], ["1998", 1], ["2004", 3]] });
  const recent = { "2025-01": 1, "2025-03": 2 };
  assert.deepEqual(periods(recent), { unit: "month", rows: [["2025-01", 1], ["2025-03", 2]] });
  assert.deepEqual(periods({}), { unit: "month", rows: [] });
  assert.equal(monthOf(monthIndex("1999-12") + 1), "2000-01");
});

test("CSV quotes what RFC 4180 says, with CRLF lines", () => {
  assert.equal(csv(["a", "b"], [["x,y", 'say "hi"'], [1, null], ["line\nbreak", ""]]), 'a,b\r\n"x,y","say ""hi"""\r\n1,\r\n"line\nbreak",\r\n');
});

test("small formatting rules", () => {
  assert.equal(shortName("SUHH", "USSR, Union of Soviet Socialist Republics"), "USSR");
  assert.equal(shortName("KR", "Korea, Republic of"), "Korea, Republic of"); // current names stay whole
  assert.equal(signed(3), "+3");
  assert.equal(signed(-1200), "\u22121,200");
  assert.equal(dominantKind({ civic: 2, athletic: 5 }), "athletic");
  assert.equal(dominantKind({}), null);
});

test("a ring across the antimeridian continues past 180 instead of spanning the map", async () => {
  const { unwrapRing } = await import("../../services/api/static/js/worldmap.js");
  assert.deepEqual(unwrapRing([[179, 0], [-179, 0], [-179, 1], [179, 1]]), [[179, 0], [181, 0], [181, 1], [179, 1]]);
  const france = [[2, 46], [3, 47], [1, 48]];
  assert.equal(unwrapRing(france), france);
});

test("ties are coloured by kind, or by rise and fall when comparing periods", async () => {
  const { tieColor } = await import("../../services/api/static/js/worldmap.js");
  assert.equal(tieColor({ change: null }, "athletic"), "#60a5fa");
  assert.equal(tieColor({ change: 3 }, "athletic"), "#4ade80");
  assert.equal(tieColor({ change: -1 }, "athletic"), "#f87171");
  assert.equal(tieColor({ change: 0 }, "athletic"), "#9fb3d1");
});

test("window sums and the previous window agree with the api's compare=previous", async () => {
  const { sumMonths, previousWindow } = await import("../../services/api/static/js/timeline.js");
  const byMonth = { "1969-12": 1, "1970-01": 2, "1970-12": 3, "1971-01": 4 };
  assert.equal(sumMonths(byMonth, "1970-01", "1970-12"), 5);
  assert.equal(sumMonths(byMonth, "1970-06", ""), 7);
  assert.equal(sumMonths(byMonth, "", ""), 10);
  assert.deepEqual(previousWindow("1970-01", "1970-12"), ["1969-01", "1969-12"]);
  assert.deepEqual(previousWindow("1971-03", "1971-03"), ["1971-02", "1971-02"]);
});
