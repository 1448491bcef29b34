"""Fixtures of the security suite: partners on this test's topics, an ingest subprocess."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from handshake.settings import KafkaSettings
from services.ingest.partners import create_partner
from tests.harness import Harness, Service
from tests.samples import EVENT


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    """A valid event with ``event_id`` and any field overridden."""
    return {**EVENT, "event_id": event_id, **fields}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of process ``pid`` from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def partner(kafka_settings: KafkaSettings) -> Callable[..., Any]:
    """``await partner(name, rate)`` -> (partner_id, key) on this test's partners topic."""

    async def make(name: str, rate: float = 10_000.0) -> tuple[str, str]:
        return await asyncio.to_thread(create_partner, kafka_settings, name, rate)

    return make


@pytest.fixture
def ingest_process(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``start(**env)`` runs ``handshake serve ingest`` on this test's topics (log in tmp_path/logs)."""
    harness = Harness(kafka_settings.kafka_bootstrap, tmp_path, settings=kafka_settings)

    def start(**env: str) -> Service:
        service = harness.add("ingest", {f"HANDSHAKE_{k.upper()}": v for k, v in env.items()})
        service.start()
        service.wait_ready(60)
        return service

    yield start
    harness.stop()


def read_topic(
    bootstrap: str, topic: str, timeout: float = 30.0, login: dict[str, Any] | None = None
) -> list[Any]:
    """Every record of ``topic`` up to its current end offsets (raw: key, value, headers);
    ``login``: a client's SASL/TLS arguments on a secured broker."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **{"bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False, **(login or {})}
    )
    try:
        deadline = time.monotonic() + timeout
        while not (parts := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no partitions for {topic}"
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def ingest_client(service: Service, **kwargs: Any) -> httpx.Client:
    kwargs.setdefault("timeout", 30)
    return httpx.Client(base_url=service.url, **kwargs)


def on_native_broker(request: pytest.FixtureRequest) -> Any:
    """The session's native Cluster (its data dir can be inspected), or None."""
    if os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP"):
        return None
    return request.getfixturevalue("kafka_cluster")
