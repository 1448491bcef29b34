"""Catch-up workers: a large backlog (a rebuild, a long stop) read by several processes at once.

Decoding and preparing events is pure Python and holds the GIL, so one thread uses one core.
When the index starts far behind the topic, the source starts ``index_workers`` processes, each
owning a disjoint set of partitions, reading them from their stored offsets to the end offsets
seen at start and writing the same file in turn (SQLite's write lock; WAL lets readers go on).
Nothing else changes: each worker applies its records with the same writer
(:meth:`IndexStore.apply`: the contract's decoder and acceptance rule, rows and offsets in one
transaction). An event's records all live in one partition, so no two workers ever touch the
same event, and each partition's offsets are written only by its worker. The source then goes
on from the stored offsets as usual; a worker that fails only leaves more for it to read.

Workers exit on their own when the api dies (they watch their parent), so a SIGKILLed api
leaves no process behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

log = logging.getLogger(__name__)


def split(partitions: list[int], workers: int) -> list[list[int]]:
    """Partitions dealt round-robin to ``workers`` (none empty)."""
    groups = [partitions[i::workers] for i in range(workers)]
    return [g for g in groups if g]


def worker_main(settings_json: str, path: str, partitions: list[int], parent: int) -> None:
    """A worker process: read ``partitions`` from the stored offsets to the end seen now."""
    import asyncio

    asyncio.run(_worker(settings_json, path, partitions, parent))


async def _worker(settings_json: str, path: str, partitions: list[int], parent: int) -> None:
    # aiokafka here (a dependency through faust): its C record parser fetches several times
    # faster than kafka-python's, and the writes run in a thread while the next batch arrives
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.api.index.store import IndexStore, Record
    from services.api.settings import ApiSettings

    settings = ApiSettings.model_validate_json(settings_json)
    store = IndexStore(Path(path), settings.events_topic)
    # a bulk load: checkpoint the WAL into the file less often (pages changed again between
    # checkpoints are written once)
    store.conn.execute("PRAGMA wal_autocheckpoint = 20000")
    # no fsync while catching up: a killed process loses nothing (the OS has the pages); a power
    # cut may damage the file, which is then rebuilt from the topic at the next start
    store.conn.execute("PRAGMA synchronous = OFF")
    store.conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while it lasts: inserts land all over
    # pages read through a shared mapping: after the other worker's commit made this
    # connection's cache stale, it re-reads them from memory, without system calls
    store.conn.execute("PRAGMA mmap_size = 8589934592")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.consumer_client_id}-index-catchup",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in partitions]
        consumer.assign(tps)
        stored = store.offsets()
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, stored.get(tp.partition, 0))
        pending = {tp for tp in tps if stored.get(tp.partition, 0) < end[tp]}
        records: list[Record] = []
        while pending:
            if os.getppid() != parent:
                return  # the api is gone
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=settings.index_batch)
            records += [
                (tp.partition, r.offset, r.key, r.value, r.headers)
                for tp, rs in batches.items()
                for r in rs
                if r.offset < end[tp]  # the rest is the source's, after the catch-up
            ]
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
            # large transactions: each one rewrites the index pages it touches once, however
            # many of its events land on them (inserts land all over the key and date indexes)
            if len(records) >= settings.index_catchup_batch or (records and not pending):
                await asyncio.to_thread(store.apply, records, False)
                records = []
    finally:
        await consumer.stop()
        store.close()


def run(
    settings_json: str,
    path: Path,
    partitions: list[int],
    workers: int,
    stop: threading.Event,
    progress: Callable[[], None],
) -> list[int | None]:
    """Run the workers to completion (or until ``stop``); ``progress`` is called about twice a
    second meanwhile. Returns their exit codes."""
    ctx = multiprocessing.get_context("spawn")  # not fork: the api has threads
    procs: list[BaseProcess] = [
        ctx.Process(
            target=worker_main,
            args=(settings_json, str(path), group, os.getpid()),
            name=f"index-catchup-{i}",
            daemon=True,
        )
        for i, group in enumerate(split(partitions, workers))
    ]
    for proc in procs:
        proc.start()
    log.info("event index catch-up workers started", extra={"workers": len(procs)})
    try:
        while any(p.is_alive() for p in procs):
            if stop.wait(0.5):
                break
            progress()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(10)
    codes = [p.exitcode for p in procs]
    if any(code != 0 for code in codes):
        log.warning("a catch-up worker failed; the index reads the rest itself", extra={"codes": codes})
    return codes
