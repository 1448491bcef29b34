"""Benchmark of the event index: rebuild rate from the topic into SQLite, query latency at scale.

    .venv/bin/python bench/bench_events.py [--events 1000000] [--requests 1000]

On HANDSHAKE_KAFKA_BOOTSTRAP or a temporary native broker: produces ``--events`` accepted events
(30 countries, two delegations each, titles from a 300-word vocabulary), then in the same run

- baseline: a raw aiokafka consumer reading and decoding the whole topic (events/s);
- the index: the api's own writer (:class:`EventIndex` fed by :class:`KafkaEventSource`, in
  this process) rebuilding the file from the topic until caught up (events/s, ratio to raw);
- queries: the api as a subprocess (``handshake serve api``) on that file (it resumes, reading
  nothing again), ``/v1/events?pair=..&limit=50`` and ``?q=<word>&limit=50`` against
  ``/healthz`` (p50/p99 over ``--requests`` sequential requests each), the file size and the
  api's RSS. Prints JSON and writes ``bench/results/events.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_aggregator import raw_consume  # noqa: E402  (the same baseline as the aggregator's)

from handshake.broker import free_port, temporary_cluster  # noqa: E402
from handshake.settings import KafkaSettings  # noqa: E402
from handshake.topics import ensure_topics  # noqa: E402
from schemas.events import AcceptedEvent  # noqa: E402
from schemas.records import encode_event  # noqa: E402

COUNTRIES = [
    "US", "CN", "FR", "DE", "JP", "BR", "IN", "KE", "MX", "NG", "GB", "IT", "ES", "CA", "AU", "ZA",
    "EG", "AR", "KR", "TR", "SE", "NO", "PL", "UA", "VN", "TH", "ID", "PH", "PE", "CL",
]  # fmt: skip
KINDS = ["athletic", "cultural", "scientific", "educational", "professional", "humanitarian", "civic"]
WORDS = [f"w{n:03d}" for n in range(300)]


def make(rng: random.Random, i: int, received: datetime) -> AcceptedEvent:
    host, *visitors = rng.sample(COUNTRIES, 3)
    return AcceptedEvent.model_validate(
        {
            "event_id": f"ev-{i}",
            "kind": rng.choice(KINDS),
            "title": " ".join(rng.sample(WORDS, 3)) + f" exchange {i}",
            "host_country": host,
            "delegations": [{"country": c, "participants": rng.randint(1, 60)} for c in visitors],
            "starts_on": (date(1950, 1, 1) + timedelta(days=rng.randint(0, 27_000))).isoformat(),
            "status": rng.choice(["announced", "confirmed", "completed", "completed", "cancelled"]),
            "city": rng.choice(["Paris", "Kyoto", "Nairobi", "Lima", "Oslo"]),
            "partner_id": f"partner-{i % 40}",
            "received_at": received,
        }
    )


def produce(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaProducer

    rng = random.Random(1)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    began = time.perf_counter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        key, value, headers = encode_event(make(rng, i, t0 + timedelta(milliseconds=i)))
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()
    return time.perf_counter() - began


def rebuild(settings: KafkaSettings, path: Path) -> tuple[float, int]:
    """The api's index writer reading the topic from nothing until caught up (seconds, records)."""
    from services.api.index.service import EventIndex
    from services.api.index.source import KafkaEventSource
    from services.api.settings import ApiSettings

    index = EventIndex(path, settings.events_topic)
    source = KafkaEventSource(ApiSettings(**settings.model_dump()), index)
    cpu0 = _cpu()
    began = time.perf_counter()
    source.start()
    while not index.publish_live:  # set by mark_caught_up (no event loop here)
        time.sleep(0.05)
        if source.error is not None and not isinstance(source.error, OSError):
            raise RuntimeError(f"index failed: {source.error!r}")
    seconds = time.perf_counter() - began
    source.stop()
    global REBUILD_CPU, WORKER_RSS_MB
    REBUILD_CPU = _cpu() - cpu0
    WORKER_RSS_MB = _children_peak_rss_mb()
    return seconds, index.read_records


REBUILD_CPU = 0.0
WORKER_RSS_MB = 0.0


