"""The dashboard on the whole pipeline: partner pushes -> ingest -> Kafka -> aggregator and event
index -> api -> headless Chromium. Map, time brush, URL state, pair events (live), search,
country profile, downloads, keyboard, token, and the three screen sizes."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from handshake.platform import HISTORY
from tests.e2e.browser import chromium_page
from tests.harness import Harness

pytestmark = pytest.mark.e2e

TOKEN = "wall-screen-token"
MODERN = [  # recent exchanges beside the documented history (1955-2018)
    ("fr-de-1", "FR", ["DE"], "2025-03-10", "cultural", "Orchestra academy in Lyon"),
    ("fr-de-2", "DE", ["FR"], "2025-05-02", "educational", "Twin-town school week"),
    ("jp-fr-1", "JP", ["FR"], "2025-06-20", "athletic", "Judo friendship meet"),
    ("br-pt-1", "PT", ["BR"], "2025-09-12", "cultural", "Fado and samba evenings"),
    ("ke-gb-1", "KE", ["GB"], "2025-11-03", "scientific", "Rift valley field school"),
]


def modern_event(
    event_id: str, host: str, guests: list[str], day: str, kind: str, title: str
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": kind,
        "title": title,
        "host_country": host,
        "delegations": [{"country": c, "participants": 12} for c in guests],
        "starts_on": day,
        "status": "confirmed",
    }


@pytest.fixture(scope="module")
def platform(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    harness = Harness(kafka_bootstrap, tmp_path_factory.mktemp("dashboard-platform"))
    try:
        harness.start_all()
        secured = harness.add("api-token", {"HANDSHAKE_API_TOKENS": TOKEN}).start()
        _, key = harness.partner("dashboard-history")
        ingest = httpx.Client(
            base_url=harness["ingest"].url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        history = [json.loads(line) for line in HISTORY.read_text().splitlines() if line.strip()]
        body = history + [modern_event(*m) for m in MODERN]
        answer = ingest.post("/v1/events/batch", json=body)
        assert answer.status_code == 200 and all(r["status"] == "accepted" for r in answer.json()["results"])
        api = harness["api"].url
        deadline = time.monotonic() + 90
        auth = {"Authorization": f"Bearer {TOKEN}"}
        while not secured.ready(headers=auth):  # its /readyz needs the token
            assert secured.alive() and time.monotonic() < deadline, secured.tail()
            time.sleep(0.2)
        while True:  # the aggregates and the index have both taken every event
            total = httpx.get(f"{api}/v1/events", params={"limit": 1}).json()["total"]
            rec = httpx.get(f"{api}/v1/reconcile").json()
            if total == len(body) and rec["caught_up"] and not rec["differing"] and rec["pairs"]:
                break
            assert time.monotonic() < deadline, (total, rec)
            time.sleep(0.3)
        yield {"api": api, "secured": secured.url, "ingest": ingest, "pushed": len(body)}
        ingest.close()
    finally:
        harness.stop()


@pytest.fixture
def browser_page() -> Iterator[Callable[..., Any]]:
    """Pages of headless Chromium; every console error or page error fails the test."""
    errors: list[str] = []
    stack: list[Any] = []

    def open_page(width: int = 1920, height: int = 1080) -> Any:
        ctx = chromium_page(width, height)
        page = ctx.__enter__()
        stack.append(ctx)
        page.on(
            "console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        return page

    yield open_page
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
    assert not errors, errors


def ready(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)


def ranked(page: Any) -> list[str]:
    return list(
        page.locator("#pairs-body tr[data-pair]").evaluate_all("rows => rows.map(r => r.dataset.pair)")
    )


def series(page: Any, chart: str, series_id: str) -> list[dict[str, Any]]:
    return list(
        page.evaluate(
            "([chart, id]) => echarts.getInstanceByDom(document.getElementById(chart)).getOption()"
            ".series.find(s => s.id === id).data",
            [chart, series_id],
        )
    )


def test_map_draws_the_top_ties_and_places_former_countries(
    platform: dict[str, Any], browser_page: Any
) -> None:
    from playwright.sync_api import expect

    page = browser_page()
    ready(page, platform["api"] + "/")
    expect(page.locator("#pairs-body tr[data-pair]").first).to_be_visible()
    top = httpx.get(platform["api"] + "/v1/pairs", params={"limit": 50}).json()["items"]
    assert ranked(page) == [p["pair"] for p in top]
    ties = series(page, "map", "ties")
    assert [t["pair"] for t in ties] == [p["pair"] for p in top]  # every tie has both ends on the map
    strongest = max(t["lineStyle"]["width"] for t in ties)
    assert ties[0]["lineStyle"]["width"] == strongest  # width = events
    places = {p["code"]: p["value"] for p in series(page, "map", "places")}
    assert places["SUHH"] == [37.62, 55.76]  # the Soviet Union at Moscow
    assert places["DDDE"] == [13.4, 52.52]  # East Germany at Berlin
    shaded = {d["name"] for d in series(page, "map", "countries")}
    assert {"US", "SUHH", "CN", "FR"} <= shaded
    # the shading's text alternative: a table of the countries, as /v1/countries ranks them
    activity = httpx.get(platform["api"] + "/v1/countries").json()["items"]
    first = page.locator("#map-table tbody tr").first.locator("th")
    assert (
        first.text_content()
        == f"{activity[0]['country']['name'].split(',')[0]} ({activity[0]['country']['code']})"
    )
    # keyboard focus on the map steps through the ties and shows the figures; Enter opens one
    page.focus("#map")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#map-focus")).to_contain_text(
        f"1 of {len(ties)}: {top[0]['countries'][0]['name'].split(',')[0]}"
    )
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{platform['api']}/?pair={top[0]['pair']}")
    # the graph stays as the second view
    page.click("#tab-graph")
    expect(page.locator("#graph canvas")).to_have_count(1)
    expect(page.locator("#map-pane")).to_be_hidden()
    assert "tab=graph" in page.url


def test_brushing_a_range_filters_the_page_and_the_url_restores_it(
    platform: dict[str, Any], browser_page: Any
) -> None:
    from playwright.sync_api import expect

    api = platform["api"]
    page = browser_page()
    ready(page, api + "/")
    assert page.locator("#time-title").inner_text() == "Pair-events by year"  # 1955..2025: years
    years = page.evaluate(
        "() => [...document.querySelectorAll('#time-table tbody th')].map(t => t.textContent)"
    )
    assert "1971" in years and "1959-07" not in years
    before = ranked(page)
    # drag across 1960..1979 on the time axis
    box = page.locator("#time").bounding_box()
    x0, x1 = page.evaluate(
        "() => { const c = echarts.getInstanceByDom(document.getElementById('time'));"
        " return [Date.UTC(1960, 2, 1), Date.UTC(1979, 9, 1)].map(t => c.convertToPixel({xAxisIndex: 0}, t)); }"
    )
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + x0, y)
    page.mouse.down()
    page.mouse.move(box["x"] + x1, y, steps=10)
    page.mouse.up()
    expect(page).to_have_url(f"{api}/?from=1960-01&to=1979-12")
    expected = httpx.get(api + "/v1/pairs", params={"from": "1960-01", "to": "1979-12", "limit": 50}).json()
    expect(page.locator("#pairs-caption")).to_contain_text(f"of {expected['total']} country pairs")
    assert ranked(page) == [p["pair"] for p in expected["items"]] != before
    assert "FR-JP" not in ranked(page)  # a 2025-only tie
    expect(page.locator("#events-label")).to_contain_text("1960-01 to 1979-12")
    summary = httpx.get(api + "/v1/summary", params={"from": "1960-01", "to": "1979-12"}).json()
    expect(page.locator("#total-events")).to_have_text(str(summary["trend"]["events"]))
    # compare with the previous period: the change column and a ranking by it
    page.check("#f-compare")
    page.select_option("#f-sort", "change")
    expect(page).to_have_url(f"{api}/?from=1960-01&to=1979-12&sort=change&compare=previous")
    expect(page.locator("#pairs-table th.c-change")).to_be_visible()
    rising = httpx.get(
        api + "/v1/pairs",
        params={"from": "1960-01", "to": "1979-12", "compare": "previous", "sort": "change", "limit": 50},
    ).json()
    expect(page.locator("#pairs-body tr[data-pair]").first).to_have_attribute(
        "data-pair", rising["items"][0]["pair"]
    )
    # a reload of that URL reproduces the view
    shown = ranked(page)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#f-from") == "1960-01" and page.input_value("#f-to") == "1979-12"
    assert page.is_checked("#f-compare") and page.input_value("#f-sort") == "change"
    assert ranked(page) == shown
    # keyboard inputs set the same range; Clear goes back to all time
    page.fill("#f-from", "1971-01")
    page.fill("#f-to", "1971-12")
    page.dispatch_event("#f-to", "change")
    expect(page).to_have_url(f"{api}/?from=1971-01&to=1971-12&sort=change&compare=previous")
    page.click("#f-clear")
    expect(page).to_have_url(f"{api}/")
    expect(page.locator("#pairs-body tr[data-pair]")).to_have_count(len(before))


def test_a_pair_lists_its_events_and_a_new_one_appears_live(
    platform: dict[str, Any], browser_page: Any
) -> None:
    from playwright.sync_api import expect

    api = platform["api"]
    page = browser_page()
    ready(page, api + "/")
    page.evaluate("window.__noReload = true")
    page.locator('#pairs-body tr[data-pair="CN-US"]').click()
    expect(page).to_have_url(f"{api}/?pair=CN-US")
    expect(page.locator("#detail-title")).to_have_text("China \u2013 United States")
    events = page.locator("#detail-body ol.events li.event")
    listed = httpx.get(api + "/v1/events", params={"pair": "CN-US", "sort": "-starts_on", "limit": 20}).json()
    expect(events).to_have_count(len(listed["items"]))
    expect(events.first).to_contain_text(listed["items"][0]["title"])
    expect(page.locator("#detail-body")).to_contain_text("US table tennis team visits China")
    expect(page.locator("#events-heading")).to_contain_text(f"({listed['total']}, newest first)")
    # a new event for the pair, pushed by a partner, appears without a reload
    event = modern_event(
        "cn-us-live", "US", ["CN"], "2026-04-10", "scientific", "Panda conservation workshop"
    )
    answer = platform["ingest"].post("/v1/events", json=event)
    assert answer.status_code == 202, answer.text
    expect(events.first).to_contain_text("Panda conservation workshop", timeout=15_000)
    expect(events.first.locator(".badge.change-new")).to_have_count(1)
    expect(page.locator("#ticker-list")).to_contain_text("Panda conservation workshop")
    # its cancellation is marked in place
    assert platform["ingest"].delete("/v1/events/cn-us-live").status_code in (200, 202)
    expect(page.locator('#detail-body li.event.cancelled[data-key$="/cn-us-live"]')).to_have_count(
        1, timeout=15_000
    )
    assert page.evaluate("window.__noReload") is True
    # the figures follow: the aggregate counts the cancelled event as cancelled
    cancelled = page.locator("#detail-body .facts div:has(dt:text-is('Cancelled')) dd")
    expect(cancelled).to_have_text("1", timeout=15_000)


def test_search_country_profile_and_downloads(
    platform: dict[str, Any], browser_page: Any, output_dir: Path
) -> None:
    from playwright.sync_api import expect

    api = platform["api"]
    page = browser_page()
    ready(page, api + "/")
    # search the index by a word of a title
    page.fill("#q", "orchestra")
    page.press("#q", "Enter")
    expect(page).to_have_url(f"{api}/?q=orchestra")
    results = page.locator("#detail-body li.event")
    expect(results.first).to_be_visible()
    titles = results.evaluate_all("items => items.map(i => i.querySelector('.event-title').textContent)")
    assert any("Philadelphia Orchestra tours China" in t for t in titles), titles
    assert any("Orchestra academy in Lyon" in t for t in titles), titles
    # the ranking's CSV parses and matches the table
    with page.expect_download() as download:
        page.click("[data-csv=ranking]")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [r["pair"] for r in rows] == ranked(page)
    cells = page.locator("#pairs-body tr[data-pair]").first.locator("td").all_inner_texts()
    assert rows[0]["value"] == cells[2].replace(",", "") and rows[0]["rank"] == "1"
    # the search results as CSV, all pages, from the api
    with page.expect_download() as download:
        page.click("#detail-actions button:has-text('CSV')")
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert {r["title"] for r in exported} >= {
        "Philadelphia Orchestra tours China",
        "Orchestra academy in Lyon",
    }
    # the time chart and the map as PNG
    for what in ("time", "map"):
        with page.expect_download() as download:
            page.click(f"[data-png={what}]")
        assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a country on the map opens its profile
    pixel = page.evaluate(
        "() => echarts.getInstanceByDom(document.getElementById('map')).convertToPixel({geoIndex: 0}, [-99, 39])"
    )
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + pixel[0], box["y"] + pixel[1])
    expect(page).to_have_url(f"{api}/?profile=US")
    expect(page.locator("#detail-title")).to_have_text("United States (US)")
    profile = httpx.get(api + "/v1/countries/US").json()
    partners = page.locator("#detail-body ol.partners li")
    expect(partners).to_have_count(min(25, len(profile["partners"])))
    expect(partners.first).to_contain_text(profile["partners"][0]["country"]["name"].split(",")[0])
    # a partner in the profile opens the pair
    partners.first.locator("button").click()
    expect(page).to_have_url(f"{api}/?pair={profile['partners'][0]['pair']}")
    # Back returns to the profile
    page.go_back()
    expect(page.locator("#detail-title")).to_have_text("United States (US)")


def test_keyboard_alone_reaches_the_pair_detail(platform: dict[str, Any], browser_page: Any) -> None:
    from playwright.sync_api import expect

    page = browser_page()
    ready(page, platform["api"] + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.dataset.pair")
    assert focused == ranked(page)[0]
    page.keyboard.press("ArrowDown")
    second = page.evaluate("document.activeElement.dataset.pair")
    assert second == ranked(page)[1]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # visible focus
    page.keyboard.press("Enter")
    expect(page.locator("#detail-title")).not_to_have_text("Details")
    assert f"pair={second}" in page.url
    expect(page.locator("#detail-body li.event").first).to_be_visible()


def test_the_page_works_behind_the_api_token(platform: dict[str, Any], browser_page: Any) -> None:
    from playwright.sync_api import expect

    page = browser_page()
    page.goto(platform["secured"] + "/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.press("#token-input", "Enter")
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    expect(page.locator("#pairs-body tr[data-pair]").first).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("#ticker-list li.event").first).to_be_visible()


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (390, 844)])
def test_screens(
    platform: dict[str, Any], browser_page: Any, output_dir: Path, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    page = browser_page(width, height)
    ready(page, platform["api"] + "/?pair=SUHH-US")
    expect(page.locator("#detail-body li.event").first).to_be_visible()
    page.wait_for_timeout(500)
    scroll_w, scroll_h = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    assert scroll_w <= width, "the page scrolls sideways"
    if width >= 1920:
        assert scroll_h <= height, f"a wall screen must not scroll: {scroll_h} px"
    # the ranking's pair names are readable, not cut to a letter
    name = page.locator("#pairs-body tr[data-pair] .pair-name").first
    assert name.evaluate(
        "n => n.scrollWidth <= n.parentElement.clientWidth + 1 || n.parentElement.clientWidth > 140"
    )
    if width <= 820:  # one column
        boxes = [page.locator(s).bounding_box() for s in (".main-panel", ".table-panel", ".detail-panel")]
        assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"] and abs(boxes[0]["x"] - boxes[1]["x"]) < 2
    shot = output_dir / f"dashboard-{width}x{height}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_kind_and_country_filters_change_the_totals_and_the_time_chart(
    platform: dict[str, Any], browser_page: Any
) -> None:
    from playwright.sync_api import expect

    api = platform["api"]
    page = browser_page()
    ready(page, api + "/?kind=athletic")
    summary = httpx.get(api + "/v1/summary").json()
    expect(page.locator("#events-label")).to_have_text("Active athletic pair-events")
    expect(page.locator("#total-events")).to_have_text(f"{summary['by_kind']['athletic']:,}")
    athletic = httpx.get(api + "/v1/pairs", params={"kind": "athletic", "limit": 50}).json()
    assert ranked(page) == [p["pair"] for p in athletic["items"]]
    # a country: its totals and its own time series
    page.select_option("#f-kind", "")
    page.fill("#f-country", "suhh")
    page.press("#f-country", "Enter")
    expect(page).to_have_url(f"{api}/?country=SUHH")
    soviet = httpx.get(api + "/v1/countries/SUHH").json()
    expect(page.locator("#events-label")).to_have_text("Active pair-events with USSR")
    expect(page.locator("#total-events")).to_have_text(f"{soviet['totals']['active_events']:,}")
    expect(page.locator("#total-countries")).to_have_text(str(len(soviet["partners"])))
    expect(page.locator("#time-title")).to_have_text("Pair-events by year: USSR")
    years = page.evaluate(
        "() => [...document.querySelectorAll('#time-table tbody th')].map(t => t.textContent)"
    )
    assert years == sorted({m[:4] for m in soviet["totals"]["by_month"]})
