"""Benchmark of the api: ranked-pairs latency at 50,000 pairs, SSE fan-out to 1,000 clients, RSS.

    .venv/bin/python bench/bench_api.py [--pairs 50000] [--requests 2000] [--clients 1000] [--updates 200]

The api runs in a subprocess (uvicorn, one worker) with a generated view; the load runs here in
one asyncio process. Baselines measured in the same run: ``/healthz`` latency, and the in-process
query time (no HTTP). Prints JSON and writes ``bench/results/api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.countries import all_countries  # noqa: E402
from schemas.records import PairStats  # noqa: E402
from services.api.testing import free_port, make_stats  # noqa: E402

KINDS = ["athletic", "cultural", "scientific", "educational", "professional", "humanitarian", "civic"]


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pair_codes(count: int) -> list[tuple[str, str]]:
    """Real country pairs first (about 39,000 exist), then synthetic codes to reach ``count``."""
    codes = [c for c, _ in all_countries()]
    pairs = list(itertools.combinations(codes, 2))
    synthetic = (f"Q{a}{b}" for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    extra = list(itertools.islice(synthetic, 400))
    pairs += list(itertools.islice(itertools.combinations(extra, 2), max(0, count - len(pairs))))
    random.Random(7).shuffle(pairs)
    return pairs[:count]


def generate(count: int) -> list[PairStats]:
    rng = random.Random(42)
    out = []
    for a, b in pair_codes(count):
        events = max(1, int(rng.paretovariate(1.3)))
        kinds: dict[str, int] = {}
        for _ in range(min(events, 5)):
            k = rng.choice(KINDS)
            kinds[k] = kinds.get(k, 0) + 1
        kinds[rng.choice(KINDS)] = kinds.get(KINDS[0], 0) + events - sum(kinds.values()) or 1
        months = {f"20{rng.randint(15, 25)}-{rng.randint(1, 12):02d}": n for n in (events,)}
        out.append(
            make_stats(
                a, b, events=sum(kinds.values()), by_kind=kinds, by_month=months, participants=events * 25
            )
        )
    return out


# --- the server process -------------------------------------------------------------------


def serve(port: int, pairs: int) -> None:
    from services.api.app import create_app
    from services.api.settings import ApiSettings

    raise_nofile()
    app = create_app(ApiSettings(sse_client_queue=2000, sse_max_clients=5000))
    live = app.state.live
    for s in generate(pairs):
        live.apply(s)
    live.freeze_gc = True
    live.ready = False
    live.mark_ready()  # as after a Kafka bootstrap: gc.freeze() of the loaded view

    async def handle(line: list[str]) -> None:
        if line[0] == "publish":
            n, interval = int(line[1]), float(line[2])
            rng = random.Random(1)
            pool = list(live.view)[:5000]
            for i in range(n):
                base = rng.choice(pool)
                a, b = base.countries
                live.apply(
                    make_stats(
                        a,
                        b,
                        version=base.version + 1000 + i,
                        events=base.active_events + 1,
                        by_kind=base.by_kind,
                        by_month=base.by_month,
                        updated_at=datetime.now(UTC),
                    )
                )
                await asyncio.sleep(interval)
            print("DONE", flush=True)

    serve_commands(app, port, handle, backlog=4096)


def serve_commands(
    app: Any, port: int, handle: Callable[[list[str]], Awaitable[None]], **config: Any
) -> None:
    """Serve ``app`` (uvicorn, one worker) on ``port``: print READY once it listens, hand each line
    of stdin (split into words) to ``handle``, and stop when stdin closes."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **config))

    async def commands() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            await handle(line)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.05)
        print("READY", flush=True)
        await commands()
        server.should_exit = True
        await task

    asyncio.run(main())


# --- the load -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3),
    }


