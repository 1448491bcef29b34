"""Beyond one machine, shown on one (issue 7): a three-broker KRaft cluster (replication factor 3,
min.insync.replicas=2), two aggregator workers and two ingest replicas. One broker and one worker
are SIGKILLed during the run; the aggregates still end exact."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient

from handshake.broker import Cluster, temporary_cluster
from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics
from tests.faults.common import record, scale, wait_until
from tests.harness import Harness
from tests.loadgen import LoadGenerator, ground_truth, wait_exact

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with temporary_cluster(tmp_path_factory.mktemp("kafka3"), brokers=3) as c:
        yield c


def test_three_brokers_two_workers_two_ingest_lose_a_broker_and_a_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    tag = f"c{random.randrange(16**6):06x}"
    settings = KafkaSettings(
        kafka_bootstrap=cluster.bootstrap,
        events_topic=f"{tag}.exchange-events.v1",
        partners_topic=f"{tag}.partners.v1",
        pair_stats_topic=f"{tag}.pair-stats.v1",
        dead_letter_topic=f"{tag}.dead-letter.v1",
        replication_factor=3,
        min_insync_replicas=2,
    )
    ensure_topics(cluster.bootstrap, settings.topic_specs(), replication_factor=3)
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        # a broker may answer before the new topic's metadata reached it: wait until it lists
        # the partitions, then check their replicas
        def partitions() -> list[dict[str, Any]]:
            return list(admin.describe_topics([settings.events_topic])[0]["partitions"])

        wait_until(lambda: bool(partitions()), 30)
        assert {len(p["replica_nodes"]) for p in partitions()} == {3}
    finally:
        admin.close()

    h = Harness(cluster.bootstrap, tmp_path, settings=settings)
    fast_failover = {"HANDSHAKE_AGGREGATOR_SESSION_TIMEOUT": "6"}
    names = ["aggregator", "aggregator-2", "ingest", "ingest-2", "api"]
    try:
        for name in names:
            h.add(name, fast_failover if name.startswith("aggregator") else None).start()
        for name in names:
            h[name].wait_ready(180)
        keys = dict(h.partner(f"Cluster partner {i}") for i in range(2))
        loads = [
            LoadGenerator(h[name].url, keys, rate=scale(30, 60), threads=2, seed=70 + i, request_timeout=15)
            for i, name in enumerate(("ingest", "ingest-2"))
        ]
        for load in loads:
            load.start()
        time.sleep(scale(5, 15))
        cluster.kill(2, signal.SIGKILL)  # one broker of three: acks=all still succeed with 2 in sync
        time.sleep(scale(3, 10))
        h["aggregator-2"].kill()  # its partitions move to the surviving worker (standby replicas)
        time.sleep(scale(10, 30))
        for load in loads:
            load.stop()
        truth_events = {}
        for load in loads:
            truth_events.update(load.outcomes.truth_events)
        figures, seconds = wait_exact(h["api"].url, ground_truth(truth_events), 180)
        acked = sum(load.outcomes.acknowledged for load in loads)
        record(
            "cluster: 3 brokers, 2 workers, 2 ingest; 1 broker + 1 worker SIGKILL",
            acknowledged=acked,
            lost=figures["lost"],
            duplicated=figures["duplicated"],
            pairs_differing=figures["pairs_differing"],
            recovery_s=round(seconds, 1),
            total_s=round(time.monotonic() - started, 1),
        )
        assert acked > 0
        assert figures == {"lost": 0, "duplicated": 0, "pairs_differing": 0}
        assert h["aggregator"].alive() and h["ingest"].alive() and h["ingest-2"].alive()
    finally:
        h.stop()
