"""The export streams: 200,000 rows through the real HTTP server with flat memory (RSS, not time)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.api.index.service import EventIndex
from services.api.testing import RecordMaker, free_port
from tests.samples import EVENT

ROWS = 200_000


SERVER = """
import sys, uvicorn
from pathlib import Path
from services.api.app import create_app
from services.api.index.service import EventIndex
from services.api.settings import ApiSettings
app = create_app(ApiSettings(), index=EventIndex(Path(sys.argv[1]), "events"))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


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
    """The api in its own process, so that its memory is its own: peak RSS (VmHWM) while it
    streams the whole result, against its RSS after a warm-up request."""
    path = tmp_path / "events.sqlite3"
    index = EventIndex(path, "events")
    fill(index, ROWS)
    index.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(path), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the api did not start"
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=120) as client:
            client.get("/v1/events", params={"format": "csv", "limit": 10}).raise_for_status()  # warm up
            before = status_kib(proc.pid, "VmRSS") * 1024
            size = lines = 0
            with client.stream("GET", "/v1/events", params={"format": "csv"}) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\r\n")
            peak = status_kib(proc.pid, "VmHWM") * 1024
    finally:
        proc.terminate()
        proc.wait(30)
    growth = peak - before
    print(
        f"\nexport: {lines - 1} rows, {size / 1e6:.0f} MB, api RSS {before / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB"
    )
    assert lines - 1 == ROWS
    assert size > 100_000_000  # the result is far larger than the bound below
    assert growth < 40_000_000, (
        f"the api's RSS grew {growth / 1e6:.0f} MB while streaming {size / 1e6:.0f} MB"
    )
