"""Shared fixtures: a real Kafka broker for the session, per-test topic names, client factories.

The broker is, in order: ``HANDSHAKE_KAFKA_BOOTSTRAP`` when set, testcontainers' Kafka when a
Docker engine answers, else the native KRaft broker started from the Maven-fetched jars.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake.broker import Cluster, temporary_cluster
from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session", autouse=True)
def _private_random_for_aiokafka() -> Iterator[None]:
    """aiokafka shuffles with the global ``random`` module on every fetch (ingest's follower runs
    in the background of in-process tests); hypothesis reads any change of that global state
    while it generates a case as a strategy using ``random`` and fails the test. Give aiokafka
    its own generator."""
    import random

    import aiokafka.client
    import aiokafka.conn
    import aiokafka.consumer.fetcher

    modules = (aiokafka.client, aiokafka.conn, aiokafka.consumer.fetcher)
    saved = [m.random for m in modules]
    for m in modules:
        m.random = random.Random()
    yield
    for m, r in zip(modules, saved, strict=True):
        m.random = r


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster | None]:
    """The native cluster when this session started one (fault tests need it), else None."""
    if os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP") or (
        os.environ.get("HANDSHAKE_TEST_DOCKER") and _docker_answers()
    ):
        yield None
        return
    with temporary_cluster(tmp_path_factory.mktemp("kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: Cluster | None) -> Iterator[str]:
    env = os.environ.get("HANDSHAKE_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    if kafka_cluster is not None:
        yield kafka_cluster.bootstrap
        return
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        yield container.get_bootstrap_server()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """unique("name") -> "name-<random>": per-test names so tests never see each other's records."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Callable[..., str]:
    from schemas.topics import TopicSpec

    def make(prefix: str = "test", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        spec = TopicSpec(name=name, partitions=partitions, config=config or {}, key="", description="test")
        ensure_topics(kafka_bootstrap, [spec])
        return name

    return make


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Settings whose four topics are this test's own (created, with the declared policies)."""
    tag = uuid.uuid4().hex[:10]
    settings = KafkaSettings(
        kafka_bootstrap=kafka_bootstrap,
        events_topic=f"t{tag}.exchange-events.v1",
        partners_topic=f"t{tag}.partners.v1",
        pair_stats_topic=f"t{tag}.pair-stats.v1",
        dead_letter_topic=f"t{tag}.dead-letter.v1",
    )
    ensure_topics(kafka_bootstrap, settings.topic_specs())
    return settings


@pytest.fixture
def producer_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Any]]:
    from kafka import KafkaProducer

    made: list[KafkaProducer] = []

    def make(**config: Any) -> KafkaProducer:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", **config)
        made.append(producer)
        return producer

    yield make
    for p in made:
        with contextlib.suppress(Exception):
            p.close(timeout=5)


@pytest.fixture
def consumer_factory(kafka_bootstrap: str) -> Iterator[Callable[..., Any]]:
    """A consumer from the beginning with a random group per call."""
    from kafka import KafkaConsumer

    made: list[KafkaConsumer] = []

    def make(*topics: str, **config: Any) -> KafkaConsumer:
        config.setdefault("group_id", f"test-{uuid.uuid4().hex[:8]}")
        config.setdefault("auto_offset_reset", "earliest")
        config.setdefault("consumer_timeout_ms", 10000)
        consumer = KafkaConsumer(*topics, bootstrap_servers=kafka_bootstrap, **config)
        made.append(consumer)
        return consumer

    yield make
    for c in made:
        with contextlib.suppress(Exception):
            c.close()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for artefacts a test saves (screenshots, tables)."""
    path = Path(__file__).parent.parent / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
