"""Every private faust / aiokafka attribute or method the aggregator touches, and why.

faust-streaming (0.15.3) and aiokafka (0.14.0) are pinned in ``pyproject.toml``. Each hook below
says what the library does wrong or does not offer, and ``tests/unit/test_aggregator_hooks.py``
holds one tripwire per hook, which fails loudly when an upgrade changes what the hook relies on.
No other module of the aggregator reaches into these libraries' private parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# --- faust's consumer ------------------------------------------------------------------------


def unacked_messages(consumer: Any) -> Any:
    """The set of messages faust still waits to see acknowledged (``Consumer._unacked_messages``).

    faust has no public way to give up on an event without acknowledging it (faust-streaming
    issues #189 and #315): ``take_events`` acknowledged every event it handed out, even when
    processing it raised, and a stage that takes with ``noack_take`` and acknowledges its
    processed batch whole would acknowledge the events it left out (stale, or cut before a seek
    back), while an event never acknowledged keeps a rebalance waiting for it. The aggregator
    marks such events acknowledged itself and removes them from this set, so faust's commit
    never passes them and they are delivered again (:func:`delivery.unacknowledge`).
    """
    return consumer._unacked_messages


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset faust last committed for ``tp`` in this consumer generation
    (``Consumer._committed_offset``; faust has no public accessor, and asking the broker would
    be an await in a place where none may happen)."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def wrap_perform_seek(consumer: Any, after: Callable[[], Awaitable[None]]) -> bool:
    """Run ``after`` at the end of faust's ``Consumer.perform_seek``, once per consumer.

    faust's post-recovery seek resumes the partitions, then awaits the committed offsets one by
    one and seeks only those above 0; records fetched meanwhile are skipped by the suspended
    streams but counted as read (the ordering problem of faust-streaming issue #216, fixed
    there for one path only). faust offers no hook after the seek, so the bound method is
    replaced by a wrapper (marked, so that a second call changes nothing). Returns whether it
    installed the wrapper.
    """
    if getattr(consumer, "_handshake_seek_wrapped", False):
        return False
    original = consumer.perform_seek

    async def perform_seek() -> None:
        await original()
        await after()

    consumer.perform_seek = perform_seek
    consumer._handshake_seek_wrapped = True
    return True


# --- faust's producer and RocksDB store --------------------------------------------------------


def aiokafka_producer(app: Any) -> Any:
    """The started aiokafka producer under faust's (``Producer._ensure_producer``).

    faust's ``send`` takes one record at a time (a future and a callback each); the aggregator
    sends a batch of changelog records as whole Kafka record batches (``create_batch`` /
    ``send_batch``, public in aiokafka), which faust's producer does not expose.
    """
    return app.producer._ensure_producer()


def rocksdb_partition(store: Any, partition: int) -> Any:
    """The RocksDB database of one table partition (``faust.stores.rocksdb.Store._db_for_partition``):
    faust writes a key at a time; the aggregator writes a partition's keys and the changelog
    offset in one atomic ``WriteBatch``."""
    return store._db_for_partition(partition)


def note_key_partition(store: Any, key: bytes, partition: int) -> None:
    """Record which partition holds ``key`` in faust's memory store (``faust.stores.memory.Store.
    _key_partition``, the map its partition revocation clears keys by; faust fills it when it
    applies changelog records), for keys the aggregator writes directly (unit tests' store)."""
    store._key_partition[key] = partition


# --- aiokafka's producer ---------------------------------------------------------------------


async def wait_on_metadata(producer: Any, topic: str) -> None:
    """Until aiokafka knows ``topic``'s partitions (``AIOKafkaClient._wait_on_metadata``; what its
    own ``send`` awaits, not public)."""
    await producer.client._wait_on_metadata(topic)


def default_partition(producer: Any, topic: str, key: bytes) -> int:
    """The partition aiokafka's default partitioner picks for ``key`` (``AIOKafkaProducer._partition``),
    so that a record batch sent to one partition holds what ``send`` would have put there."""
    partition: int = producer._partition(topic, None, key, None, key, None)
    return partition
