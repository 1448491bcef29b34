"""Kafka adapter of the event index: a thread reading every partition of the events topic.

No consumer group and no Kafka commits: the offsets live in the index file, in the same
transaction as the rows they produced, so the thread seeks each partition to its stored offset
at start (a restart reads only what is new) and a lost file starts again from the beginning.
A stored offset past the topic's end means the topic was recreated: the file is thrown away.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from kafka import KafkaConsumer, TopicPartition

from services.api.consumer import ConsumerStalled, StallGuard, wait_for_partitions
from services.api.index import bulk, catchup
from services.api.index.service import EventIndex
from services.api.index.store import IndexStore
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)

LAG_EVERY = 1.0  # seconds between end-offset reads (lag, and the file-still-there check)


class KafkaEventSource:
    def __init__(self, settings: ApiSettings, index: EventIndex) -> None:
        self.settings = settings
        self.index = index
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.index.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
                return
            except ConsumerStalled as exc:
                self.error = exc
                self.index.consumer_stalls += 1
                log.warning("event index consumer stalled; recreating it", extra={"error": str(exc)})
            except sqlite3.DatabaseError as exc:
                self.error = exc
                log.error("the event index file is damaged; rebuilding it from the topic", exc_info=exc)
                self.index.reset()
            except Exception as exc:
                self.error = exc
                log.exception("event index consumer failed; restarting in 1 s")
                self._stop.wait(1.0)

    def _catch_up(
        self,
        store: IndexStore,
        partitions: list[TopicPartition],
        end: dict[TopicPartition, int],
        stored: dict[int, int],
    ) -> tuple[IndexStore, dict[int, int]]:
        """Read a large backlog with worker processes; returns the writer and the offsets
        stored afterwards.

        Into an empty index (a rebuild) the workers stage their rows and this thread builds the
        index file from them and puts it in place (:mod:`services.api.index.bulk`); otherwise
        they apply their records to the file themselves."""
        index = self.index
        before, counted = sum(stored.values()), store.counters()
        backlog = sum(max(0, end[tp] - stored.get(tp.partition, 0)) for tp in partitions)
        empty = not stored and store.is_empty()

        def progress(read: int) -> None:
            index.lag = max(0, backlog - read)

        started = time.monotonic()
        bulk.remove_staging(store.path)
        try:
            codes = catchup.run(
                self.settings.for_child_process(),
                store.path,
                [tp.partition for tp in partitions],
                self.settings.index_workers,
                self._stop,
                progress,
                bulk=empty,
            )
            if empty and codes and all(code == 0 for code in codes) and not self._stop.is_set():
                files = [bulk.staging_path(store.path, i) for i in range(len(codes))]
                store = index.install(bulk.build(store.path, store.topic, files))
        finally:
            bulk.remove_staging(store.path)
        after = store.offsets()
        index.read_records += sum(after.values()) - before
        for name, n in store.counters().items():
            index.counts[name] += n - counted.get(name, 0)
        log.info(
            "event index catch-up done",
            extra={
                "records": sum(after.values()) - before,
                "seconds": round(time.monotonic() - started, 1),
                "bulk": empty,
            },
        )
        return store, after

    def _consume(self) -> None:
        index = self.index
        store = index.open()
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=self.settings.consumer_client_id + "-index",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_poll_records=self.settings.index_batch,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **self.settings.kafka_python_config(),
        )
        try:
            partitions = wait_for_partitions(consumer, self.settings.events_topic, self._stop)
            if not partitions:
                return
            consumer.assign(partitions)
            end = consumer.end_offsets(partitions)
            stored = store.offsets()
            if any(stored.get(tp.partition, 0) > end[tp] for tp in partitions):
                log.warning("stored offsets are past the topic's end (topic recreated?): rebuilding")
                index.reset()
                store = index.open()
                stored = {}
            index.resumed_from = {tp.partition: stored.get(tp.partition, 0) for tp in partitions}
            backlog = sum(max(0, end[tp] - stored.get(tp.partition, 0)) for tp in partitions)
            if backlog >= self.settings.index_catchup_records and self.settings.index_workers > 1:
                store, stored = self._catch_up(store, partitions, end, stored)
            for tp in partitions:
                consumer.seek(tp, stored.get(tp.partition, 0))
            pending = {tp for tp in partitions if stored.get(tp.partition, 0) < end[tp]}
            index.lag = sum(max(0, end[tp] - stored.get(tp.partition, 0)) for tp in partitions)
            log.info(
                "event index reading",
                extra={"topic": self.settings.events_topic, "behind": index.lag, "rebuilt": store.rebuilt},
            )
            started = last_lag = time.monotonic()
            guard: StallGuard[TopicPartition] = StallGuard(self.settings.consumer_stall_seconds)
            if not pending:
                index.mark_caught_up()
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=self.settings.consumer_poll_ms)
                records = [
                    (tp.partition, r.offset, r.key, r.value, r.headers)
                    for tp, rs in batches.items()
                    for r in rs
                ]
                if records:
                    index.read_records += len(records)
                    index.apply(records)
                now = time.monotonic()
                if pending:
                    pending = {tp for tp in pending if consumer.position(tp) < end[tp]}
                    if not pending:
                        log.info("event index caught up", extra={"seconds": round(now - started, 3)})
                        index.mark_caught_up()
                if now - last_lag >= LAG_EVERY:
                    last_lag = now
                    if not store.path.exists():
                        raise sqlite3.DatabaseError("the index file was deleted")
                    latest = consumer.end_offsets(partitions)
                    positions = {tp: consumer.position(tp) for tp in partitions}
                    index.lag = sum(max(0, latest[tp] - positions[tp]) for tp in partitions)
                    guard.check(now, positions, latest)  # a stuck client is recreated
                elif records and not pending:
                    index.lag = max(0, (index.lag or 0) - len(records))
        finally:
            consumer.close(autocommit=False)
