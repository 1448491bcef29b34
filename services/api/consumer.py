"""Kafka adapter: a thread reading every partition of the pair-stats topic into the live view.

kafka-python is blocking, so it runs in its own thread; decoded snapshots are handed to the
event loop with ``loop.call_soon_threadsafe`` where the view and the fan-out live (single
threaded, no locks). No consumer group: every API instance reads the whole compacted topic
from the beginning, and is ready once it reached the end offsets seen at start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from schemas.records import PairStats, RecordError, decode_pair_stats
from services.api.live import Live
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)


def wait_for_partitions(consumer: KafkaConsumer, topic: str, stop: threading.Event) -> list[TopicPartition]:
    """The topic's partitions, once the broker knows them (empty if ``stop`` is set first)."""
    while not stop.is_set():
        try:
            parts = consumer.partitions_for_topic(topic)
        except KafkaError as exc:
            log.warning("cannot list partitions", extra={"topic": topic, "error": str(exc)})
            parts = set()
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        stop.wait(0.5)
    return []


class KafkaSnapshotSource:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: Live | None = None
        self.error: BaseException | None = None

    def start(self, live: Live) -> None:
        self._loop = asyncio.get_running_loop()
        self._live = live
        self._thread = threading.Thread(target=self._run, name="pair-stats-consumer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the thread -----------------------------------------------------------------

    def _call(self, fn: object, *args: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]
        except RuntimeError:  # loop closed during shutdown
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
                return
            except Exception as exc:
                self.error = exc
                log.exception("pair-stats consumer failed; restarting in 1 s")
                self._stop.wait(1.0)

    def _partitions(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        return wait_for_partitions(consumer, self.settings.pair_stats_topic, self._stop)

    def _consume(self) -> None:
        assert self._live is not None
        live = self._live
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=self.settings.consumer_client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_poll_records=2000,
            **self.settings.kafka_python_config(),
        )
        try:
            partitions = self._partitions(consumer)
            if not partitions:
                return
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = {tp: off for tp, off in consumer.end_offsets(partitions).items()}
            pending = {tp for tp, off in end.items() if off > 0}
            log.info(
                "reading pair-stats",
                extra={"topic": self.settings.pair_stats_topic, "records": sum(end.values())},
            )
            started = time.monotonic()
            if not pending:
                self._call(live.caught_up)
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=self.settings.consumer_poll_ms)
                snapshots: list[PairStats] = []
                bad = 0
                for tp, records in batches.items():
                    for record in records:
                        try:
                            snapshots.append(decode_pair_stats(record.value))
                        except RecordError as exc:
                            bad += 1
                            log.warning(
                                "skipping bad pair-stats record",
                                extra={
                                    "partition": tp.partition,
                                    "offset": record.offset,
                                    "reason": exc.reason,
                                    "error": exc.message,
                                },
                            )
                if snapshots:
                    self._call(live.deliver, snapshots)
                if bad:
                    self._call(live.record_invalid, bad)
                if pending:
                    pending = {tp for tp in pending if consumer.position(tp) < end[tp]}
                    if not pending:
                        log.info("caught up", extra={"seconds": round(time.monotonic() - started, 3)})
                        self._call(live.caught_up)
        finally:
            consumer.close(autocommit=False)
