"""Tripwires: one per hook of services/ingest/hooks.py, each failing loudly when a kafka-python or
aiokafka upgrade changes the private attribute or method the hook relies on. A real producer is
built against an address where no broker listens (with an explicit API version it connects
lazily, so nothing here waits for a broker)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import aiokafka
import kafka
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata as AioClusterMetadata
from kafka import KafkaProducer
from kafka.cluster import ClusterMetadata
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.producer.sender import Sender
from kafka.producer.transaction_manager import TransactionManager
from kafka.structs import TopicPartition

from services.ingest import hooks


@pytest.fixture
def producer() -> Iterator[KafkaProducer]:
    made = KafkaProducer(
        bootstrap_servers="127.0.0.1:9",  # the discard port: nothing listens
        api_version=(3, 0),
        enable_idempotence=True,
        acks="all",
        metrics_enabled=False,
    )
    yield made
    hooks.force_close(made)  # aborts what a test appended: close has nothing left to flush
    made.close(timeout=0)


def params(method: Any) -> list[str]:
    return list(inspect.signature(method).parameters)


def test_the_pinned_versions_are_the_ones_the_hooks_were_written_for() -> None:
    # an upgrade must come with a review of every hook below (and this line)
    assert (kafka.__version__, aiokafka.__version__) == ("3.0.12", "0.14.0")


def test_the_loop_driver_finds_and_replaces_what_it_drives(producer: KafkaProducer) -> None:
    sender = producer._sender
    assert isinstance(sender, Sender)
    # replaced on the instance by LoopDriver.attach, called by the driver with these arguments
    assert params(Sender.run_once) == ["self"] and params(Sender.wakeup) == ["self"]
    client = sender._client
    assert params(client.poll) == ["timeout_ms", "future"]
    assert hasattr(client, "_lock") and isinstance(sender._running, bool)
    net = client._net
    assert isinstance(net, NetworkSelector)
    assert params(net._poll_once) == ["timeout"] and params(net._next_scheduled_timeout) == ["now"]
    assert params(net.poll) == ["timeout_ms", "future"] and params(net.wakeup) == []
    assert isinstance(net._selector.fileno(), int) and hasattr(net, "_ready")
    manager = client._manager
    assert isinstance(manager, KafkaConnectionManager) and isinstance(manager._conns, dict)
    tm = producer._transaction_manager
    assert isinstance(tm, TransactionManager)
    for name in (
        "has_producer_id",
        "has_fatal_error",
        "is_bumping_epoch",
        "has_in_flight_transactional_request",
    ):
        assert getattr(tm, name)() is False, name  # LoopDriver.steady calls each without arguments
    assert hasattr(tm, "_pending_requests")

    async def attach() -> None:
        loop = asyncio.get_running_loop()
        driver = hooks.loop_driver(producer, loop)
        assert hooks.loop_driver(producer, loop) is driver  # once per producer and loop
        assert producer._sender.wakeup == driver.wakeup and client.poll == driver._poll
        assert not hooks.io_on_loop(producer)  # no producer id yet: the thread keeps the I/O
        driver._to_thread()

    asyncio.run(attach())


def test_accumulator_append_takes_a_keyed_record_and_says_when_to_wake_the_sender(
    producer: KafkaProducer,
) -> None:
    append = hooks.accumulator_append(producer)
    assert isinstance(producer._accumulator, RecordAccumulator)
    assert params(append)[:5] == ["tp", "timestamp_ms", "key", "value", "headers"]
    future, full, new_batch, *_ = append(TopicPartition("t", 0), None, b"k", b"v", [])
    assert isinstance(full, bool) and new_batch is True
    assert hasattr(future, "add_callback") and hasattr(future, "add_errback")
    assert hooks.sender_wakeup(producer) == producer._sender.wakeup


def test_known_partitions_reads_the_metadata_without_waiting(producer: KafkaProducer) -> None:
    assert isinstance(producer._metadata, ClusterMetadata)
    assert hooks.known_partitions(producer, "not-known-yet") is None


def test_request_metadata_update_returns_a_future(producer: KafkaProducer) -> None:
    future = hooks.request_metadata_update(producer)
    assert hasattr(future, "add_both") and hasattr(future, "is_done") and hasattr(future, "succeeded")


def test_transaction_manager_is_none_without_idempotence(producer: KafkaProducer) -> None:
    assert isinstance(hooks.transaction_manager(producer), TransactionManager)
    plain = KafkaProducer(bootstrap_servers="127.0.0.1:9", api_version=(3, 0), enable_idempotence=False)
    try:
        assert hooks.transaction_manager(plain) is None
    finally:
        plain.close(timeout=0)


def test_force_close_stops_the_sender_thread() -> None:
    made = KafkaProducer(bootstrap_servers="127.0.0.1:9", api_version=(3, 0), metrics_enabled=False)
    assert params(Sender.force_close) == ["self"]
    hooks.force_close(made)
    assert not made._sender.is_alive()
    made.close(timeout=0)


def test_cluster_partitions_come_from_a_fresh_metadata_fetch() -> None:
    init = inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert "self._client = AIOKafkaClient(" in init
    assert inspect.iscoroutinefunction(AIOKafkaClient.fetch_all_metadata)
    assert params(AIOKafkaClient.fetch_all_metadata) == ["self"]

    class Client:
        async def fetch_all_metadata(self) -> AioClusterMetadata:
            cluster = AioClusterMetadata()
            cluster._partitions = {"t": {0: None, 1: None}}  # as a metadata response fills it
            return cluster

    class Consumer:
        _client = Client()

    assert asyncio.run(hooks.cluster_partitions(Consumer(), "t")) == {0, 1}
    assert asyncio.run(hooks.cluster_partitions(Consumer(), "u")) is None
