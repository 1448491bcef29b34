"""Refill a worker's empty local tables from their changelogs, faster than faust's recovery.

faust's recovery applies changelog records through its consumer, its recovery buffers and one
store write per record: ~12,000 records/s here, about nine minutes for a million events' worth.
A worker that lost its disk (no local tables at start) reads every partition of both tables'
changelogs with a plain aiokafka consumer instead, and writes each fetched chunk to the
partition's RocksDB in one ``WriteBatch`` together with the changelog offset faust resumes from
(``TableState.store_locally``, as stage 1's own writes). faust's own recovery then reads only
what was written after (``persisted_offset``). A restore cut short leaves each partition a prefix of
its changelog with the matching offset, which faust reads on from.

It restores every partition, not only those the worker will be assigned (the assignment is not
known before the worker joins its group): with several workers each keeps a copy of the rest,
as a standby would.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("services.aggregator")

FETCH_BYTES = 8 * 1024 * 1024  # per partition and fetch: few, large chunks


@dataclass
class Restored:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def restore_tables(
    bootstrap: str, security: dict[str, Any], tables: Sequence[Any], partitions: int
) -> Restored:
    """Fill the RocksDB partitions of ``tables`` (:class:`~services.aggregator.store.TableState`)
    from their changelogs, up to the end each had when it started. Runs its own event loop in a
    thread: faust's worker has not started its own yet, and must find none set."""
    out: list[Restored | BaseException] = []

    def run() -> None:
        try:
            out.append(asyncio.run(_restore(bootstrap, security, tables, partitions)))
        except BaseException as exc:  # re-raised in the caller's thread
            out.append(exc)

    thread = threading.Thread(target=run, name="restore-tables")
    thread.start()
    thread.join()
    result = out[0]
    if isinstance(result, BaseException):
        raise result
    return result


async def _restore(
    bootstrap: str, security: dict[str, Any], tables: Sequence[Any], partitions: int
) -> Restored:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    began = time.perf_counter()
    by_tp = {TopicPartition(t.changelog, p): (t, p) for t in tables for p in range(partitions)}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="handshake-aggregator-restore",
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=4 * FETCH_BYTES,
        **security,
    )
    await consumer.start()
    records = 0
    try:
        consumer.assign(list(by_tp))
        ends = await consumer.end_offsets(list(by_tp))
        todo = {tp for tp, end in ends.items() if end > 0}
        # explicit offsets: after assign(), seek_to_beginning() can lose to the pending reset to
        # the default "latest" (position() then says the end: nothing was restored)
        starts = await consumer.beginning_offsets(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp])
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, chunk in fetched.items():
                table, partition = by_tp[tp]
                chunk = [r for r in chunk if r.offset < ends[tp]]
                if not chunk:
                    continue
                table.store_locally(partition, [(r.key, r.value) for r in chunk], chunk[-1].offset)
                records += len(chunk)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return Restored(records, time.perf_counter() - began)
