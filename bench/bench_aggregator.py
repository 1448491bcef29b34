"""Aggregator throughput: raw consume+decode baseline vs one faust worker, restart time, RSS.

    python bench/bench_aggregator.py [N]      (default 200000 events, two delegations each)

Baselines in the same run: a raw aiokafka consumer reading and decoding the topic, and the
floor of any faust agent (``faust_floor.py``: an agent that only takes the records in the
aggregator's batches, then also decodes them).

Uses HANDSHAKE_KAFKA_BOOTSTRAP when set, else a temporary native broker. Prints JSON and writes
bench/results/aggregator.json. ``--secure``: a temporary secured broker (SASL_SSL, SCRAM-SHA-512,
ACLs), the worker as ``handshake-aggregator``, the baselines as ``admin``; writes
bench/results/aggregator_secure.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handshake.broker import free_port, temporary_cluster  # noqa: E402
from handshake.security import ADMIN, Secrets  # noqa: E402
from handshake.settings import KafkaSettings  # noqa: E402
from handshake.topics import ensure_topics  # noqa: E402
from schemas.records import decode_event, encode_event  # noqa: E402
from services.aggregator.main import topic_specs  # noqa: E402
from services.aggregator.settings import AggregatorSettings  # noqa: E402
from services.aggregator.testing import KINDS, WorkerProcess, make_event, random_event, worker_env  # noqa: E402

SECRETS: Secrets | None = None  # --secure: the temporary broker's


def admin(bootstrap: str) -> KafkaSettings:
    """Settings for the baselines and the bench's own clients: ``admin`` when secured."""
    settings = KafkaSettings(kafka_bootstrap=bootstrap)
    return settings if SECRETS is None else SECRETS.login(settings, ADMIN)


LONG_PAIR_EVERY = 20  # one event in 20 is the CN-US pair's, starting any day from 1950 to 2026


def long_pair_event(rng: random.Random, partner_id: str, event_id: str, countries: list[str]) -> Any:
    """An event of the pair whose history spans 1950-2026 (and of one other delegation's pairs)."""
    other = rng.choice([c for c in countries if c not in ("US", "CN")])
    return make_event(
        partner_id,
        event_id,
        host="US",
        delegations=[("CN", rng.randint(0, 500)), (other, None)],
        kind=rng.choice(KINDS),
        starts_on=date(1950, 1, 1) + timedelta(days=rng.randint(0, 28_000)),
    )


def produce(bootstrap: str, topic: str, n: int, first: int = 0) -> float:
    """``n`` events numbered from ``first`` (a later call with ``first`` = the events so far
    adds new ones); seconds taken."""
    from kafka import KafkaProducer

    rng = random.Random(1 + first)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        **admin(bootstrap).kafka_python_config(),
    )
    began = time.perf_counter()
    countries = [
        "US", "CN", "FR", "DE", "JP", "BR", "IN", "KE", "MX", "NG", "GB", "IT", "ES", "CA", "AU", "ZA",
        "EG", "AR", "KR", "TR", "SE", "NO", "PL", "UA", "VN", "TH", "ID", "PH", "PE", "CL",
    ]  # fmt: skip
    for i in range(first, first + n):
        if LONG_PAIR_EVERY and i % LONG_PAIR_EVERY == 0:
            event = long_pair_event(rng, f"partner-{i % 50}", f"ev-{i}", countries)
        else:
            event = random_event(rng, f"partner-{i % 50}", f"ev-{i}", countries=countries, delegations=2)
        key, value, headers = encode_event(event)
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()
    return time.perf_counter() - began


async def raw_consume(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        **admin(bootstrap).aiokafka_config(),
    )
    await consumer.start()
    seen = 0
    began = time.perf_counter()
    cpu0 = time.process_time()
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for r in records:
                    decode_event(r.key, r.value, r.headers)
                    seen += 1
    finally:
        await consumer.stop()
    return time.perf_counter() - began, time.process_time() - cpu0


def faust_floor(bootstrap: str, topic: str, n: int, work: Path, *flags: str) -> dict[str, float]:
    """events/s of a faust agent that only takes (and with ``--decode``, decodes) the records."""
    import subprocess

    out = work / f"floor{''.join(flags)}.json"
    env = dict(os.environ) | (SECRETS.client_env(ADMIN) if SECRETS else {})  # its login: KafkaSettings()
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faust_floor.py"), bootstrap, topic, str(n), str(out), *flags],
        check=True,
        capture_output=True,
        timeout=1800,
        env=env,
    )
    result = json.loads(out.read_text())
    return {"events_per_s": n / result["seconds"], "events_per_cpu_s": n / result["cpu_seconds"]}


