"""`handshake events` against a running api (uvicorn in a thread, no Kafka), run as a user would."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson

from handshake.cli_subscribe import describe_change
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.api.testing import RecordMaker, ServerThread
from tests.samples import EVENT

EXE = str(Path(sys.executable).parent / "handshake")


def test_events_exports_csv_and_ndjson_and_names_bad_parameters(tmp_path: Path) -> None:
    app = create_app(ApiSettings())
    make = RecordMaker()
    app.state.index.apply(
        [
            make(
                {
                    **EVENT,
                    "event_id": f"e{i}",
                    "host_country": "CN",
                    "delegations": [{"country": "US"}],
                    "starts_on": f"{1970 + i}-04-10",
                    "title": f"Table tennis visit {i}",
                }
            )
            for i in range(12)
        ]
        + [make({**EVENT, "event_id": "other"})]
    )
    with ServerThread(app) as url:
        run = subprocess.run(
            [EXE, "events", "--url", url, "--pair", "USA-CHN", "--from", "1970", "--to", "1979"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        rows = list(csv.DictReader(io.StringIO(run.stdout, newline="")))
        assert [r["event_id"] for r in rows] == [f"e{i}" for i in range(10)]  # oldest first
        assert "10 events written" in run.stderr
        out = tmp_path / "out.ndjson"
        run = subprocess.run(
            [EXE, "events", "--url", url, "--q", "tennis", "--format", "ndjson", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert len([orjson.loads(line) for line in out.read_text().splitlines()]) == 12
        run = subprocess.run(
            [EXE, "events", "--url", url, "--pair", "FR-FRA"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 1 and "400" in run.stderr and "query:pair" in run.stderr


def test_a_change_reads_as_one_line() -> None:
    line = describe_change(
        {"change": "cancelled", "item": {**EVENT, "key": "p1/e-1", "revision": 2, "host_country": "FR"}}
    )
    assert line.startswith("cancelled") and "DE>FR" in line and "p1/e-1 r2" in line
