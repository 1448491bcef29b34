"""Tripwires: one per hook of services/aggregator/hooks.py, each failing loudly when a faust or
aiokafka upgrade changes the private attribute or method the hook relies on."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aiokafka
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from faust.stores import memory, rocksdb
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer

from services.aggregator import hooks


def _lines(obj: Any) -> list[str]:
    return [line.strip() for line in inspect.getsource(obj).splitlines()]


def test_the_pinned_versions_are_the_ones_the_hooks_were_written_for() -> None:
    # an upgrade must come with a review of every hook below (and this line)
    assert (faust.__version__, aiokafka.__version__) == ("0.15.3", "0.14.0")


def test_unacked_messages_is_the_set_faust_acks_from() -> None:
    assert "self._unacked_messages = WeakSet()" in _lines(Consumer.__init__)
    ack = "\n".join(_lines(Consumer.ack))
    assert "if not message.acked:" in ack  # a message marked acked is skipped: never committed
    assert "self._unacked_messages.discard(message)" in ack

    class Fake:
        _unacked_messages = {"m"}

    assert hooks.unacked_messages(Fake()) == {"m"}


def test_committed_offset_is_faust_s_per_generation_map() -> None:
    assert "self._committed_offset = defaultdict(lambda: None)" in _lines(Consumer.__init__)
    assert "self._committed_offset.update(committed_offsets)" in "\n".join(_lines(Consumer))

    class Fake:
        _committed_offset = {"tp": 7}

    assert hooks.committed_offset(Fake(), "tp") == 7 and hooks.committed_offset(Fake(), "x") is None


def test_perform_seek_is_an_argumentless_coroutine_method_that_may_be_wrapped() -> None:
    assert inspect.iscoroutinefunction(Consumer.perform_seek)
    assert list(inspect.signature(Consumer.perform_seek).parameters) == ["self"]
    seen: list[str] = []

    class Fake:
        async def perform_seek(self) -> None:
            seen.append("faust")

    async def after() -> None:
        seen.append("after")

    fake = Fake()
    assert hooks.wrap_perform_seek(fake, after) and not hooks.wrap_perform_seek(fake, after)
    asyncio.run(fake.perform_seek())
    assert seen == ["faust", "after"]


def test_faust_s_producer_hands_out_its_aiokafka_producer() -> None:
    assert inspect.signature(Producer._ensure_producer).return_annotation in (
        AIOKafkaProducer,
        "AIOKafkaProducer",
    )
    for public in ("create_batch", "send_batch"):  # what the aggregator does with it
        assert callable(getattr(AIOKafkaProducer, public))


def test_rocksdb_store_has_a_database_per_partition() -> None:
    assert list(inspect.signature(rocksdb.Store._db_for_partition).parameters) == ["self", "partition"]
    assert rocksdb.Store.offset_key == b"__faust\0offset__"  # where faust reads the changelog offset


def test_memory_store_keeps_a_key_partition_map() -> None:
    assert "self._key_partition: MutableMapping[KT, int] = {}" in _lines(memory.Store.__post_init__)

    class Fake:
        _key_partition: dict[bytes, int] = {}

    fake = Fake()
    hooks.note_key_partition(fake, b"k", 3)
    assert fake._key_partition == {b"k": 3}


def test_aiokafka_producer_partitions_and_waits_for_metadata_as_the_hooks_call_them() -> None:
    params = list(inspect.signature(AIOKafkaProducer._partition).parameters)
    assert params == ["self", "topic", "partition", "key", "value", "serialized_key", "serialized_value"]
    assert inspect.iscoroutinefunction(AIOKafkaClient._wait_on_metadata)
    assert list(inspect.signature(AIOKafkaClient._wait_on_metadata).parameters) == ["self", "topic"]