PEER_VENV = ROOT / ".venv-peer"


def peer_python() -> str:
    """The peer's interpreter (``.venv-peer``, made here on first use from bench/peer-requirements.txt)."""
    import subprocess

    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print("==> making .venv-peer for the Quix Streams peer (once)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        requirements = ROOT / "bench" / "peer-requirements.txt"
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    return str(python)


def ground_truth(bootstrap: str, topic: str, n: int, path: Path) -> Path:
    """Every pair's final figures from the events topic (the aggregator's batch computation)."""
    from kafka import KafkaConsumer, TopicPartition

    from services.aggregator.merge import comparable, recompute

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, **admin(bootstrap).kafka_python_config()
    )
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    events: list[Any] = []
    while len(events) < n:
        for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
            events += [decode_event(r.key, r.value, r.headers) for r in records]
    consumer.close()
    path.write_text(json.dumps({pair: comparable(stats) for pair, stats in recompute(events).items()}))
    return path


def settle(bootstrap: str, topic: str, truth: Path, out: Path) -> Any:
    """``bench/settle.py`` on ``topic``: the time every pair's latest snapshot equals the truth."""
    import subprocess

    script = ROOT / "bench" / "settle.py"
    return subprocess.Popen([peer_python(), str(script), bootstrap, topic, str(truth), str(out)])


def quix_peer(bootstrap: str, events_topic: str, truth: Path, work: Path) -> dict[str, float]:
    """The Quix Streams peer (``peer_quix.py``) from the first event in to the last snapshot out."""
    import signal
    import subprocess

    out_topic = f"{events_topic}.quix-pair-stats"
    specs = KafkaSettings(pair_stats_topic=out_topic).topic_specs()
    ensure_topics(bootstrap, [s for s in specs if s.name == out_topic])  # as the pair-stats topic
    started, settled = work / "quix-started.json", work / "quix-settled.json"
    checker = settle(bootstrap, out_topic, truth, settled)
    script = ROOT / "bench" / "peer_quix.py"
    with (work / "quix.log").open("wb") as log:
        peer = subprocess.Popen(
            [peer_python(), str(script), bootstrap, events_topic, out_topic, str(started)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if checker.wait(1800) != 0:
            raise RuntimeError(f"the Quix peer never settled; see {work / 'quix.log'}")
        cpu, peak = cpu_seconds(peer.pid), rss_mb(peer.pid)
    finally:
        peer.send_signal(signal.SIGTERM)
        try:
            peer.wait(60)
        except subprocess.TimeoutExpired:
            peer.kill()
    seconds = (
        json.loads(settled.read_text())["settled_at"] - json.loads(started.read_text())["first_record_at"]
    )
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak}


def metric(worker: WorkerProcess, name: str) -> float:
    """One metric of the worker, summed over its labels."""
    return metrics_of(worker, name)[0]


def metrics_of(worker: WorkerProcess, *names: str) -> list[float]:
    """Metrics of the worker, each summed over its labels, from one scrape."""
    import httpx

    for attempt in range(12):  # a busy worker may answer late: a slow answer is not a failure
        try:
            text = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=10).text
            break
        except httpx.TimeoutException:
            if attempt == 11:
                raise
    totals = [0.0] * len(names)
    for line in text.splitlines():
        for i, name in enumerate(names):
            if line.startswith(name) and not line.startswith(name + "_created"):
                totals[i] += float(line.rsplit(" ", 1)[1])
    return totals


