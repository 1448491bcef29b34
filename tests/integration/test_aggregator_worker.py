"""The aggregator worker against a real broker: exact aggregates, dead letters, SIGKILLs, two workers."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from handshake.broker import free_port
from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics
from schemas.events import AcceptedEvent
from schemas.records import decode_dead_letter
from services.aggregator.main import topic_specs
from services.aggregator.settings import AggregatorSettings
from services.aggregator.testing import (
    WorkerProcess,
    event_stream,
    make_event,
    produce_events,
    wait_for_truth,
    worker_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def spawn(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """spawn(name, app_id=None) -> a started worker with its own web port and data dir."""
    app_id = unique("agg")
    made: list[WorkerProcess] = []
    settings = AggregatorSettings(**kafka_settings.model_dump(), app_id=app_id)
    ensure_topics(settings.kafka_bootstrap, topic_specs(settings))

    def make(name: str = "w1", data_dir: Path | None = None) -> WorkerProcess:
        port = free_port()
        env = worker_env(
            kafka_settings,
            app_id=app_id,
            data_dir=data_dir or tmp_path / name,
            web_port=port,
            session_timeout=6,
            commit_interval=0.5,
        )
        worker = WorkerProcess(env, port, tmp_path / f"{name}.log").start()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.kill()


def scenario_events() -> list[AcceptedEvent]:
    events = [
        make_event("pa", "e1", host="US", delegations=[("CN", 10), ("FR", 4)]),
        make_event("pa", "e2", host="FR", delegations=[("DE", 7)], kind="athletic"),
        make_event("pb", "e1", host="US", delegations=[("CN", 3)], status="announced"),
        make_event("pb", "e2", host="JP", delegations=[("SUHH", None)]),
        make_event("pa", "e1", revision=2, host="US", delegations=[("CN", 12)]),  # correction
        make_event("pa", "e2", revision=2, host="BR", delegations=[("KE", 1)]),  # country change
        make_event("pb", "e1", revision=2, host="US", delegations=[("CN", 3)], status="cancelled"),
        make_event("pb", "e2"),  # stale (revision 1 again, other content: conflict)
    ]
    events.append(events[4])  # duplicate
    events.append(make_event("pa", "e1", revision=1, host="DE", delegations=[("NG", 9)]))  # stale
    events.extend(event_stream(random.Random(7), 300, partners=4))
    return events


def test_aggregates_equal_ground_truth_and_poison_pills_are_dead_lettered(
    kafka_settings: KafkaSettings, spawn: Callable[..., WorkerProcess], producer_factory, consumer_factory
) -> None:
    producer = producer_factory()
    events = scenario_events()
    produce_events(producer, kafka_settings.events_topic, events[:150])
    ce = [("ce_type", b"org.handshake.exchange.v1"), ("ce_specversion", b"1.0")]
    pills = [
        (b"pa/bad1", b"{not json", ce),
        (b"pa/bad2", orjson.dumps({"event_id": "bad2", "kind": "nope"}), ce),
        (b"pa/bad3", b"{}", [("ce_type", b"org.example.other"), ("ce_specversion", b"1.0")]),
    ]
    metas = [
        producer.send(kafka_settings.events_topic, key=k, value=v, headers=h).get(timeout=10)
        for k, v, h in pills
    ]
    produce_events(producer, kafka_settings.events_topic, events[150:])

    worker = spawn()
    worker.wait_ready(90)
    assert httpx.get(f"http://127.0.0.1:{worker.web_port}/healthz").json() == {"status": "ok"}
    assert wait_for_truth(kafka_settings.kafka_bootstrap, kafka_settings.pair_stats_topic, events, 60) == {}

    letters = [decode_dead_letter(r.value) for r in consumer_factory(kafka_settings.dead_letter_topic)]
    by_key = {(letter.source_partition, letter.source_offset): letter for letter in letters}
    assert len(letters) == 3
    for meta, reason in zip(metas, ("invalid_json", "schema_invalid", "unknown_type"), strict=True):
        letter = by_key[(meta.partition, meta.offset)]
        assert letter.reason == reason and letter.source_topic == kafka_settings.events_topic

    metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics").text
    assert 'handshake_aggregator_dead_letters_total{reason="invalid_json"} 1.0' in metrics
    assert "handshake_aggregator_recovered 1.0" in metrics
    assert 'result="duplicate"' in metrics and "handshake_aggregator_consumer_lag{" in metrics


class Feeder(threading.Thread):
    """Produces events continuously until stopped; remembers every acknowledged event."""

    def __init__(self, producer: Any, topic: str, seed: int, rate: float = 400.0) -> None:
        super().__init__(daemon=True)
        self.producer, self.topic, self.rate = producer, topic, rate
        self.stream = event_stream(random.Random(seed), 10**9, partners=6)
        self.sent: list[AcceptedEvent] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            chunk = [next(self.stream) for _ in range(20)]
            produce_events(self.producer, self.topic, chunk)
            self.sent.extend(chunk)
            time.sleep(20 / self.rate)


def test_sigkill_three_times_loses_and_duplicates_nothing(
    kafka_settings: KafkaSettings, spawn: Callable[..., WorkerProcess], producer_factory, tmp_path: Path
) -> None:
    rng = random.Random(11)
    feeder = Feeder(producer_factory(), kafka_settings.events_topic, seed=3)
    feeder.start()
    data_dir = tmp_path / "w"
    worker = spawn("w1", data_dir)
    try:
        worker.wait_ready(90)
        time.sleep(rng.uniform(1.0, 3.0))
        worker.kill()  # 1: while processing
        worker = spawn("w2", data_dir)
        time.sleep(rng.uniform(0.5, 2.0))
        worker.kill()  # 2: right after restart, during start-up/recovery
        shutil.rmtree(data_dir / "faust", ignore_errors=True)  # 3rd start: rebuild from the changelog
        worker = spawn("w3", data_dir)
        worker.wait_ready(90)
        time.sleep(rng.uniform(1.0, 3.0))
        worker.kill()  # 3: while processing again
        worker = spawn("w4", data_dir)
        worker.wait_ready(90)
        time.sleep(1.0)
    finally:
        feeder.halt.set()
        feeder.join(30)
    assert len(feeder.sent) > 500
    diff = wait_for_truth(kafka_settings.kafka_bootstrap, kafka_settings.pair_stats_topic, feeder.sent, 90)
    assert diff == {}, f"{len(diff)} pairs differ, e.g. {next(iter(diff.items()))}"


def test_second_worker_takes_over_after_sigkill(
    kafka_settings: KafkaSettings, spawn: Callable[..., WorkerProcess], producer_factory
) -> None:
    feeder = Feeder(producer_factory(), kafka_settings.events_topic, seed=5)
    feeder.start()
    first, second = spawn("a"), spawn("b")
    try:
        first.wait_ready(90)
        second.wait_ready(90)
        time.sleep(2.0)
        first.kill()
        time.sleep(2.0)
    finally:
        feeder.halt.set()
        feeder.join(30)
    diff = wait_for_truth(kafka_settings.kafka_bootstrap, kafka_settings.pair_stats_topic, feeder.sent, 90)
    assert diff == {}, f"{len(diff)} pairs differ, e.g. {next(iter(diff.items()))}"
    assert second.ready() or second.proc.poll() is None


def test_events_with_the_most_delegations_are_counted_exactly(
    kafka_settings: KafkaSettings, spawn: Callable[..., WorkerProcess], producer_factory
) -> None:
    """64 delegations: 2,080 pairs per event, the biggest write set one record can cause."""
    from schemas.countries import all_countries
    from schemas.events import MAX_DELEGATIONS

    codes = [code for code, _ in all_countries() if len(code) == 2][: MAX_DELEGATIONS + 1]
    big = [(c, 5) for c in codes[1:]]
    events = [
        make_event("pa", "big", host=codes[0], delegations=big),
        *event_stream(random.Random(5), 200, partners=3),
        # a correction: the state also carries the previous contribution, too big for one batch
        make_event("pa", "big", revision=2, host=codes[1], delegations=[(codes[0], 7), *big[1:]]),
        make_event("pb", "big", host=codes[2], delegations=big[:1] + big[2:]),
    ]
    produce_events(producer_factory(), kafka_settings.events_topic, events)
    worker = spawn()
    worker.wait_ready(90)
    assert wait_for_truth(kafka_settings.kafka_bootstrap, kafka_settings.pair_stats_topic, events, 90) == {}
    metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics").text
    oversize = [
        line for line in metrics.splitlines() if line.startswith("handshake_aggregator_oversize_units_total")
    ]
    assert oversize and float(oversize[0].split()[-1]) >= 1
    cpu = {  # each stage's own work is counted (the bench's flatness figure rests on stage 1's)
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("handshake_aggregator_stage_cpu_seconds_total{")
    }
    assert cpu.keys() == {"stage1", "stage2"} and all(seconds > 0 for seconds in cpu.values())


def test_a_source_with_compaction_holes_is_read_through_and_counted_exactly(
    kafka_settings: KafkaSettings, spawn: Callable[..., WorkerProcess], producer_factory
) -> None:
    """Compaction leaves holes in the offsets of the events topic (and of an earlier release's
    compacted partials topic).

    A hole is not a skip: the worker must read on past it (the broker is asked where the log goes
    on) instead of seeking back to it forever. Seen with a lagging stage 2 at 1,000,000 events.
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    from handshake.topics import admin_client

    topic = kafka_settings.events_topic
    spec = next(s for s in kafka_settings.topic_specs() if s.name == topic)
    admin = admin_client(kafka_settings.kafka_bootstrap)
    try:  # tiny segments, cleaned as soon as the cleaner looks (every 5 s on the test broker)
        config = {**spec.config, "segment.bytes": "16384", "min.cleanable.dirty.ratio": "0.01"}
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
    finally:
        admin.close()
    rng = random.Random(5)
    events: list[AcceptedEvent] = []
    countries = ["US", "CN", "FR", "DE", "JP", "BR", "KE", "NG"]
    for revision in range(1, 9):  # every event corrected 7 times: compaction drops the older ones
        for i in range(60):
            host, guest = rng.sample(countries, 2)
            events.append(
                make_event(
                    f"p{i % 3}", f"e{i}", revision=revision, host=host, delegations=[(guest, revision)]
                )
            )
    producer = producer_factory()
    produce_events(producer, topic, events)

    def holes() -> int:
        """Offsets missing before or between the records of the topic, as aiokafka reads them."""

        async def read() -> dict[int, list[int]]:
            from aiokafka import AIOKafkaConsumer, TopicPartition

            consumer = AIOKafkaConsumer(bootstrap_servers=kafka_settings.kafka_bootstrap, group_id=None)
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(spec.partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                seen: dict[int, list[int]] = {tp.partition: [] for tp in tps}
                while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                    for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                        seen[tp.partition].extend(r.offset for r in records)
                return seen
            finally:
                await consumer.stop()

        found = 0
        for offsets in asyncio.run(read()).values():
            found += sum(1 for a, b in itertools.pairwise([-1, *offsets]) if b > a + 1)
        return found

    deadline = time.monotonic() + 60
    while holes() == 0:
        assert time.monotonic() < deadline, "the broker never compacted the events topic"
        produce_events(producer, topic, events[-1:])  # rolls the segment the cleaner waits on
        time.sleep(2)

    worker = spawn()
    worker.wait_ready(90)
    assert wait_for_truth(kafka_settings.kafka_bootstrap, kafka_settings.pair_stats_topic, events, 90) == {}
    metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics").text

    def counter(name: str) -> float:
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln.startswith(name))

    assert counter('handshake_aggregator_log_holes_total{stage="stage1"}') >= 1
    # the gaps were holes, not taken for skipped records and sought back to (without the probe,
    # ~10 seeks here; 1 seen in 15 runs with it: records faust really skipped once, or a probe late)
    assert counter("handshake_aggregator_source_gaps_total{") <= 2
