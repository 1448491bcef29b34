"""End-to-end latency: from ingest's 202 to the SSE update that reflects the event.

Starts a broker (or uses HANDSHAKE_KAFKA_BOOTSTRAP) and the three services as real processes,
pushes new events at a steady rate through ingest (100/s, then 1,000/s by default) from several
sender processes (aiohttp, one schedule shared through the monotonic clock), follows
/v1/stream, and for every event measures the time from its 202 to the first pair snapshot whose
count includes it. Writes bench/results/latency.json and a plot per rate
(bench/results/latency_<rate>.png).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handshake.broker import temporary_cluster  # noqa: E402
from handshake.cli_subscribe import SSEParser  # noqa: E402
from handshake.topics import ensure_topics  # noqa: E402
from tests.harness import Harness  # noqa: E402

COUNTRIES = ["US", "CN", "FR", "DE", "JP", "BR", "IN", "KE", "MX", "GB", "AU", "NG", "EG", "AR", "CA", "IT"]
PAIRS = [(a, b) for i, a in enumerate(COUNTRIES) for b in COUNTRIES[i + 1 :]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


async def follow(api: str, out: list[tuple[float, str, int]], stop: asyncio.Event) -> None:
    """Record every pair snapshot the api streams: (monotonic time, pair, active events)."""
    parser = SSEParser()
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", f"{api}/v1/stream") as response,
    ):
        async for chunk in response.aiter_text():
            now = time.monotonic()
            for event in parser.feed(chunk):
                if event.event == "pair":
                    stats = orjson.loads(event.data)
                    out.append((now, stats["pair"], stats["active_events"]))
            if stop.is_set():
                return


def body(run: str, n: int) -> tuple[str, bytes]:
    """Event ``n`` of a run: (its pair, the JSON body); every event of every run is new and unique
    (an id sent again is a duplicate: acknowledged, but no snapshot ever reflects it)."""
    host, guest = PAIRS[n % len(PAIRS)]
    event = {
        "event_id": f"lat-{run}-{n}",
        "kind": "cultural",
        "title": "latency",
        "host_country": host,
        "delegations": [{"country": guest, "participants": 1}],
        "starts_on": "2026-05-01",
    }
    return "-".join(sorted((host, guest))), orjson.dumps(event)


async def _send(
    ingest: str, key: str, rate: float, seconds: float, first: int, stride: int, t0: float
) -> tuple[list[tuple[str, float]], int]:
    run = f"{rate:.0f}"
    """Send events first, first+stride, ... each at t0 + n/rate; (pair, 202 time) of each."""
    import aiohttp

    acks: list[tuple[str, float]] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(ingest, headers=headers, connector=connector) as session:

        async def one(n: int) -> None:
            pair, data = body(run, n)
            async with session.post("/v1/events", data=data) as response:
                await response.read()
                if response.status == 202:
                    acks.append((pair, time.monotonic()))

        tasks = []
        n = first
        while n / rate < seconds:
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
            n += stride
        await asyncio.gather(*tasks)
    return acks, len(tasks)


def sender(
    ingest: str, key: str, rate: float, seconds: float, first: int, stride: int, t0: float, conn: Any
) -> None:
    """A sender process (aiohttp): its share of a schedule common to all senders."""
    conn.send(asyncio.run(_send(ingest, key, rate, seconds, first, stride, t0)))
    conn.close()


def match(
    acks: list[tuple[str, float]], snapshots: list[tuple[float, str, int]]
) -> list[tuple[float, float]]:
    """(202 time, ms to the first snapshot of its pair that counts it and came after it).

    Per pair, the i-th acknowledged event is reflected by the first snapshot whose count is at
    least i: acknowledgements of one pair may come back out of order, the count covers them all.
    """
    by_pair: dict[str, list[float]] = defaultdict(list)
    for pair, at in acks:
        by_pair[pair].append(at)
    seen: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for at, pair, count in snapshots:
        seen[pair].append((at, count))
    out = []
    for pair, times in by_pair.items():
        times.sort()
        snaps, j = seen[pair], 0
        for i, acked in enumerate(times, start=1):
            while j < len(snaps) and (snaps[j][1] < i or snaps[j][0] < acked):
                j += 1
            if j == len(snaps):
                break  # not reflected before the end
            out.append((acked, (snaps[j][0] - acked) * 1000))
    return out


async def run(h: Harness, key: str, rate: float, seconds: float, processes: int) -> dict[str, Any]:
    import multiprocessing

    snapshots: list[tuple[float, str, int]] = []
    stop = asyncio.Event()
    follower = asyncio.create_task(follow(h["api"].url, snapshots, stop))
    await asyncio.sleep(1.0)
    context = multiprocessing.get_context("spawn")
    t0 = time.monotonic() + 2.0  # the senders start together, on one schedule
    pipes, procs = [], []
    for i in range(processes):
        parent, child = context.Pipe(duplex=False)
        proc = context.Process(
            target=sender, args=(h["ingest"].url, key, rate, seconds, i, processes, t0, child)
        )
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    acks: list[tuple[str, float]] = []
    sent = 0
    for parent in pipes:
        got, count = await asyncio.to_thread(parent.recv)
        acks += got
        sent += count
    for proc in procs:
        proc.join()
    push_seconds = max(at for _, at in acks) - t0 if acks else float("nan")
    expected: dict[str, int] = defaultdict(int)
    for pair, _ in acks:
        expected[pair] += 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        latest = {pair: count for _, pair, count in snapshots}
        if all(latest.get(pair, 0) >= n for pair, n in expected.items()):
            break
        await asyncio.sleep(0.2)
    stop.set()
    follower.cancel()
    samples = match(acks, snapshots)
    latencies = [lat for _, lat in samples]
    return {
        "target_rate": rate,
        "achieved_rate": round(len(acks) / push_seconds, 1),
        "sender_processes": processes,
        "sent": sent,
        "acknowledged": len(acks),
        "reflected": len(latencies),
        "latency": {
            "p50_ms": pct(latencies, 0.50),
            "p99_ms": pct(latencies, 0.99),
            "max_ms": round(max(latencies), 1) if latencies else None,
            "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "series": [(round(at - t0, 3), round(lat, 1)) for at, lat in samples],
    }


def plot(series: list[tuple[float, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.scatter([t for t, _ in series], [lat for _, lat in series], s=2, alpha=0.5)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("202 → SSE update (ms)")
    ax.set_title(title)
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", default="100,1000", help="events per second through ingest, one run each (comma separated)"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=2, help="sender processes (aiohttp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results: dict[str, Any] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        bootstrap = os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP")
        if not bootstrap:
            bootstrap = stack.enter_context(temporary_cluster(Path(tmp) / "kafka")).bootstrap
        h = Harness(bootstrap, Path(tmp) / "platform")
        ensure_topics(bootstrap, h.settings.topic_specs())
        stack.callback(h.stop)
        h.start_all()
        _, key = h.partner("latency bench", rate=100_000)
        for rate in rates:
            result = asyncio.run(run(h, key, rate, args.seconds, args.processes))
            series = result.pop("series")
            results[f"at_{rate:.0f}"] = result
            if series:
                plot(
                    series,
                    args.out.with_name(f"latency_{rate:.0f}.png"),
                    f"end-to-end latency at {result['achieved_rate']:.0f} events/s (target {rate:.0f})",
                )
            time.sleep(3)  # the platform settles between runs
    results["cpus"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