def end_offsets_total(bootstrap: str, topics: list[str]) -> int:
    """Records written to ``topics`` (sum of the partitions' end offsets; compaction may trail)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, **admin(bootstrap).kafka_python_config()
    )
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (the box may be shared: wall-clock rates mislead)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a process and its children, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def history(bootstrap: str, n: int, prefix: str) -> tuple[KafkaSettings, str, float]:
    """Fresh topics named ``{prefix}{tag}.*`` with ``n`` events: (settings, app id, seconds to produce)."""
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        kafka_bootstrap=bootstrap,
        events_topic=f"{prefix}{tag}.events",
        partners_topic=f"{prefix}{tag}.partners",
        pair_stats_topic=f"{prefix}{tag}.pair-stats",
        dead_letter_topic=f"{prefix}{tag}.dead-letter",
    )
    app_id = f"{prefix}-agg-{tag}"
    ensure_topics(
        bootstrap,
        topic_specs(AggregatorSettings(**kafka.model_dump(), app_id=app_id)),
        security=admin(bootstrap).kafka_python_config(),
    )
    if SECRETS is not None:  # the worker's rights, as the platform declares them
        from handshake.access import declare
        from handshake.security import acl_rules

        declare(admin(bootstrap), acl_rules(kafka, app_id=app_id))
    return kafka, app_id, produce(bootstrap, kafka.events_topic, n)


def run(bootstrap: str, n: int, work: Path) -> dict[str, Any]:
    kafka, app_id, produce_s = history(bootstrap, n, "bench")
    raw_s, raw_cpu = asyncio.run(raw_consume(bootstrap, kafka.events_topic, n))
    floor_bare = faust_floor(bootstrap, kafka.events_topic, n, work)
    floor = faust_floor(bootstrap, kafka.events_topic, n, work, "--decode")
    truth = ground_truth(bootstrap, kafka.events_topic, n, work / "truth.json")
    # the peer speaks to open brokers only here (its login is librdkafka's, not wired up)
    peer = quix_peer(bootstrap, kafka.events_topic, truth, work) if SECRETS is None else None

    port = free_port()
    env = worker_env(kafka, app_id=app_id, data_dir=work / "w", web_port=port, log_level="WARNING")
    env |= SECRETS.client_env("handshake-aggregator") if SECRETS else {}
    checker = settle(bootstrap, kafka.pair_stats_topic, truth, work / "settled.json") if peer else None
    worker = WorkerProcess(env, port, work / "worker.log").start()
    began = time.perf_counter()
    startup_s = worker.wait_ready(120)
    ready_at = time.time()
    ready_cpu = cpu_seconds(worker.proc.pid)
    while metric(worker, "handshake_aggregator_events_total") < n:
        time.sleep(0.05)
        if time.perf_counter() - began > 1800:
            raise TimeoutError("worker did not finish")
    agg_s = time.perf_counter() - began
    agg_cpu = cpu_seconds(worker.proc.pid)
    # the whole pipeline: stage 2 has read every partial stage 1 published
    while metric(worker, "handshake_aggregator_partials_consumed_total") < metric(
        worker, "handshake_aggregator_partials_published_total"
    ):
        time.sleep(0.05)
    pipeline_s = time.perf_counter() - began
    pipeline_cpu = cpu_seconds(worker.proc.pid)
    settled_s = None
    if checker is not None:  # timed as the peer is: to every pair's last snapshot out
        if checker.wait(1800) != 0:
            raise RuntimeError("the aggregator's snapshots never matched the ground truth")
        settled_s = json.loads((work / "settled.json").read_text())["settled_at"] - ready_at
    partials = metric(worker, "handshake_aggregator_partials_published_total")
    snapshots = metric(worker, "handshake_aggregator_snapshots_published_total")
    stage1_batches = metric(worker, 'handshake_aggregator_batch_seconds_count{stage="stage1"}')
    peak = rss_mb(worker.proc.pid)
    worker.stop()

    worker = WorkerProcess(env, port, work / "worker2.log").start()
    restart_s = worker.wait_ready(300)
    worker.stop()

    # local state gone: rebuilt from the changelog topics alone
    changelog_records = end_offsets_total(
        bootstrap, [f"{app_id}-state-changelog", f"{app_id}-pairs-changelog"]
    )
    bundles = end_offsets_total(bootstrap, [AggregatorSettings(app_id=app_id).partials_topic])
    shutil.rmtree(work / "w" / "faust")
    worker = WorkerProcess(env, port, work / "worker3.log").start()
    rebuild_s = worker.wait_ready(1800)
    worker.stop()
    versus_peer = {}
    if peer is not None and settled_s is not None:
        versus_peer = {
            "quix_peer_events_per_s": round(n / peer["seconds"]),
            "quix_peer_events_per_cpu_s": round(n / peer["cpu_seconds"]),
            "quix_peer_peak_rss_mib": round(peer["peak_rss_mib"], 1),
            "pipeline_events_per_s_to_last_snapshot": round(n / settled_s),
            "pipeline_ratio_to_quix_peer": round(peer["seconds"] / settled_s, 3),
        }
    return {
        **versus_peer,
        "events": n,
        "produce_events_per_s": round(n / produce_s),
        "raw_consume_decode_events_per_s": round(n / raw_s),
        "aggregator_events_per_s": round(n / agg_s),
        "aggregator_seconds_from_start": round(agg_s, 2),
        "aggregator_startup_seconds": round(startup_s, 2),
        "aggregator_events_per_s_after_ready": round(n / (agg_s - startup_s)),
        "pipeline_seconds_to_all_snapshots": round(pipeline_s, 2),
        "pipeline_events_per_s": round(n / pipeline_s),
        "ratio_to_raw": round((n / agg_s) / (n / raw_s), 3),
        "faust_floor_events_per_s": round(floor_bare["events_per_s"]),
        "faust_floor_decode_events_per_s": round(floor["events_per_s"]),
        "faust_floor_decode_ratio_to_raw": round(floor["events_per_s"] / (n / raw_s), 3),
        "ratio_to_faust_floor_decode": round((n / agg_s) / floor["events_per_s"], 3),
        # CPU per event (all threads): what the floor ratio is made of, free of waits
        "stage1_cpu_us_per_event_after_ready": round(1e6 * (agg_cpu - ready_cpu) / n, 1),
        "faust_floor_decode_cpu_us_per_event": round(1e6 / floor["events_per_cpu_s"], 1),
        "faust_floor_cpu_us_per_event": round(1e6 / floor_bare["events_per_cpu_s"], 1),
        "faust_records_per_event": round((n + bundles) / n, 3),
        "raw_events_per_cpu_s": round(n / raw_cpu),
        "aggregator_events_per_cpu_s": round(n / agg_cpu),
        "pipeline_events_per_cpu_s": round(n / pipeline_cpu),
        "cpu_ratio_to_raw": round(raw_cpu / agg_cpu, 3),
        "stage1_batches": int(stage1_batches),
        "partials_per_event": round(partials / n, 2),
        "snapshots_per_event": round(snapshots / n, 2),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "restart_to_ready_seconds": round(restart_s, 2),
        "changelog_records": changelog_records,
        "rebuild_from_changelog_seconds": round(rebuild_s, 2),
        "rebuild_changelog_records_per_s": round(changelog_records / rebuild_s),
        "rebuild_seconds_projected_1m_events": round(rebuild_s * 1_000_000 / n, 1),
        "worker_peak_rss_mib": round(peak, 1),
        "secure": SECRETS is not None,
        "cpus": os.cpu_count(),
    }


def main(
    bench: Callable[[str, int, Path], dict[str, Any]] = run,
    default_n: int = 200_000,
    name: str = "aggregator",
    doc: str | None = __doc__,
    secure_option: bool = False,
) -> None:
    """``bench(bootstrap, N, workdir)`` on HANDSHAKE_KAFKA_BOOTSTRAP or a temporary broker; N from argv."""
    global SECRETS, LONG_PAIR_EVERY
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "events", nargs="?", type=int, default=default_n, help=f"events to produce (default {default_n:,})"
    )
    if secure_option:
        parser.add_argument(
            "--secure", action="store_true", help="a temporary secured broker: what TLS and SCRAM cost"
        )
    parser.add_argument(
        "--long-pair-every",
        type=int,
        default=LONG_PAIR_EVERY,
        metavar="K",
        help=f"one event in K belongs to the pair spanning 1950-2026 (default {LONG_PAIR_EVERY}; 0: none)",
    )
    args = parser.parse_args()
    n, secure = args.events, getattr(args, "secure", False)
    LONG_PAIR_EVERY = args.long_pair_every
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bootstrap = os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP")
        if bootstrap and not secure:
            result = bench(bootstrap, n, work)
        else:
            with temporary_cluster(work / "kafka", secure=secure) as cluster:
                SECRETS = cluster.secrets if secure else None
                result = bench(cluster.bootstrap, n, work)
    result["long_pair_every"] = LONG_PAIR_EVERY
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"{name}{'_secure' if secure else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(secure_option=True)
