"""End-to-end latency: from ingest's 202 to the SSE update that reflects the event.

Starts a broker (or uses HANDSHAKE_KAFKA_BOOTSTRAP) and the three services as real processes,
pushes new events at a steady rate through ingest, follows /v1/stream, and for every event
measures the time from its 202 to the first pair snapshot whose count includes it. Writes
bench/results/latency.json and a plot of latency over time (bench/results/latency.png).
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
from collections import defaultdict, deque
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


async def follow(
    api: str,
    acked: dict[str, deque[float]],
    seen: dict[str, int],
    out: list[tuple[float, float]],
    stop: asyncio.Event,
) -> None:
    parser = SSEParser()
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", f"{api}/v1/stream") as response,
    ):
        async for chunk in response.aiter_text():
            now = time.perf_counter()
            for event in parser.feed(chunk):
                if event.event != "pair":
                    continue
                stats = orjson.loads(event.data)
                pair = stats["pair"]
                reflected = stats["active_events"] - seen[pair]
                while reflected > 0 and acked[pair]:
                    sent = acked[pair].popleft()
                    out.append((sent, (now - sent) * 1000))
                    seen[pair] += 1
                    reflected -= 1
            if stop.is_set():
                return


async def push(
    ingest: str, key: str, rate: float, seconds: float, acked: dict[str, deque[float]], counts: dict[str, int]
) -> int:
    sem = asyncio.Semaphore(64)
    sent = 0
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=ingest, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as client:
        started = time.perf_counter()
        tasks = []

        async def one(n: int) -> None:
            host, guest = PAIRS[n % len(PAIRS)]
            pair = "-".join(sorted((host, guest)))
            body = {
                "event_id": f"lat-{n}",
                "kind": "cultural",
                "title": "latency",
                "host_country": host,
                "delegations": [{"country": guest, "participants": 1}],
                "starts_on": "2026-05-01",
            }
            async with sem:
                response = await client.post("/v1/events", json=body)
            if response.status_code == 202:
                # acknowledgements of one pair can arrive out of order; the snapshot count covers them all
                acked[pair].append(time.perf_counter())
                counts[pair] += 1

        while time.perf_counter() - started < seconds:
            due = started + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(sent)))
            sent += 1
        await asyncio.gather(*tasks)
    return sent


async def run(h: Harness, key: str, rate: float, seconds: float) -> dict[str, Any]:
    acked: dict[str, deque[float]] = defaultdict(deque)
    seen: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    follower = asyncio.create_task(follow(h["api"].url, acked, seen, samples, stop))
    await asyncio.sleep(1.0)
    started = time.perf_counter()
    sent = await push(h["ingest"].url, key, rate, seconds, acked, counts)
    push_seconds = time.perf_counter() - started
    deadline = time.perf_counter() + 60
    while sum(seen.values()) < sum(counts.values()) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    stop.set()
    follower.cancel()
    latencies = [lat for _, lat in samples]
    return {
        "target_rate": rate,
        "achieved_rate": round(sent / push_seconds, 1),
        "sent": sent,
        "acknowledged": sum(counts.values()),
        "reflected": len(latencies),
        "latency": {
            "p50_ms": pct(latencies, 0.50),
            "p99_ms": pct(latencies, 0.99),
            "max_ms": round(max(latencies), 1) if latencies else None,
            "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "series": [(round(t - started, 3), round(lat, 1)) for t, lat in samples],
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
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second through ingest")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        bootstrap = os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP")
        if not bootstrap:
            bootstrap = stack.enter_context(temporary_cluster(Path(tmp) / "kafka")).bootstrap
        h = Harness(bootstrap, Path(tmp) / "platform")
        ensure_topics(bootstrap, h.settings.topic_specs())
        stack.callback(h.stop)
        h.start_all()
        _, key = h.partner("latency bench", rate=100_000)
        result = asyncio.run(run(h, key, args.rate, args.seconds))
    series = result.pop("series")
    result["cpus"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if series:
        plot(
            series,
            args.out.with_suffix(".png"),
            f"end-to-end latency at {result['achieved_rate']:.0f} events/s (target {args.rate:.0f})",
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
