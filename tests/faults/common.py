"""Shared pieces of the fault scenarios: the scale switch, the results table, SSE followers."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from handshake.cli_subscribe import SSEParser

LONG = os.environ.get("HANDSHAKE_FAULTS_LONG") == "1"
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-output" / ("faults-long.json" if LONG else "faults.json")


def scale(short: float, long: float) -> float:
    return long if LONG else short


def record(scenario: str, **figures: Any) -> None:
    """Append one row of the reliability table (printed by `make faults`, kept in docs/reliability.md)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows = [r for r in rows if r.get("scenario") != scenario]
    rows.append({"scenario": scenario, **figures})
    RESULTS.write_text(json.dumps(rows, indent=2, default=str))
    print(f"\n[faults] {scenario}: {figures}")


class StreamFollower(threading.Thread):
    """An SSE client that keeps the last snapshot of every pair, reconnecting with Last-Event-ID
    (and re-reading REST after a `reset`), like the dashboard does."""

    def __init__(self, api_url: str, params: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url = api_url
        self.params = params or {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.last_id: str | None = None
        self.connects = 0
        self.resets = 0
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def _apply(self, stats: dict[str, Any]) -> None:
        with self.lock:
            known = self.latest.get(stats["pair"])
            if known is None or known["version"] <= stats["version"]:
                self.latest[stats["pair"]] = stats

    def _refetch(self, client: httpx.Client) -> None:
        offset = 0
        while True:
            page = client.get("/v1/pairs", params={"limit": 500, "offset": offset, **self.params}).json()
            for item in page["items"]:
                self._apply(item)
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(10, read=30)) as client:
            while not self.stop_event.is_set():
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                parser = SSEParser()
                try:
                    with client.stream("GET", "/v1/stream", params=self.params, headers=headers) as response:
                        if response.status_code != 200:
                            raise httpx.HTTPError(f"status {response.status_code}")
                        self.connects += 1
                        if self.last_id is None:
                            self._refetch(client)
                        for chunk in response.iter_text():
                            for event in parser.feed(chunk):
                                if event.id:
                                    self.last_id = event.id
                                if event.event == "pair":
                                    self._apply(orjson.loads(event.data))
                                elif event.event == "reset":
                                    self.resets += 1
                                    self._refetch(client)
                            if self.stop_event.is_set():
                                return
                except (httpx.HTTPError, ValueError):
                    pass
                with contextlib.suppress(Exception):
                    self.stop_event.wait(0.5)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {
                p: {
                    "active_events": s["active_events"],
                    "participants": s["participants"],
                    "checksum": s["checksum"],
                }
                for p, s in self.latest.items()
                if s["active_events"]
            }

    def stop(self) -> None:
        self.stop_event.set()
        self.join(15)


def wait_until(predicate: Any, timeout: float, interval: float = 0.25) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"condition not met in {timeout}s")
