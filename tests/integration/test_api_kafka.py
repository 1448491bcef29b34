"""The api against the real broker: materialisation, live delivery, resumption, restart."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from handshake.settings import KafkaSettings
from schemas.records import encode_pair_stats
from services.api.consumer import ConsumerStalled, StallGuard, check_stall, wait_for_partitions
from services.api.testing import EventReader, make_stats, running_api

pytestmark = pytest.mark.integration


@pytest.fixture
def produce(producer_factory: Callable[..., Any], kafka_settings: KafkaSettings) -> Callable[..., None]:
    producer = producer_factory()

    def send(*snapshots: Any, raw: bytes | None = None) -> None:
        for s in snapshots:
            key, value = encode_pair_stats(s)
            producer.send(kafka_settings.pair_stats_topic, key=key, value=value)
        if raw is not None:
            producer.send(kafka_settings.pair_stats_topic, key=b"XX-YY", value=raw)
        producer.flush(timeout=10)

    return send


async def test_produced_snapshots_reach_rest_and_sse_within_a_second(kafka_settings, produce) -> None:  # type: ignore[no-untyped-def]
    produce(make_stats("CN", "US", events=2), raw=b"not json")
    with running_api(kafka_settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/v1/pairs/US/CN")).json()["active_events"] == 2
            async with client.stream("GET", "/v1/stream", params={"country": "FR"}) as r:
                events = EventReader(r)
                assert (await events.next()).event == "hello"
                started = time.monotonic()
                await asyncio.to_thread(produce, make_stats("DE", "FR", events=7))
                [event] = await events.until(1, seconds=5)
                sse_delay = time.monotonic() - started
            assert orjson.loads(event.data)["active_events"] == 7
            assert sse_delay < 1.0, f"SSE delivery took {sse_delay:.3f}s"

            started = time.monotonic()
            await asyncio.to_thread(produce, make_stats("FR", "US", events=4))
            while (await client.get("/v1/pairs/FR/US")).status_code != 200:
                assert time.monotonic() - started < 5
                await asyncio.sleep(0.01)
            rest_delay = time.monotonic() - started
            assert rest_delay < 1.0, f"REST visibility took {rest_delay:.3f}s"
            metrics = (await client.get("/metrics")).text
            assert 'handshake_api_records_total{result="invalid"} 1.0' in metrics
            assert "handshake_api_view_pairs 3.0" in metrics
            print(f"delay: sse {sse_delay * 1000:.0f} ms, rest {rest_delay * 1000:.0f} ms")


async def test_reconnect_with_last_event_id_receives_exactly_what_was_missed(kafka_settings, produce) -> None:  # type: ignore[no-untyped-def]
    with running_api(kafka_settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with client.stream("GET", "/v1/stream", params={"country": "US"}) as r:
                events = EventReader(r)
                await events.next()
                await asyncio.to_thread(produce, make_stats("CN", "US", version=1))
                [seen] = await events.until(1)
            # disconnected: these happen meanwhile (one does not match the filter)
            await asyncio.to_thread(
                produce,
                make_stats("CN", "US", version=2, events=5),
                make_stats("DE", "FR", version=1),
                make_stats("BR", "US", version=1, events=3),
            )
            deadline = time.monotonic() + 5
            while (await client.get("/v1/summary")).json()["pairs"] < 3:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            headers = {"Last-Event-ID": seen.id}
            async with client.stream("GET", "/v1/stream", params={"country": "US"}, headers=headers) as r:
                events = EventReader(r)
                missed = await events.until(2)
                await asyncio.to_thread(produce, make_stats("CN", "US", version=3, events=6))
                [live] = await events.until(1)
    got = [(orjson.loads(e.data)["pair"], orjson.loads(e.data)["version"]) for e in [*missed, live]]
    # partitions may reorder different pairs; per pair the order is the produce order
    assert sorted(got[:2]) == [("BR-US", 1), ("CN-US", 2)]
    assert got[2] == ("CN-US", 3)
    ids = [int(e.id) for e in [seen, *missed, live]]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_restart_rebuilds_the_same_view_and_stale_versions_never_win(kafka_settings, produce) -> None:  # type: ignore[no-untyped-def]
    produce(
        *[make_stats("CN", "US", version=v, events=v) for v in (1, 2, 3)],
        make_stats("DE", "FR", version=5, events=5),
        make_stats("DE", "FR", version=4, events=99),  # stale, after the newer one
        *[make_stats("JP", code, events=i + 1) for i, code in enumerate(["BR", "IT", "KR", "MX"])],
    )
    answers = []
    for _ in range(2):
        with running_api(kafka_settings) as url, httpx.Client(base_url=url) as client:
            pairs = client.get("/v1/pairs", params={"limit": 100}).json()
            summary = client.get("/v1/summary").json()
            answers.append(
                (
                    [(i["pair"], i["version"], i["active_events"]) for i in pairs["items"]],
                    {k: summary[k] for k in ("pairs", "active_events", "participants", "by_kind")},
                )
            )
            assert client.get("/v1/pairs/fr/de").json()["version"] == 5
            # live: a stale snapshot produced now does not overwrite either
            produce(make_stats("CN", "US", version=2, events=77))
            time.sleep(0.5)
            assert client.get("/v1/pairs/CN/US").json()["active_events"] == 3
    assert answers[0] == answers[1]
    assert answers[0][0][:2] == [("DE-FR", 5, 5), ("JP-MX", 1, 4)]
    assert answers[0][1]["pairs"] == 6


def test_a_consumer_that_stops_fetching_behind_the_end_is_reported_stalled(kafka_settings, produce) -> None:  # type: ignore[no-untyped-def]
    """The view's stall check on a real broker: a consumer that does not fetch (paused here, as
    a client stuck after a broker fault) while records wait is stalled; once it reads, it is not."""
    produce(make_stats("CN", "US", version=1), make_stats("DE", "FR", version=1))
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **kafka_settings.kafka_python_config(),
    )
    try:
        partitions = wait_for_partitions(consumer, kafka_settings.pair_stats_topic, threading.Event())
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        consumer.pause(*partitions)
        guard: StallGuard[TopicPartition] = StallGuard(10)
        check_stall(guard, consumer, partitions, now=0)  # behind: the clock starts
        check_stall(guard, consumer, partitions, now=9)
        with pytest.raises(ConsumerStalled, match="records behind"):
            check_stall(guard, consumer, partitions, now=10)
        consumer.resume(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 10
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, "the resumed consumer did not catch up"
            consumer.poll(timeout_ms=200)
        check_stall(guard, consumer, partitions, now=30)  # caught up: not stalled
        check_stall(guard, consumer, partitions, now=60)
    finally:
        consumer.close(autocommit=False)
