"""The export streams: 200,000 rows through the real HTTP server with flat memory (RSS, not time)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from services.api.app import create_app
from services.api.index.service import EventIndex
from services.api.settings import ApiSettings
from services.api.testing import RecordMaker, ServerThread
from tests.samples import EVENT

ROWS = 200_000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fill(index: EventIndex, rows: int) -> None:
    """1,000 real events through the index, then copies of their rows up to ``rows`` (fast)."""
    make = RecordMaker()
    description = "A long description of the exchange. " * 12
    index.apply(
        [
            make(
                {
                    **EVENT,
                    "event_id": f"seed-{i}",
                    "starts_on": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
                    "title": f'Exchange {i}, with "quotes"',
                    "description": description,
                }
            )
            for i in range(1000)
        ]
    )
    conn = index.open().conn
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO events (ord, key, partner_id, revision, kind, status, received_at, pairs, countries,"
        " title, doc) SELECT e.ord + 2000 * n.i, e.key || '-' || n.i, partner_id, revision, kind, status,"
        " received_at, pairs, countries, title, doc "
        "FROM events e, n",
        (rows // 1000 - 1,),
    )
    conn.execute("COMMIT")


def test_a_200k_row_export_streams_with_flat_memory(tmp_path: Path) -> None:
    index = EventIndex(tmp_path / "events.sqlite3", "events")
    fill(index, ROWS)
    app = create_app(ApiSettings(), index=index)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.01)

    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.get("/v1/events", params={"format": "csv", "limit": 10}).raise_for_status()  # warm up
        before = rss_bytes()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        size = lines = 0
        with client.stream("GET", "/v1/events", params={"format": "csv"}) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\r\n")
        stop.set()
        sampler.join()
    growth = peak[0] - before
    print(
        f"\nexport: {lines - 1} rows, {size / 1e6:.0f} MB, RSS {before / 1e6:.0f} MB -> peak {peak[0] / 1e6:.0f} MB"
    )
    assert lines - 1 == ROWS
    assert size > 100_000_000  # the result is far larger than the bound below
    assert growth < 40_000_000, f"RSS grew {growth / 1e6:.0f} MB while streaming {size / 1e6:.0f} MB"
