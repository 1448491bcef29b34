"""Ingest benchmark: batch throughput vs a raw kafka-python producer, and single-POST latency.

Uses ``HANDSHAKE_KAFKA_BOOTSTRAP`` when set, else starts a temporary native broker. Ingest runs
as one uvicorn process (a subprocess, as in production). Both measurements use fresh topics,
so runs never see each other's records. Prints one JSON line and writes bench/results/ingest.json.

    .venv/bin/python bench/bench_ingest.py [--batches 20] [--requests 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

from handshake.broker import free_port, temporary_cluster  # noqa: E402
from handshake.settings import KafkaSettings  # noqa: E402
from handshake.topics import ensure_topics  # noqa: E402
from schemas.events import AcceptedEvent, parse_event  # noqa: E402
from schemas.records import encode_event  # noqa: E402
from services.ingest.partners import create_partner  # noqa: E402

COUNTRIES = ["FR", "DE", "US", "CN", "JP", "BR", "IN", "ZA", "MX", "EG", "SE", "KE"]


def event(i: int, prefix: str) -> dict[str, Any]:
    host = COUNTRIES[i % len(COUNTRIES)]
    guests = [c for c in COUNTRIES if c != host][: 1 + i % 3]
    return {
        "event_id": f"{prefix}-{i}",
        "kind": "cultural",
        "title": f"Exchange number {i}",
        "host_country": host,
        "delegations": [{"country": c, "participants": 5 + i % 20} for c in guests],
        "starts_on": "2025-03-14",
        "ends_on": "2025-03-16",
        "status": "confirmed",
        "city": "Lyon",
        "tags": ["bench"],
    }


@contextlib.contextmanager
def broker() -> Iterator[str]:
    env = os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp, temporary_cluster(Path(tmp)) as cluster:
        yield cluster.bootstrap


@contextlib.contextmanager
def ingest_process(settings: KafkaSettings, port: int) -> Iterator[str]:
    env = dict(os.environ)
    env.update(
        {
            "HANDSHAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "HANDSHAKE_EVENTS_TOPIC": settings.events_topic,
            "HANDSHAKE_PARTNERS_TOPIC": settings.partners_topic,
            "HANDSHAKE_PAIR_STATS_TOPIC": settings.pair_stats_topic,
            "HANDSHAKE_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
            "HANDSHAKE_PORT": str(port),
            "HANDSHAKE_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest.main"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"ingest exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("ingest did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def bench_batches(url: str, key: str, batches: int, concurrency: int) -> dict[str, Any]:
    bodies = [
        b"\n".join(orjson.dumps(event(b * 1000 + i, "batch")) for i in range(1000)) for b in range(batches)
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    resends = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted, resends
        while not queue.empty():
            body = queue.get_nowait()
            while True:  # a partner resends what was not acknowledged (503 or "unavailable")
                resp = await client.post("/v1/events/batch", content=body, headers=headers)
                if resp.status_code == 503:
                    resends += 1
                    continue
                resp.raise_for_status()
                result = resp.json()
                accepted += result["accepted"]
                if not result["unavailable"]:
                    break
                resends += 1

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    assert accepted == batches * 1000, accepted
    return {
        "records": accepted,
        "seconds": round(elapsed, 3),
        "records_per_s": round(accepted / elapsed),
        "concurrency": concurrency,
        "resent_batches": resends,
    }


def bench_raw_producer(settings: KafkaSettings, records: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    encoded = [
        encode_event(
            AcceptedEvent.model_validate(
                {
                    **parse_event(event(i, "raw")).model_dump(),
                    "partner_id": "raw-baseline",
                    "received_at": now,
                }
            )
        )
        for i in range(records)
    ]
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    producer.partitions_for(settings.events_topic)
    started = time.perf_counter()
    futures = [producer.send(settings.events_topic, key=k, value=v, headers=h) for k, v, h in encoded]
    producer.flush(timeout=120)
    for f in futures:
        f.get(timeout=0)
    elapsed = time.perf_counter() - started
    producer.close(timeout=5)
    return {"records": records, "seconds": round(elapsed, 3), "records_per_s": round(records / elapsed)}


async def bench_single(url: str, key: str, requests: int, concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [orjson.dumps(event(i, "single")) for i in range(requests)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests:
            body = bodies[next_index]
            next_index += 1
            t = time.perf_counter()
            resp = await client.post(
                "/v1/events", content=body, headers={**headers, "Content-Type": "application/json"}
            )
            latencies.append(time.perf_counter() - t)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        # warm-up: connections and the producer
        for i in range(20):
            await client.post("/v1/events", json=event(i, "warmup"), headers=headers)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(requests / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def bench_healthz(url: str, requests: int, concurrency: int) -> int:
    """GET /healthz requests/s with the same client: the HTTP floor of this machine, for context."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await client.get("/healthz")

        async def worker() -> None:
            for _ in range(requests // concurrency):
                await client.get("/healthz")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return round(requests / (time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 records")
    parser.add_argument("--batch-concurrency", type=int, default=2)
    parser.add_argument("--requests", type=int, default=3000, help="single-event POSTs")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent single-POST clients")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()

    with broker() as bootstrap:
        tag = uuid.uuid4().hex[:8]
        settings = KafkaSettings(
            kafka_bootstrap=bootstrap,
            events_topic=f"bench{tag}.exchange-events.v1",
            partners_topic=f"bench{tag}.partners.v1",
            pair_stats_topic=f"bench{tag}.pair-stats.v1",
            dead_letter_topic=f"bench{tag}.dead-letter.v1",
        )
        ensure_topics(bootstrap, settings.topic_specs())
        _, key = create_partner(settings, "Bench Partner", rate=1_000_000)
        raw = bench_raw_producer(settings, args.batches * 1000)
        with ingest_process(settings, free_port()) as url:
            batch = asyncio.run(bench_batches(url, key, args.batches, args.batch_concurrency))
            single = asyncio.run(bench_single(url, key, args.requests, args.concurrency))
            single["healthz_requests_per_s"] = asyncio.run(bench_healthz(url, 2000, args.concurrency))
    result = {
        "bench": "ingest",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "batch": batch,
        "raw_producer": raw,
        "batch_vs_raw_ratio": round(batch["records_per_s"] / raw["records_per_s"], 3),
        "single_post": single,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
