"""The partials topic on a real broker: purged below what stage 2 committed, and an earlier
release's compacted topic of single partials taken over without losing one."""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.partitioner.default import murmur2

from handshake.broker import free_port
from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics
from services.aggregator import domain
from services.aggregator.main import topic_specs
from services.aggregator.settings import AggregatorSettings
from services.aggregator.testing import (
    WorkerProcess,
    event_stream,
    produce_events,
    read_snapshots,
    wait_for_truth,
    worker_env,
)

pytestmark = pytest.mark.integration


def start_worker(kafka: KafkaSettings, app_id: str, data_dir: Path, log: Path) -> WorkerProcess:
    port = free_port()
    env = worker_env(
        kafka, app_id=app_id, data_dir=data_dir, web_port=port, commit_interval=0.5, purge_interval=1
    )
    return WorkerProcess(env, port, log).start()


def log_starts(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.beginning_offsets(tps).items()}
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        admin.close()


def policy(bootstrap: str, topic: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return str(described["topic"][topic]["cleanup.policy"]["value"])
    finally:
        admin.close()


def test_taken_partials_are_purged_and_a_restart_after_the_purge_stays_exact(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], producer_factory: Any, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.kafka_bootstrap
    app_id = unique("agg")
    settings = AggregatorSettings(**kafka_settings.model_dump(), app_id=app_id)
    ensure_topics(bootstrap, topic_specs(settings))
    assert policy(bootstrap, settings.partials_topic) == "delete"
    producer = producer_factory()
    events = list(event_stream(random.Random(11), 400, partners=4))

    produce_events(producer, kafka_settings.events_topic, events[:250])
    worker = start_worker(kafka_settings, app_id, tmp_path / "w", tmp_path / "w1.log")
    try:
        worker.wait_ready(90)
        assert wait_for_truth(bootstrap, kafka_settings.pair_stats_topic, events[:250], 60) == {}
        deadline = time.monotonic() + 30
        while sum(log_starts(bootstrap, settings.partials_topic).values()) == 0:
            assert time.monotonic() < deadline, "no partials were purged"
            time.sleep(0.5)
        starts = log_starts(bootstrap, settings.partials_topic)
        done = committed(bootstrap, app_id, settings.partials_topic)
        assert all(start <= done.get(p, 0) for p, start in starts.items()), (starts, done)
        worker.kill()  # SIGKILL: resumes from committed offsets, at or above the purged start
        produce_events(producer, kafka_settings.events_topic, events[250:])
        worker = start_worker(kafka_settings, app_id, tmp_path / "w", tmp_path / "w2.log")
        worker.wait_ready(90)
        assert wait_for_truth(bootstrap, kafka_settings.pair_stats_topic, events, 60) == {}
    finally:
        worker.kill()


def test_an_earlier_release_topic_of_single_compacted_partials_is_taken_over(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], producer_factory: Any, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.kafka_bootstrap
    app_id = unique("agg")
    settings = AggregatorSettings(**kafka_settings.model_dump(), app_id=app_id)
    earlier = [
        dataclasses.replace(spec, config={"cleanup.policy": "compact"})
        if spec.name == settings.partials_topic
        else spec
        for spec in topic_specs(settings)
    ]
    ensure_topics(bootstrap, earlier)
    assert policy(bootstrap, settings.partials_topic) == "compact"
    # what an earlier stage 1 published and its stage 2 never took: one record per partial,
    # every start date's count in the partial, keyed by (pair, source partition)
    legacy = {
        3: {**domain.empty_partial(), "active_events": 2, "participants": 7, "updates": 4},
        8: {**domain.empty_partial(), "active_events": 1, "participants": 2, "updates": 1},
    }
    legacy[3].update(by_kind={"civic": 2}, by_month={"1951-02": 1, "2026-01": 1}, checksum=5)
    legacy[3].update(by_status={"confirmed": 2}, by_direction={"CN>US": 2})
    legacy[8].update(by_kind={"civic": 1}, by_month={"1990-07": 1}, checksum=9)
    legacy[8].update(by_status={"confirmed": 1}, by_direction={"CN>US": 1})
    legacy[3]["dates"] = {"1951-02-03": 1, "2026-01-30": 1}
    legacy[8]["dates"] = {"1990-07-14": 1}
    producer = producer_factory()
    # keyed by (pair, source partition) but partitioned by pair, as that release published them
    pair_partition = (murmur2(b"CN-US") & 0x7FFFFFFF) % settings.topic_partitions
    for source, partial in legacy.items():
        del partial["first_date"], partial["last_date"]
        body = {"pair": "CN-US", "partition": source, "updates": partial["updates"], "partial": partial}
        producer.send(
            settings.partials_topic,
            key=domain.partial_key("CN-US", source).encode(),
            value=orjson.dumps(body),
            partition=pair_partition,
        )
    producer.flush(timeout=30)

    worker = start_worker(kafka_settings, app_id, tmp_path / "w", tmp_path / "w1.log")
    try:
        worker.wait_ready(90)
        assert policy(bootstrap, settings.partials_topic) == "delete"
        # the two partials may reach stage 2 in two batches: a snapshot each, the last has both
        deadline = time.monotonic() + 60
        while (stats := read_snapshots(bootstrap, kafka_settings.pair_stats_topic).get("CN-US")) is None or (
            stats.version < 5
        ):
            assert time.monotonic() < deadline, (
                f"the earlier release's partials were never all taken: {stats}"
            )
            time.sleep(0.5)
        assert (stats.active_events, stats.participants, stats.version) == (3, 9, 5)
        assert (str(stats.first_date), str(stats.last_date)) == ("1951-02-03", "2026-01-30")
        assert stats.by_month == {"1951-02": 1, "1990-07": 1, "2026-01": 1}
    finally:
        worker.kill()


def changelog_ends(bootstrap: str, topics: list[str], partitions: int) -> int:
    # every partition named: a new consumer's partitions_for_topic may not know a topic yet
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def test_a_worker_that_lost_its_disk_restores_its_tables_from_the_changelogs(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], producer_factory: Any, tmp_path: Path
) -> None:
    """Local tables deleted: filled from the changelogs before faust starts, then exact on later
    events, corrections of earlier ones among them."""
    bootstrap = kafka_settings.kafka_bootstrap
    app_id = unique("agg")
    settings = AggregatorSettings(**kafka_settings.model_dump(), app_id=app_id)
    ensure_topics(bootstrap, topic_specs(settings))
    producer = producer_factory()
    events = list(event_stream(random.Random(5), 500, partners=4, correction_rate=0.3))

    produce_events(producer, kafka_settings.events_topic, events[:300])
    worker = start_worker(kafka_settings, app_id, tmp_path / "w", tmp_path / "w1.log")
    try:
        worker.wait_ready(90)
        assert wait_for_truth(bootstrap, kafka_settings.pair_stats_topic, events[:300], 60) == {}
        worker.stop()
        changelogs = [f"{app_id}-state-changelog", f"{app_id}-pairs-changelog"]
        written = changelog_ends(bootstrap, changelogs, settings.topic_partitions)
        shutil.rmtree(tmp_path / "w")  # the disk is lost
        produce_events(producer, kafka_settings.events_topic, events[300:])
        worker = start_worker(kafka_settings, app_id, tmp_path / "w", tmp_path / "w2.log")
        worker.wait_ready(90)
        # every record (no compaction at this size); it once restored none: seek_to_beginning()
        # lost to the consumer's pending reset to "latest"
        assert metric(worker, "handshake_aggregator_restored_records") == written > 0
        assert wait_for_truth(bootstrap, kafka_settings.pair_stats_topic, events, 60) == {}
    finally:
        worker.kill()


def metric(worker: WorkerProcess, name: str) -> float:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics").text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))
