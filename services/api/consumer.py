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
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from schemas.records import PairStats, RecordError, decode_pair_stats
from services.api.live import Live
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class ConsumerStalled(RuntimeError):
    """The consumer's positions stayed put while the topic's end was ahead (see StallGuard)."""


class StallGuard(Generic[K]):
    """Tells a stuck consumer from an idle one: stuck when some partition is behind its end
    offset and no position moved for ``seconds``.

    A Kafka client can stay connected yet stop fetching after a broker fault (kafka-python has
    had such bugs, e.g. dpkp/kafka-python#886 with SASL); the readiness it reported once stays
    true, so the view would go stale in silence. The caller recreates the consumer instead."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._positions: dict[K, int] = {}
        self._since: float | None = None

    def stalled(self, now: float, positions: Mapping[K, int], ends: Mapping[K, int]) -> bool:
        if not any(positions[tp] < ends.get(tp, 0) for tp in positions):
            self._since = None  # caught up: the clock starts when it is behind again
            return False
        if positions != self._positions or self._since is None:
            self._positions, self._since = dict(positions), now
            return False
        return now - self._since >= self.seconds

    def check(self, now: float, positions: Mapping[K, int], ends: Mapping[K, int]) -> None:
        """Raise :class:`ConsumerStalled` when :meth:`stalled`."""
        if self.stalled(now, positions, ends):
            behind = sum(max(0, ends.get(tp, 0) - positions[tp]) for tp in positions)
            raise ConsumerStalled(
                f"no progress for {self.seconds:.0f}s while {behind} records behind: recreating the consumer"
            )

    def reset(self) -> None:
        """The end offsets could not be read (the broker is away): that is not a stall, and
        the time it lasts does not count towards one."""
        self._since = None


STALL_CHECK_EVERY = 5.0  # seconds between the view consumer's end-offset reads


def check_stall(
    guard: StallGuard[TopicPartition], consumer: KafkaConsumer, partitions: list[TopicPartition], now: float
) -> None:
    """Raise :class:`ConsumerStalled` when ``guard`` says the consumer is stuck."""
    try:
        ends = consumer.end_offsets(partitions, timeout_ms=5000)
    except KafkaError:
        guard.reset()
        return
    guard.check(now, {tp: consumer.position(tp) for tp in partitions}, ends)


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
            except ConsumerStalled as exc:
                self.error = exc
                if self._live is not None:
                    self._live.consumer_stalls += 1
                log.warning("pair-stats consumer stalled; recreating it", extra={"error": str(exc)})
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
            started = last_check = time.monotonic()
            guard: StallGuard[TopicPartition] = StallGuard(self.settings.consumer_stall_seconds)
            if not pending:
                self._call(live.caught_up)
            while not self._stop.is_set():
                now = time.monotonic()
                if now - last_check >= STALL_CHECK_EVERY:
                    last_check = now
                    check_stall(guard, consumer, partitions, now)
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
