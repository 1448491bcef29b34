"""`handshake up` end to end: the whole platform from one command, demo data on the dashboard,
a crashed service restarted, Ctrl-C leaving no process behind, and a second `up` resuming."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from handshake.broker import free_cluster_port, free_port, pid_alive
from tests.harness import EXE
from tests.loadgen import api_pairs

pytestmark = pytest.mark.e2e


class Output:
    """Lines of a child's stdout, read by a thread (select() on a buffered pipe misses lines)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def until(self, pattern: str, timeout: float) -> str:
        """Read until a line matches; return everything read so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"`handshake up` exited ({self.proc.returncode}):\n{''.join(self.seen)}"
                    ) from None
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return "".join(self.seen)
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s:\n{''.join(self.seen)}")


def _start_up(data: Path, ports: dict[str, int], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            EXE,
            "up",
            "--data-dir",
            str(data),
            "--kafka-port",
            str(ports["kafka"]),
            "--ingest-port",
            str(ports["ingest"]),
            "--api-port",
            str(ports["api"]),
            "--aggregator-port",
            str(ports["aggregator"]),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stop(proc: subprocess.Popen[str], data: Path) -> list[int]:
    info = json.loads((data / "up.json").read_text())
    pids = [int(p) for p in info["children"].values()]
    kafka_pids = [int(p.read_text()) for p in (data / "kafka").glob("node-*/broker.pid")]
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    return pids + kafka_pids


def _pairs(api: str) -> dict[str, int]:
    return {pair: stats["active_events"] for pair, stats in api_pairs(api).items()}


def test_up_runs_the_platform_with_demo_data_and_down_leaves_nothing(
    tmp_path: Path, output_dir: Path
) -> None:
    data = tmp_path / "platform"
    ports = {
        "kafka": free_cluster_port(),
        "ingest": free_port(),
        "api": free_port(),
        "aggregator": free_port(),
    }
    api = f"http://127.0.0.1:{ports['api']}"
    proc = _start_up(data, ports, "--demo-rate", "20")
    out = Output(proc)
    try:
        banner = out.until(r"Ctrl-C", 240)
        assert f"{api}/" in banner
        key = re.search(r"(hsk_\S+)", banner)
        assert key, banner
        assert "curl -X POST" in banner
        loaded = re.search(r"history: (\d+) documented exchanges loaded, 0 already there", banner)
        assert loaded and int(loaded.group(1)) >= 30, banner
        # the real history is searchable in the event index at once
        deadline = time.monotonic() + 30
        found: list[dict[str, object]] = []
        while time.monotonic() < deadline and not found:
            found = httpx.get(f"{api}/v1/events", params={"q": "ping-pong", "pair": "US-CN"}).json()["items"]
            time.sleep(0.5)
        assert "pingpong-1971" in {i["event_id"] for i in found}
        # demo events flow partner -> ingest -> Kafka -> aggregator -> Kafka -> api
        deadline = time.monotonic() + 90
        pairs: dict[str, int] = {}
        while time.monotonic() < deadline and sum(pairs.values()) < 10:
            time.sleep(1)
            pairs = _pairs(api)
        assert sum(pairs.values()) >= 10, pairs

        # the dashboard shows them in a real browser
        from tests.e2e.browser import chromium_page

        with chromium_page() as page:
            page.goto(f"{api}/")
            page.wait_for_selector("table tbody tr", timeout=20_000)
            assert page.locator("table tbody tr").count() > 0
            page.screenshot(path=str(output_dir / "platform-dashboard.png"))

        # a crashed service is restarted by the supervisor, and says so
        info = json.loads((data / "up.json").read_text())
        os.killpg(int(info["children"]["api"]), signal.SIGKILL)
        out.until(r"api exited .* restarting", 60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        before = _pairs(api)
        assert sum(before.values()) >= sum(pairs.values())
    finally:
        pids = _stop(proc, data) if (data / "up.json").exists() else []
    assert proc.returncode == 0
    assert pids and not [p for p in pids if pid_alive(p)], "processes left behind"
    assert not (data / "up.json").exists()

    # a second `up` resumes from the same data dir (no demo): the aggregates come back, and the
    # saved demo partner can still push, counted on top of the resumed state
    proc = _start_up(data, ports, "--no-demo")
    out = Output(proc)
    try:
        banner = out.until(r"Ctrl-C", 240)
        assert "demo partner key" not in banner
        after, previous = _pairs(api), None
        while after != previous:  # settle: the first run's last acknowledged events may still arrive
            time.sleep(2)
            previous, after = after, _pairs(api)
        # every pair seen before the stop is still there, unless the demo feed cancelled its last
        # events after `before` was read: the event index (the log's accepted state) says which
        for pair in set(before) - set(after):
            held = httpx.get(f"{api}/v1/events", params={"pair": pair, "limit": 500}).json()["items"]
            assert held and all(i["status"] == "cancelled" for i in held), (pair, held)
        saved = json.loads((data / "demo-partner.json").read_text())
        event = {
            "event_id": "resume-check",
            "kind": "cultural",
            "title": "Resumed",
            "host_country": "IS",
            "delegations": [{"country": "GL", "participants": 3}],
            "starts_on": "2026-05-01",
        }
        ingest = f"http://127.0.0.1:{ports['ingest']}"
        answer = httpx.post(
            f"{ingest}/v1/events", json=event, headers={"Authorization": f"Bearer {saved['key']}"}
        )
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _pairs(api).get("GL-IS") != 1:
            time.sleep(0.5)
        final = _pairs(api)
        assert final.get("GL-IS") == 1
        assert {p: n for p, n in final.items() if p != "GL-IS"} == after
    finally:
        pids = _stop(proc, data)
    assert not [p for p in pids if pid_alive(p)]
    result = subprocess.run(
        [EXE, "down", "--data-dir", str(data)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "nothing was running"
