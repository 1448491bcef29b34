"""Batch-at-a-time access to a faust table's store and changelog, and batched publishing.

Faust's table API costs a changelog send, a future, a RocksDB put and a persisted-offset write
per key. The aggregator writes a whole batch at once instead:

1. each source partition's write set goes to the table's changelog partition as Kafka record
   batches, in order, the next sent only once the previous one is acknowledged. A record batch
   is appended to the log whole or not at all, so a crash leaves a prefix of the write set on
   the changelog, never a hole; :meth:`TableState.write` sends each of the caller's units that
   fits one record batch as exactly one, so it is kept whole or lost (stage 1 relies on it);
2. once the broker acknowledged them, the same keys and the changelog offset faust reads at
   recovery (``persisted_offset``) go into the partition's RocksDB in one atomic ``WriteBatch``.

The records are the ones faust itself would write (raw key, raw value, one per key), so faust's
recovery, standby replicas and compaction work on them unchanged. The local store is never
ahead of the changelog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from services.aggregator import hooks
from services.aggregator.batching import Item


async def _send_in_order(app: Any, topic: str, partition: int, items: Sequence[Item]) -> int:
    """Send ``items`` to ``topic``/``partition`` as record batches, in order; the last offset."""
    producer = hooks.aiokafka_producer(app)
    last = -1
    batch = producer.create_batch()
    for key, value in items:
        if batch.append(key=key, value=value, timestamp=None) is None:
            last = await _flush(producer, batch, topic, partition)
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # pragma: no cover
                raise ValueError(f"record of {len(key) + len(value)} bytes does not fit a batch")
    if batch.record_count():
        last = await _flush(producer, batch, topic, partition)
    return last


async def _flush(producer: Any, batch: Any, topic: str, partition: int) -> int:
    count = batch.record_count()
    meta = await (await producer.send_batch(batch, topic, partition=partition))
    return int(meta.offset) + count - 1


def loads(raw: bytes | None) -> Any:
    """A stored value (JSON), or None."""
    return None if raw is None else orjson.loads(raw)


class TableState:
    """Read and write a faust table by source partition, a batch at a time (see module doc)."""

    def __init__(self, app: Any, table: Any) -> None:
        from faust.stores.rocksdb import Store as RocksStore

        self.app = app
        self.table = table
        self.store = table.data
        self.rocks = isinstance(self.store, RocksStore)

    @property
    def changelog(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def get(self, partition: int, key: bytes) -> bytes | None:
        if self.rocks:
            value = hooks.rocksdb_partition(self.store, partition).get(key)
            return None if value is None else bytes(value)
        value = self.store.data.get(key)
        return None if value is None else bytes(value)

    def scan(self, partition: int, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every stored (key, value) of ``partition`` whose key starts with ``prefix``, in key
        order. The memory store (tests) keeps all partitions in one map: it gives every
        partition's, and the caller tells them apart by their keys."""
        if self.rocks:
            out = []
            for key, value in hooks.rocksdb_partition(self.store, partition).items(from_key=prefix):
                if not bytes(key).startswith(prefix):
                    break
                out.append((bytes(key), bytes(value)))
            return out
        return sorted((bytes(k), bytes(v)) for k, v in self.store.data.items() if bytes(k).startswith(prefix))

    async def write(self, units: Mapping[int, Sequence[Sequence[Item]]]) -> None:
        """Persist each partition's units in order: changelog first, then the local store.

        A unit that fits one record batch is sent as exactly one (kept whole or lost); a bigger
        one as several, in order (kept as a prefix). Stage 1 sizes its units to fit.
        """
        await asyncio.gather(*(self._write_partition(p, us) for p, us in units.items() if us))

    async def _write_partition(self, partition: int, units: Sequence[Sequence[Item]]) -> None:
        last = -1
        for unit in units:
            if unit:
                last = await _send_in_order(self.app, self.changelog, partition, unit)
        if last >= 0:
            self.store_locally(partition, [item for unit in units for item in unit], last)

    def store_locally(self, partition: int, items: Sequence[tuple[bytes, bytes | None]], last: int) -> None:
        """Write ``items`` (a None value deletes its key) to the local store with ``last``, the
        changelog offset they come up to: in RocksDB, one atomic ``WriteBatch``. Also used by
        :mod:`services.aggregator.restore`."""
        if self.rocks:
            import rocksdict

            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in items:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            batch.put(self.store.offset_key, str(last).encode())
            hooks.rocksdb_partition(self.store, partition).write(batch)
        else:
            for key, value in items:
                if value is None:
                    self.store.data.pop(key, None)
                else:
                    self.store.data[key] = value
                    hooks.note_key_partition(self.store, key, partition)


class Publisher:
    """Publishes keyed records as record batches, one per target partition (default partitioner)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._partition: dict[tuple[str, bytes], int] = {}

    async def partition_of(self, topic: str, key: bytes) -> int:
        """The default partitioner's partition of ``key`` in ``topic``."""
        cached = self._partition.get((topic, key))
        if cached is None:
            producer = hooks.aiokafka_producer(self.app)
            await hooks.wait_on_metadata(producer, topic)
            cached = hooks.default_partition(producer, topic, key)
            if len(self._partition) > 200_000:
                self._partition.clear()
            self._partition[(topic, key)] = cached
        return cached

    async def publish(self, topic: str, records: Iterable[tuple[bytes, bytes, bytes]]) -> None:
        """Send (partition key, key, value) records; wait until the broker acknowledged all of them.

        The partition is the default partitioner's choice for the partition key, which is the
        record key unless several keys must share a partition.
        """
        by_partition: dict[int, list[Item]] = {}
        for partition_key, key, value in records:
            partition = await self.partition_of(topic, partition_key)
            by_partition.setdefault(partition, []).append((key, value))
        await self.publish_to(topic, by_partition)

    async def publish_to(self, topic: str, records: Mapping[int, Sequence[Item]]) -> None:
        """Send (key, value) records to the given partitions; wait until all are acknowledged."""
        await asyncio.gather(*(_send_in_order(self.app, topic, p, items) for p, items in records.items()))
