"""Event builders shared by the aggregator's tests, the fault suite and the benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas.events import AcceptedEvent
from schemas.records import encode_event

COUNTRIES: tuple[str, ...] = ("US", "CN", "FR", "DE", "JP", "BR", "IN", "KE", "MX", "NG", "SUHH", "YUCS")
KINDS = ("athletic", "cultural", "scientific", "educational", "professional", "humanitarian", "civic")
STATUSES = ("announced", "confirmed", "completed", "cancelled")
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def make_event(
    partner_id: str = "partner-a",
    event_id: str = "e1",
    *,
    revision: int = 1,
    host: str = "US",
    delegations: Sequence[tuple[str, int | None]] = (("CN", 10),),
    kind: str = "cultural",
    status: str = "confirmed",
    starts_on: date = date(2025, 4, 10),
    days: int = 0,
    title: str = "exchange",
) -> AcceptedEvent:
    data: dict[str, Any] = {
        "event_id": event_id,
        "revision": revision,
        "kind": kind,
        "title": title,
        "host_country": host,
        "delegations": [
            {"country": c} if n is None else {"country": c, "participants": n} for c, n in delegations
        ],
        "starts_on": starts_on.isoformat(),
        "ends_on": (starts_on + timedelta(days=days)).isoformat(),
        "status": status,
        "partner_id": partner_id,
        "received_at": EPOCH.isoformat(),
    }
    return AcceptedEvent.model_validate(data)


def random_event(
    rng: random.Random,
    partner_id: str,
    event_id: str,
    revision: int = 1,
    countries: Sequence[str] = COUNTRIES,
    delegations: int = 2,
) -> AcceptedEvent:
    picked = rng.sample(list(countries), delegations + 1)
    return make_event(
        partner_id,
        event_id,
        revision=revision,
        host=picked[0],
        delegations=[(c, rng.choice((None, rng.randint(0, 500)))) for c in picked[1:]],
        kind=rng.choice(KINDS),
        status=rng.choices(STATUSES, weights=(3, 3, 3, 1))[0],
        starts_on=date(2024, 1, 1) + timedelta(days=rng.randint(0, 700)),
        days=rng.randint(0, 5),
        title=f"event {event_id} r{revision}",
    )


def produce_events(producer: Any, topic: str, events: Sequence[AcceptedEvent]) -> None:
    """Send ``events`` as ingest would (kafka-python ``producer``) and wait until all are acked."""
    for event in events:
        key, value, headers = encode_event(event)
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush(timeout=30)


def event_stream(
    rng: random.Random, n: int, partners: int = 5, correction_rate: float = 0.2, delegations: int = 2
) -> Iterator[AcceptedEvent]:
    """``n`` records: new events, corrections (new revision, possibly other countries), duplicates."""
    latest: dict[tuple[str, str], AcceptedEvent] = {}
    keys: list[tuple[str, str]] = []
    for i in range(n):
        roll = rng.random()
        if keys and roll < correction_rate:
            pid, eid = rng.choice(keys)
            prev = latest[(pid, eid)]
            event = random_event(rng, pid, eid, prev.revision + 1, delegations=delegations)
        elif keys and roll < correction_rate + 0.03:
            event = latest[rng.choice(keys)]  # a duplicate
        else:
            pid, eid = f"partner-{rng.randrange(partners)}", f"ev-{i}"
            event = random_event(rng, pid, eid, delegations=delegations)
            keys.append((pid, eid))
        latest[(event.partner_id, event.event_id)] = event
        yield event


# --- running workers and reading their output (integration tests, fault suite, bench) -----


def worker_env(settings: Any, **overrides: Any) -> dict[str, str]:
    """Environment variables that make ``handshake serve aggregator`` use ``settings``."""
    import os

    env = dict(os.environ)
    values = {
        "HANDSHAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HANDSHAKE_EVENTS_TOPIC": settings.events_topic,
        "HANDSHAKE_PARTNERS_TOPIC": settings.partners_topic,
        "HANDSHAKE_PAIR_STATS_TOPIC": settings.pair_stats_topic,
        "HANDSHAKE_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
    }
    for name, value in overrides.items():
        values[f"HANDSHAKE_AGGREGATOR_{name.upper()}"] = str(value)
    env.update(values)
    return env


class WorkerProcess:
    """One ``handshake serve aggregator`` subprocess (SIGKILL-able)."""

    def __init__(self, env: dict[str, str], web_port: int, log_path: Any) -> None:
        self.env = env
        self.web_port = web_port
        self.log_path = log_path
        self.proc: Any = None

    def start(self) -> WorkerProcess:
        import subprocess
        import sys
        from pathlib import Path

        exe = Path(sys.executable).parent / "handshake"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        self.proc = subprocess.Popen(
            [str(exe), "serve", "aggregator"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.web_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> float:
        import time

        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")
            if self.ready():
                return time.monotonic() - began
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def read_snapshots(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[str, Any]:
    """The latest PairStats per pair on the (compacted) pair-stats topic, read to its end."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    from schemas.records import decode_pair_stats

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.value is not None:
                        stats = decode_pair_stats(record.value)
                        seen = latest.get(stats.pair)
                        if seen is None or stats.version >= seen.version:
                            latest[stats.pair] = stats
        return latest
    finally:
        consumer.close()


def wait_for_truth(
    bootstrap: str, topic: str, events: Sequence[AcceptedEvent], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll the pair-stats topic until it matches :func:`merge.recompute`; return the differences."""
    import time

    from services.aggregator import merge

    truth = merge.recompute(events)
    deadline = time.monotonic() + timeout
    diff: dict[str, Any] = {"never read": True}
    while time.monotonic() < deadline:
        diff = merge.differences(truth, read_snapshots(bootstrap, topic))
        if not diff:
            return {}
        time.sleep(1.0)
    return diff