def _children_peak_rss_mb() -> float:
    """Peak RSS of the largest waited-for child (a catch-up worker), MB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the catch-up workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


def timed(client: Any, path: str, params_list: list[dict[str, str]]) -> dict[str, float]:
    samples = []
    for params in params_list:
        began = time.perf_counter()
        r = client.get(path, params=params)
        samples.append(time.perf_counter() - began)
        assert r.status_code == 200, r.text
    return percentiles(samples)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def queries(settings: KafkaSettings, data: Path, requests: int) -> dict[str, Any]:
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "HANDSHAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HANDSHAKE_EVENTS_TOPIC": settings.events_topic,
        "HANDSHAKE_PAIR_STATS_TOPIC": settings.pair_stats_topic,
        "HANDSHAKE_PARTNERS_TOPIC": settings.partners_topic,
        "HANDSHAKE_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "HANDSHAKE_API_DATA_DIR": str(data),
        "HANDSHAKE_PORT": str(port),
        "HANDSHAKE_LOG_LEVEL": "WARNING",
    }
    exe = str(Path(sys.executable).parent / "handshake")
    proc = subprocess.Popen(
        [exe, "serve", "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        began = time.perf_counter()
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.perf_counter() - began < 300, "api did not start"
            time.sleep(0.1)
        ready_s = time.perf_counter() - began
        rng = random.Random(5)
        pairs = [{"pair": "-".join(sorted(rng.sample(COUNTRIES, 2))), "limit": "50"} for _ in range(requests)]
        words = [{"q": rng.choice(WORDS), "limit": "50"} for _ in range(requests)]
        with httpx.Client(base_url=url, timeout=30) as client:
            for warm in (pairs[:50], words[:50]):
                timed(client, "/v1/events", warm)
            out = {
                "api_ready_s": round(ready_s, 2),
                "healthz": timed(client, "/healthz", [{}] * requests),
                "pair_limit_50": timed(client, "/v1/events", pairs),
                "q_limit_50": timed(client, "/v1/events", words),
                "read_after_restart": float(
                    next(
                        line.split()[1]
                        for line in client.get("/metrics").text.splitlines()
                        if line.startswith("handshake_api_index_read_records_total ")
                    )
                ),
                "pair_total_example": client.get("/v1/events", params=pairs[0]).json()["total"],
                "q_total_example": client.get("/v1/events", params=words[0]).json()["total"],
            }
        out["api_rss_mb"] = rss_mb(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def run(bootstrap: str, n: int, requests: int, work: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = KafkaSettings(
        kafka_bootstrap=bootstrap,
        events_topic=f"bench{tag}.exchange-events.v1",
        partners_topic=f"bench{tag}.partners.v1",
        pair_stats_topic=f"bench{tag}.pair-stats.v1",
        dead_letter_topic=f"bench{tag}.dead-letter.v1",
    )
    ensure_topics(bootstrap, settings.topic_specs())
    produce_s = produce(bootstrap, settings.events_topic, n)
    raw_s, _cpu_s = asyncio.run(raw_consume(bootstrap, settings.events_topic, n))
    data = work / "api"
    index_s, read = rebuild(settings, data / "events.sqlite3")
    size = sum(f.stat().st_size for f in data.glob("events.sqlite3*"))
    result: dict[str, Any] = {
        "events": n,
        "produce_s": round(produce_s, 1),
        "raw_consume_decode": {"seconds": round(raw_s, 1), "events_per_s": round(n / raw_s)},
        "index_rebuild": {
            "seconds": round(index_s, 1),
            "events_per_s": round(read / index_s),
            "records": read,
            "cpu_s": round(REBUILD_CPU, 1),
            "cpu_us_per_event": round(REBUILD_CPU / max(read, 1) * 1e6, 1),
            "worker_peak_rss_mb": WORKER_RSS_MB,
        },
        "index_vs_raw": round((read / index_s) / (n / raw_s), 2),
        "file_mb": round(size / 1e6, 1),
    }
    result["queries"] = queries(settings, data, requests)
    q = result["queries"]
    result["pair_p99_vs_healthz_p99"] = round(q["pair_limit_50"]["p99_ms"] / q["healthz"]["p99_ms"], 1)
    result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["cpus"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events on the topic (default 1,000,000)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per query kind (default 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bootstrap = os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP")
        if bootstrap:
            result = run(bootstrap, args.events, args.requests, work)
        else:
            with temporary_cluster(work / "kafka") as cluster:
                result = run(cluster.bootstrap, args.events, args.requests, work)
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "events.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
