"""Ingest against a real broker: acknowledged writes, batches, revocation, isolation, outages, restarts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.net.selector import NetworkSelector
from kafka.partitioner.default import murmur2 as java_murmur2
from typer.testing import CliRunner

from handshake import cli_partners
from handshake.broker import temporary_cluster
from handshake.settings import KafkaSettings
from handshake.topics import ensure_topics
from schemas.records import decode_event
from services.ingest.partners import create_partner, read_partners
from services.ingest.producer import KafkaPublisher
from services.ingest.testing import ingest_settings, records_of, running_ingest
from tests.samples import EVENT

pytestmark = pytest.mark.integration


@pytest.fixture
def blocking_calls_on_this_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records the calls that block (DNS lookups, kafka-python's waiting poll) made on the test's
    event-loop thread: the Kafka client must never make them there."""
    here = threading.get_ident()
    seen: list[str] = []
    real_getaddrinfo, real_poll = socket.getaddrinfo, NetworkSelector.poll

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == here:
            seen.append(f"socket.getaddrinfo{args[:2]}")
        return real_getaddrinfo(*args, **kwargs)

    def poll(self: NetworkSelector, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == here:
            seen.append("NetworkSelector.poll")
        return real_poll(self, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(NetworkSelector, "poll", poll)
    yield seen


def _gauge(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_the_producers_io_runs_on_the_event_loop_once_steady(
    kafka_settings: KafkaSettings,
    consumer_factory: Any,
    blocking_calls_on_this_thread: list[str],
) -> None:
    publisher = KafkaPublisher(ingest_settings(kafka_settings))
    await asyncio.to_thread(publisher.start)  # connecting and the producer id: in kafka-python's thread
    sender = publisher._producer._sender  # type: ignore[union-attr]
    try:
        assert not publisher.io_on_loop()
        records = [(f"loop-{i}".encode(), b"{}", []) for i in range(300)]
        deadline = time.monotonic() + 10
        sent = 0
        while not publisher.io_on_loop():  # the producer's thread hands over at its next iteration
            assert time.monotonic() < deadline, "the event loop never took over the producer's I/O"
            outcomes = await publisher.publish([records[sent]], 10)
            assert outcomes[0].ok, outcomes
            sent += 1
        # on the loop now: many concurrent publishes, all acknowledged there
        results = await asyncio.gather(*(publisher.publish([r], 10) for r in records[sent:]))
        assert all(outcome.ok for outcomes in results for outcome in outcomes)
        assert publisher.io_on_loop()
        assert sender.is_alive()  # parked, ready to take over when a connection has to be made
    finally:
        await asyncio.to_thread(publisher.close)
    assert not sender.is_alive()  # close handed the I/O back to the thread, which ended
    assert blocking_calls_on_this_thread == []
    on_topic = records_of(consumer_factory, kafka_settings.events_topic, len(records))
    assert sorted(r.key for r in on_topic) == sorted(key for key, _, _ in records)
    # appended straight to the accumulator, yet on the partition the Java client would pick
    (spec,) = [t for t in kafka_settings.topic_specs() if t.name == kafka_settings.events_topic]
    assert all(r.partition == (java_murmur2(r.key) & 0x7FFFFFFF) % spec.partitions for r in on_topic)


async def test_accepted_push_is_on_the_topic_with_key_and_cloudevents_headers(
    kafka_settings: KafkaSettings, consumer_factory: Any
) -> None:
    settings = ingest_settings(kafka_settings)
    pid, key = await asyncio.to_thread(create_partner, settings, "Euro Twinning", 100)
    async with running_ingest(settings, key) as client:
        resp = await client.post("/v1/events", json=EVENT)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"status": "accepted", "key": f"{pid}/e-1", "revision": 1}
        # acknowledged means it is there now
        [record] = await asyncio.to_thread(records_of, consumer_factory, settings.events_topic, 1)
    assert record.key == f"{pid}/e-1".encode()
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"org.handshake.exchange.v1"
    assert headers["ce_source"] == f"/partners/{pid}".encode()
    assert headers["ce_id"] == f"{pid}/e-1/1".encode()
    assert headers["content-type"] == b"application/json"
    event = decode_event(record.key, record.value, record.headers)
    assert event.partner_id == pid
    assert event.title == EVENT["title"]


@pytest.mark.parametrize("workers", [0, 1], ids=["on-the-loop", "in-a-worker-process"])
async def test_batch_of_1000_with_10_invalid(
    kafka_settings: KafkaSettings, consumer_factory: Any, workers: int
) -> None:
    settings = ingest_settings(kafka_settings, batch_workers=workers)
    _, key = await asyncio.to_thread(create_partner, settings, "Bulk Partner", 10_000)
    invalid = set(range(5, 1000, 100))
    lines = []
    for i in range(1000):
        item = {**EVENT, "event_id": f"b-{i}"}
        if i in invalid:
            item["host_country"] = "ZZ"
        lines.append(orjson.dumps(item))
    async with running_ingest(settings, key, batch_workers_up=workers > 0) as client:
        resp = await client.post(
            "/v1/events/batch", content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"}
        )
        metrics = (await client.get("/metrics")).text
    assert f"ingest_batch_workers {workers:.1f}" in metrics
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["accepted"], body["rejected"], body["duplicate"], body["unavailable"]) == (990, 10, 0, 0)
    rejected = [r for r in body["results"] if r["status"] == "rejected"]
    assert [r["index"] for r in rejected] == sorted(invalid)
    assert all(r["line"] == r["index"] + 1 for r in rejected)
    assert all(r["errors"][0]["pointer"] == "/host_country" for r in rejected)
    records = await asyncio.to_thread(records_of, consumer_factory, settings.events_topic, 990)
    assert len(records) == 990
    assert len({r.key for r in records}) == 990


async def test_cli_revocation_is_refused_within_a_second(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ingest_settings(kafka_settings)
    for name, value in kafka_settings.model_dump().items():
        if value is not None:
            monkeypatch.setenv(f"HANDSHAKE_{name.upper()}", str(value))
    runner = CliRunner()
    added = await asyncio.to_thread(runner.invoke, cli_partners.app, ["add", "Revoke Me", "--rate", "20"])
    assert added.exit_code == 0, added.output
    fields = dict(line.split(":", 1) for line in added.stdout.splitlines() if ":" in line)
    pid, key = fields["partner_id"].strip(), fields["api_key"].strip()
    assert key.startswith(f"hsk_{pid}_")
    listed = await asyncio.to_thread(runner.invoke, cli_partners.app, ["list", "--json"])
    assert orjson.loads(listed.stdout.splitlines()[0])["partner_id"] == pid
    assert key not in listed.stdout
    async with running_ingest(settings, key) as client:
        assert (await client.post("/v1/events", json=EVENT)).status_code == 202
        revoked = await asyncio.to_thread(runner.invoke, cli_partners.app, ["revoke", pid])
        assert revoked.exit_code == 0, revoked.output
        done = time.monotonic()
        while (await client.post("/v1/events", json={**EVENT, "event_id": "e-2"})).status_code != 401:
            assert time.monotonic() - done < 1.0, "revocation not applied within 1 s"
            await asyncio.sleep(0.02)
    [record] = await asyncio.to_thread(read_partners, settings)
    assert record.revoked_at is not None


async def test_partner_cannot_cancel_another_partners_event(
    kafka_settings: KafkaSettings, consumer_factory: Any
) -> None:
    settings = ingest_settings(kafka_settings)
    pid_a, key_a = await asyncio.to_thread(create_partner, settings, "Partner A", 100)
    pid_b, key_b = await asyncio.to_thread(create_partner, settings, "Partner B", 100)
    async with running_ingest(settings, key_b) as b:
        assert (await b.post("/v1/events", json=EVENT)).status_code == 202
        a_delete = await b.delete("/v1/events/e-1", headers={"Authorization": f"Bearer {key_a}"})
        assert a_delete.status_code == 404
        assert a_delete.headers["content-type"] == "application/problem+json"
        # B itself can cancel it
        own = await b.delete("/v1/events/e-1")
        assert own.json() == {"status": "accepted", "key": f"{pid_b}/e-1", "revision": 2}
    records = await asyncio.to_thread(records_of, consumer_factory, settings.events_topic, 3, 3000)
    assert [r.key for r in records] == [f"{pid_b}/e-1".encode()] * 2
    events = [decode_event(r.key, r.value, r.headers) for r in records]
    assert [(e.revision, e.status.value) for e in events] == [(1, "announced"), (2, "cancelled")]
    assert not any(r.key.startswith(pid_a.encode()) for r in records)


async def test_restart_rebuilds_the_view_so_a_resend_is_duplicate(kafka_settings: KafkaSettings) -> None:
    settings = ingest_settings(kafka_settings)
    _, key = await asyncio.to_thread(create_partner, settings, "Restarting", 100)
    async with running_ingest(settings, key) as first:
        assert (await first.post("/v1/events", json={**EVENT, "revision": 2})).json()["status"] == "accepted"
    async with running_ingest(settings, key) as second:
        again = await second.post("/v1/events", json={**EVENT, "revision": 2})
        assert again.status_code == 202
        assert again.json()["status"] == "duplicate"
        stale = await second.post("/v1/events", json={**EVENT, "revision": 1})
        assert stale.status_code == 409


async def test_a_replaced_producer_ends_and_its_successor_takes_over_the_loop(
    kafka_settings: KafkaSettings, blocking_calls_on_this_thread: list[str]
) -> None:
    """What ingest does with a wedged producer: a new one serves, the old one's thread ends."""
    publisher = KafkaPublisher(ingest_settings(kafka_settings))
    await asyncio.to_thread(publisher.start)
    try:
        for i in range(20):
            assert (await publisher.publish([(f"old-{i}".encode(), b"{}", [])], 10))[0].ok
        old = publisher._producer
        assert old is not None
        await asyncio.to_thread(publisher._replace_producer)  # as the probe thread does
        assert publisher._producer is not old and publisher.replacements == 1
        deadline = time.monotonic() + 10
        i = 0
        while not publisher.io_on_loop():
            assert time.monotonic() < deadline, "the new producer's I/O never came to the loop"
            assert (await publisher.publish([(f"new-{i}".encode(), b"{}", [])], 10))[0].ok
            i += 1
        await asyncio.to_thread(old._sender.join, 10)
        assert not old._sender.is_alive(), "the replaced producer's thread still runs"
        assert old._closed
    finally:
        await asyncio.to_thread(publisher.close)
    assert blocking_calls_on_this_thread == []


async def test_broker_outage_is_503_within_bound_then_recovers(
    tmp_path: Path, blocking_calls_on_this_thread: list[str]
) -> None:
    with temporary_cluster(tmp_path / "kafka") as cluster:
        kafka = KafkaSettings(kafka_bootstrap=cluster.bootstrap)
        await asyncio.to_thread(ensure_topics, cluster.bootstrap, kafka.topic_specs())
        settings = ingest_settings(kafka, ack_timeout_s=2.0, retry_after_s=1)
        _, key = await asyncio.to_thread(create_partner, settings, "Outage", 1000)
        async with running_ingest(settings, key) as client:
            assert (await client.post("/v1/events", json=EVENT)).status_code == 202
            await _until_gauge(client, "ingest_producer_io_on_loop", 1.0)
            await asyncio.to_thread(cluster.stop)  # clean stop: restarts faster than after SIGKILL
            try:
                started = time.monotonic()
                resp = await client.post("/v1/events", json={**EVENT, "event_id": "during-outage"})
                elapsed = time.monotonic() - started
                assert resp.status_code == 503, resp.text
                assert resp.headers["retry-after"] == "1"
                assert elapsed < settings.ack_timeout_s + 1.0
                deadline = time.monotonic() + 10
                while (await client.get("/readyz")).status_code != 503:
                    assert time.monotonic() < deadline, "readyz still 200 with the broker down"
                    await asyncio.sleep(0.2)
                # reconnecting (DNS lookups, waits) is left to the producer's own thread
                await _until_gauge(client, "ingest_producer_io_on_loop", 0.0)
            finally:
                await asyncio.to_thread(cluster.start)
            # recovers by itself: the same event is accepted (or duplicate, if the first attempt landed late)
            deadline = time.monotonic() + 60
            while True:
                resp = await client.post("/v1/events", json={**EVENT, "event_id": "during-outage"})
                if resp.status_code == 202:
                    break
                assert resp.status_code == 503, resp.text
                assert time.monotonic() < deadline, "ingest did not recover after the broker returned"
                await asyncio.sleep(0.5)
            assert resp.json()["status"] in ("accepted", "duplicate")
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            await _until_gauge(client, "ingest_producer_io_on_loop", 1.0)  # and the loop took it back
    assert blocking_calls_on_this_thread == []


async def _until_gauge(client: Any, name: str, value: float, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while (seen := _gauge((await client.get("/metrics")).text, name)) != value:
        assert time.monotonic() < deadline, f"{name} stayed {seen}, expected {value}"
        await asyncio.sleep(0.1)
