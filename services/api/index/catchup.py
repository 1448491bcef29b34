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

When the index is empty (a rebuild), the workers stage their rows in files of their own and
the source merges them in one transaction afterwards (:mod:`services.api.index.bulk`): the same
rule, far fewer writes.

Workers exit on their own when the api dies (they watch their parent), so a SIGKILLed api
leaves no process behind. Each counts the records it has read in a shared array (progress).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def split(partitions: list[int], workers: int) -> list[list[int]]:
    """Partitions dealt round-robin to ``workers`` (none empty)."""
    groups = [partitions[i::workers] for i in range(workers)]
    return [g for g in groups if g]


@dataclass(frozen=True)
class Job:
    """What one worker does: its partitions, and (bulk) its place among the workers."""

    settings_json: str
    path: str
    partitions: list[int]
    parent: int
    worker: int
    workers: int
    bulk: bool


def worker_main(job: Job, read: Any) -> None:
    """A worker process: read its partitions from the stored offsets to the end seen now."""
    import asyncio

    asyncio.run(_worker(job, read))


async def _worker(job: Job, read: Any) -> None:
    # aiokafka here (a dependency through faust): its C record parser fetches several times
    # faster than kafka-python's, and the writes run in a thread while the next batch arrives
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.api.index.bulk import Stager, staging_path
    from services.api.index.store import IndexStore, Record
    from services.api.settings import ApiSettings

    settings = ApiSettings.model_validate_json(job.settings_json)
    store = IndexStore(Path(job.path), settings.events_topic)
    stager = Stager(staging_path(Path(job.path), job.worker), job.worker, job.workers) if job.bulk else None
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
        **settings.aiokafka_config(),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in job.partitions]
        consumer.assign(tps)
        stored = store.offsets()
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, stored.get(tp.partition, 0))
        pending = {tp for tp in tps if stored.get(tp.partition, 0) < end[tp]}
        records: list[Record] = []
        while pending:
            if os.getppid() != job.parent:
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
                read[job.worker] += len(records)
                if stager is not None:
                    await asyncio.to_thread(stager.add, records)
                else:
                    await asyncio.to_thread(store.apply, records, False)
                records = []
        if stager is not None:
            stager.finish()
    finally:
        await consumer.stop()
        store.close()


def run(
    settings_json: str,
    path: Path,
    partitions: list[int],
    workers: int,
    stop: threading.Event,
    progress: Callable[[int], None],
    *,
    bulk: bool = False,
) -> list[int | None]:
    """Run the workers to completion (or until ``stop``); ``progress`` is called about twice a
    second meanwhile with the records read so far. Returns their exit codes."""
    ctx = multiprocessing.get_context("spawn")  # not fork: the api has threads
    groups = split(partitions, workers)
    read = ctx.Array("q", len(groups), lock=False)  # one writer per slot
    procs: list[BaseProcess] = [
        ctx.Process(
            target=worker_main,
            args=(Job(settings_json, str(path), group, os.getpid(), i, len(groups), bulk), read),
            name=f"index-catchup-{i}",
            daemon=True,
        )
        for i, group in enumerate(groups)
    ]
    for proc in procs:
        proc.start()
    log.info("event index catch-up workers started", extra={"workers": len(procs)})
    try:
        while any(p.is_alive() for p in procs):
            if stop.wait(0.5):
                break
            progress(sum(read))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(10)
    codes = [p.exitcode for p in procs]
    if any(code != 0 for code in codes):
        log.warning("a catch-up worker failed; the index reads the rest itself", extra={"codes": codes})
    else:
        log.info("event index catch-up workers finished", extra={"read": sum(read)})
    return codes