def in_process_query(pairs: int, repeats: int) -> dict[str, object]:
    from services.api.models import PairItem
    from services.api.view import LiveView, PairQuery

    view = LiveView()
    started = time.perf_counter()
    for s in generate(pairs):
        view.apply(s)
    build = time.perf_counter() - started
    timings = {}
    for name, query in {
        "top20": PairQuery(limit=20),
        "top20_by_participants": PairQuery(limit=20, sort="participants"),
        "top20_country_US": PairQuery(limit=20, country="US"),
        "top20_kind_civic": PairQuery(limit=20, kind="civic"),
        "top20_months_2024": PairQuery(limit=20, month_from="2024-01", month_to="2024-12"),
    }.items():
        samples = []
        for _ in range(repeats if name == "top20" else max(20, repeats // 10)):
            t = time.perf_counter()
            page = view.query(query)
            [PairItem.of(r).model_dump() for r in page.items]
            samples.append(time.perf_counter() - t)
        timings[name] = summary_ms(samples)
    return {"view_build_seconds": round(build, 2), "query": timings}


async def http_latency(url: str, path: str, count: int) -> list[float]:
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(50):
            await client.get(path)
        for _ in range(count):
            t = time.perf_counter()
            r = await client.get(path)
            out.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return out


async def sse_client(
    port: int, ready: asyncio.Event, counter: list[int], expected: int, delays: list[float]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    got = 0
    event = b""
    try:
        while got < expected:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"event: "):
                event = line[7:].strip()
                if event == b"hello":
                    counter[0] += 1
                    if counter[0] == counter[1]:
                        ready.set()
            elif line.startswith(b"data: {") and event == b"pair":
                received = time.time()
                # updated_at is set by the server just before publishing
                i = line.index(b'"updated_at":"') + 14
                stamp = line[i : line.index(b'"', i)].decode()
                sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                delays.append(received - sent)
                got += 1
    finally:
        writer.close()
    return got


async def sse_fanout(
    port: int, proc: subprocess.Popen[str], clients: int, updates: int, interval: float
) -> dict[str, object]:
    ready = asyncio.Event()
    counter = [0, clients]
    delays: list[float] = []
    started = time.perf_counter()
    tasks = []
    for i in range(clients):
        tasks.append(asyncio.create_task(sse_client(port, ready, counter, updates, delays)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(ready.wait(), 60)
    connect_seconds = time.perf_counter() - started
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"publish {updates} {interval}\n")
    proc.stdin.flush()
    publish_started = time.perf_counter()
    received = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    elapsed = time.perf_counter() - publish_started
    line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == "DONE", line
    complete = sum(1 for r in received if r == updates)
    return {
        "clients": clients,
        "updates": updates,
        "publish_interval_ms": interval * 1000,
        "clients_with_every_update": complete,
        "deliveries": len(delays),
        "connect_seconds": round(connect_seconds, 2),
        "stream_seconds": round(elapsed, 2),
        "delay": summary_ms(delays),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def run(args: argparse.Namespace, proc: subprocess.Popen[str], port: int) -> dict[str, object]:
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.strip() == "READY", line
        url = f"http://127.0.0.1:{port}"
        rss_idle = rss_mb(proc.pid)
        pairs_lat = await http_latency(url, "/v1/pairs?limit=20", args.requests)
        health_lat = await http_latency(url, "/healthz", args.requests)
        filtered_lat = await http_latency(url, "/v1/pairs?limit=20&country=US&kind=civic", args.requests // 4)
        fanout = await sse_fanout(port, proc, args.clients, args.updates, args.interval)
        rss_after = rss_mb(proc.pid)
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "pairs": args.pairs,
        "http": {
            "requests": args.requests,
            "pairs_limit20": summary_ms(pairs_lat),
            "pairs_limit20_country_kind": summary_ms(filtered_lat),
            "healthz_baseline": summary_ms(health_lat),
        },
        "in_process": in_process_query(args.pairs, 1000),
        "sse": fanout,
        "rss_mb": {"after_loading_view": rss_idle, "after_sse_run": rss_after},
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.025, help="seconds between published updates")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.pairs)
        return
    raise_nofile()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--pairs", str(args.pairs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    result = asyncio.run(run(args, proc, port))
    out = ROOT / "bench" / "results" / "api.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
