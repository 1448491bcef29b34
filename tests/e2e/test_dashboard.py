"""The dashboard in a real browser: real broker, real api, headless Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from handshake.settings import KafkaSettings
from schemas.records import encode_pair_stats
from services.api.main import build
from services.api.settings import ApiSettings
from services.api.testing import ServerThread, make_stats
from tests.e2e.browser import chromium_page

pytestmark = pytest.mark.e2e


SEED = [
    ("CN", "US", 42, {"athletic": 20, "cultural": 12, "scientific": 10}),
    ("DE", "FR", 35, {"cultural": 20, "educational": 15}),
    ("FR", "US", 28, {"professional": 18, "civic": 10}),
    ("JP", "US", 24, {"athletic": 14, "educational": 10}),
    ("BR", "PT", 19, {"cultural": 19}),
    ("FR", "GB", 17, {"civic": 9, "humanitarian": 8}),
    ("IN", "US", 15, {"scientific": 15}),
    ("DE", "PL", 12, {"civic": 12}),
    ("KR", "JP", 10, {"athletic": 6, "cultural": 4}),
    ("FR", "SN", 9, {"educational": 5, "humanitarian": 4}),
    ("DDDE", "SUHH", 7, {"athletic": 7}),
    ("MX", "US", 6, {"professional": 6}),
    ("IT", "ES", 5, {"cultural": 5}),
    ("AU", "NZ", 4, {"athletic": 4}),
]


def months(total: int, offset: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(total):
        month = f"2025-{(i * 5 + offset) % 12 + 1:02d}"
        out[month] = out.get(month, 0) + 1
    return out


@pytest.fixture
def api(kafka_settings: KafkaSettings, producer_factory: Any) -> Iterator[tuple[str, Any]]:
    producer = producer_factory()

    def produce(*snapshots: Any) -> None:
        for s in snapshots:
            key, value = encode_pair_stats(s)
            producer.send(kafka_settings.pair_stats_topic, key=key, value=value)
        producer.flush(timeout=10)

    produce(
        *[
            make_stats(a, b, events=n, by_kind=kinds, by_month=months(n, i), participants=n * 37 + i)
            for i, (a, b, n, kinds) in enumerate(SEED)
        ]
    )
    with ServerThread(build(ApiSettings(**kafka_settings.model_dump()))) as url:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield url, produce


def test_dashboard_ranks_filters_and_updates_live(api: tuple[str, Any], output_dir: Path) -> None:
    from playwright.sync_api import expect

    url, produce = api
    with chromium_page(1920, 1080) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        rows = page.locator("#pairs-body tr[data-pair]")
        expect(rows).to_have_count(len(SEED))
        expect(rows.first).to_have_attribute("data-pair", "CN-US")
        expect(rows.first).to_contain_text("China \u2013 United States")
        expect(page.locator("#total-pairs")).to_have_text(str(len(SEED)))
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        expect(page.locator("#map canvas")).not_to_have_count(0)
        page.evaluate("window.__noReload = true")

        # filter by country (alpha-3 accepted): only France's pairs remain
        page.fill("#f-country", "fra")
        page.press("#f-country", "Enter")
        expect(rows).to_have_count(4)
        for pair in rows.evaluate_all("rows => rows.map(r => r.dataset.pair)"):
            assert "FR" in pair.split("-")
        expect(page.locator("#pairs-caption")).to_contain_text("France")

        # a new snapshot produced to Kafka shows up without reload
        produce(make_stats("FR", "JP", events=50, by_kind={"cultural": 50}, by_month=months(50, 3)))
        expect(rows.first).to_have_attribute("data-pair", "FR-JP", timeout=5000)
        expect(rows).to_have_count(5)
        assert page.evaluate("window.__noReload") is True

        # keyboard: focus a row, Enter opens the detail panel
        page.click("#f-clear")
        expect(rows).to_have_count(len(SEED) + 1, timeout=15000)  # a loaded CI box was slow once
        row = page.locator('#pairs-body tr[data-pair="DE-FR"]')
        row.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#detail-title")).to_have_text("Germany \u2013 France")
        expect(page.locator("#detail-body")).to_contain_text("Checksum")
        expect(page.locator("#detail-body")).to_contain_text("No events match.")  # snapshots only, no events
        expect(page.locator("#detail-body")).to_contain_text("DE visited FR")
        expect(row).to_have_attribute("aria-current", "true")

        # accessibility essentials
        assert page.locator("#map").get_attribute("role") == "img"
        assert "strongest" in (page.locator("#map").get_attribute("aria-label") or "")
        assert "peak" in (page.locator("#time").get_attribute("aria-label") or "")
        assert page.locator(".totals").get_attribute("aria-live") == "polite"
        assert page.locator("#pairs-table caption").count() == 1
        assert page.locator("#pairs-table th[scope=col]").count() == 7
        assert not errors, errors
        page.wait_for_timeout(700)  # let the charts finish animating
        page.screenshot(path=str(output_dir / "dashboard.png"))
