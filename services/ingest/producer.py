"""The publisher adapter: an idempotent acks=all kafka-python producer used from asyncio.

Once the producer is connected and has its producer id, the event loop drives its network I/O
(:class:`~services.ingest.hooks.LoopDriver`): ``send`` appends to the producer's accumulator on the loop, produce
requests and acknowledgements are handled in loop callbacks, and each publish call's asyncio
future is resolved there. Anything that could block (connecting to a broker, obtaining the
producer id, sending before the topic's metadata is known, closing) runs in threads instead:
kafka-python's own network thread, which otherwise stays parked, and a one-thread executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import DefaultPartitioner
from kafka.structs import TopicPartition

from handshake.errors import HandshakeError
from services.ingest import hooks
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]

# records up to this size skip send()'s checks (ingest's are far below its 1 MiB request limit)
DIRECT_APPEND_MAX = 256 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """The broker's answer for one record: ``ok``, or the reason it was not acknowledged."""

    ok: bool
    error: str | None = None
    partition: int | None = None
    offset: int | None = None


class Publisher(Protocol):
    async def publish(self, records: Sequence[Record], ack_timeout: float) -> list[Outcome]:
        """Produce ``records`` concurrently; one outcome each, within ``ack_timeout`` seconds."""
        ...

    def connected(self) -> bool: ...

    def io_on_loop(self) -> bool:
        """True while the event loop itself drives the Kafka client's network I/O."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class _Pending:
    """Collects the outcomes of many kafka futures on the loop; ``done`` once all are in."""

    __slots__ = (
        "done",
        "expired",
        "generation",
        "left",
        "loop",
        "loop_thread",
        "outcomes",
        "tracker",
    )

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes: list[Outcome | None] = [None] * n
        self.left = n
        self.loop = loop
        self.loop_thread = threading.get_ident()
        # the publisher told of every acknowledgement or failure (wedge detection), and the
        # producer generation the records went to; set when they are sent
        self.tracker: KafkaPublisher | None = None
        self.generation = 0
        self.expired = False
        self.done: asyncio.Future[None] = loop.create_future()
        if n == 0:
            self.done.set_result(None)

    def _finish(self, index: int, outcome: Outcome) -> None:
        if threading.get_ident() != self.loop_thread:
            # kafka-python's own thread (while it runs the I/O: connecting, say): over to the loop,
            # which keeps every outcome
            with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
                self.loop.call_soon_threadsafe(self._finish, index, outcome)
            return
        if self.outcomes[index] is not None:
            return
        self.outcomes[index] = outcome
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)

    def expire(self) -> None:
        """The acknowledgement timeout: answer with what was acknowledged so far."""
        if not self.done.done():
            self.expired = True
            self.done.set_result(None)

    def ok(self, index: int, metadata: Any) -> None:
        if self.tracker is not None:
            self.tracker._acked(self.generation)
        self._finish(index, Outcome(True, partition=metadata.partition, offset=metadata.offset))

    def failed(self, index: int, exc: BaseException) -> None:
        if self.tracker is not None:
            self.tracker._failed(self.generation)
        self._finish(index, Outcome(False, error=f"{type(exc).__name__}: {exc}"))


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (``Utils.murmur2``), as kafka-python's, about twice as fast."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length & 3
    tail = words * 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


class KeyPartitioner(DefaultPartitioner):
    """DefaultPartitioner's choice for keyed records (murmur2 of the key, like the Java client),
    so every producer puts a key on the same partition; cheaper per record (the default
    rebuilds the sets of topics and of available partitions for every record)."""

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: Any,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return cast(int, super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        return key_partition(serialized_key, sorted(partitions))


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``key`` among the topic's ``partitions`` (sorted): murmur2, as Java's."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


class KafkaPublisher:
    """Wraps one KafkaProducer (acks=all, idempotent) for ``settings.events_topic``."""

    def __init__(self, settings: IngestSettings, topic: str | None = None) -> None:
        self.settings = settings
        self.topic = topic or settings.events_topic
        self._producer: KafkaProducer | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-send")
        self._health = _Health()
        self._stop = threading.Event()
        self._probe: threading.Thread | None = None
        # self-healing: an idempotent producer whose batches expired during an outage can stay
        # wedged (sequence gap) after the broker is back; it is replaced when that is seen
        self._lock = threading.Lock()
        self._outstanding = 0
        self._last_ack = time.monotonic()
        self._expired = False
        self._reachable_since: float | None = None
        self.replacements = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Create the producer, and refuse to run unless idempotence is really in force."""
        self._producer = self._new_producer()
        self._health.mark_ok()
        self._probe = threading.Thread(target=self._probe_loop, name="ingest-producer-probe", daemon=True)
        self._probe.start()

    def _new_producer(self) -> KafkaProducer:
        ack_ms = int(self.settings.ack_timeout_s * 1000)
        config: dict[str, Any] = {
            "bootstrap_servers": self.settings.kafka_bootstrap,
            "client_id": "handshake-ingest",
            "acks": "all",
            "enable_idempotence": True,
            "partitioner": KeyPartitioner(),
            "linger_ms": self.settings.linger_ms,
            "batch_size": self.settings.batch_bytes,
            "max_block_ms": ack_ms,
            "request_timeout_ms": max(1000, ack_ms),
            "delivery_timeout_ms": max(30000, ack_ms * 4 + self.settings.linger_ms),
            "retry_backoff_ms": 100,
            # kafka-python backs off reconnecting exponentially up to 30 s: after a broker outage
            # of a few seconds ingest then stayed unready (503) for up to ~25 s more. One attempt
            # a second at most is cheap and brings it back within a second of the broker.
            "reconnect_backoff_max_ms": 1000,
            # kafka-python's own sensors (never read here: ingest exports its own metrics) cost
            # about a sixth of its network I/O's time (measured while it ran in its own thread)
            "metrics_enabled": False,
            **self.settings.kafka_python_config(),
        }
        if self.settings.compression_type and self.settings.compression_type != "none":
            config["compression_type"] = self.settings.compression_type
        try:
            producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise HandshakeError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from exc
        try:
            assert_idempotent(producer)
            # one acknowledged write warms up metadata and obtains the producer id
            producer.partitions_for(self.topic)
            wait_for_producer_id(producer, timeout=max(10.0, self.settings.ack_timeout_s))
        except BaseException:
            producer.close(timeout=2)
            raise
        return producer

    def close(self) -> None:
        self._stop.set()
        if self._probe is not None:
            self._probe.join(timeout=3)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.flush(timeout=self.settings.ack_timeout_s)
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- publishing --------------------------------------------------------------------
    async def publish(self, records: Sequence[Record], ack_timeout: float) -> list[Outcome]:
        if self._producer is None:
            return [Outcome(False, error="producer not started") for _ in records]
        loop = asyncio.get_running_loop()
        pending = _Pending(len(records), loop)
        hooks.loop_driver(self._producer, loop)
        known = hooks.known_partitions(self._producer, self.topic)
        if known:
            # with the topic's partitions known, records are appended on the loop
            self._send_all(records, pending, sorted(known))
        else:  # send() would block waiting for metadata (up to max_block_ms): not on the loop
            self._executor.submit(self._send_all, records, pending, None)
        timer = loop.call_later(ack_timeout, pending.expire)  # cheaper than wait_for + shield
        try:
            await pending.done
        finally:
            timer.cancel()
        if pending.expired:
            self._health.mark_failed()
        outcomes = [
            o or Outcome(False, error=f"not acknowledged within {ack_timeout:g}s") for o in pending.outcomes
        ]
        if all(o.ok for o in outcomes):
            self._health.mark_ok()
        return outcomes

    def _send_all(self, records: Sequence[Record], pending: _Pending, partitions: list[int] | None) -> None:
        """Hand ``records`` to the producer; ``partitions`` (the topic's, sorted) when on the loop."""
        producer = self._producer
        assert producer is not None
        with self._lock:
            self._outstanding += len(records)
            pending.tracker, pending.generation = self, self.replacements
        topic = self.topic
        # On the loop with the topic's partitions known, a record goes straight to the producer's
        # accumulator: what send() does for a keyed record of ours, without the per-record work
        # it does for any caller (checking header types, calling the no-op serialisers, rebuilding
        # the partition set, estimating the size, formatting a debug line). Large records still
        # go through send(), which checks their size.
        append = hooks.accumulator_append(producer)
        wakeup = hooks.sender_wakeup(producer)
        for index, (key, value, headers) in enumerate(records):
            try:
                if partitions is not None and len(value) <= DIRECT_APPEND_MAX:
                    tp = TopicPartition(topic, key_partition(key, partitions))
                    future, full, new_batch, _ = append(tp, None, key, value, headers)
                    if full or new_batch:  # as send(): the sender recomputes its next deadline
                        wakeup()
                else:
                    future = producer.send(topic, key=key, value=value, headers=headers)
            except Exception as exc:  # KafkaTimeoutError on metadata, closed producer, ...
                with self._lock:
                    self._outstanding -= 1  # never reached the accumulator: no sequence gap
                pending._finish(index, Outcome(False, error=f"{type(exc).__name__}: {exc}"))
                continue
            future.add_callback(pending.ok, index)
            future.add_errback(pending.failed, index)

    def _acked(self, generation: int) -> None:
        with self._lock:
            if generation == self.replacements:
                self._outstanding -= 1
                self._last_ack = time.monotonic()

    def _failed(self, generation: int) -> None:
        with self._lock:
            if generation == self.replacements:  # not the old producer's records failing on close
                self._outstanding -= 1
                self._expired = True  # expired or refused: the idempotent sequence may have a gap

    def _wedged(self) -> bool:
        """The broker answers metadata, yet nothing was acknowledged for a while, or batches expired."""
        now = time.monotonic()
        grace = 2 * self.settings.ack_timeout_s
        with self._lock:
            if self._reachable_since is None or now - self._reachable_since < grace:
                return False  # the broker just came back: give retried batches their chance
            stalled = self._outstanding > 0 and now - self._last_ack > grace
            return stalled or self._expired

    def _replace_producer(self) -> None:
        """Swap in a new producer (new producer id, fresh sequences); unacknowledged records of the
        old one were answered 503 and are resent by partners with the same event id."""
        try:
            fresh = self._new_producer()
        except Exception as exc:
            log.warning("could not replace the Kafka producer yet", extra={"error": str(exc)})
            return
        with self._lock:
            old, self._producer = self._producer, fresh
            self._outstanding = 0
            self._expired = False
            self._last_ack = time.monotonic()
            self.replacements += 1
        log.warning("replaced a wedged Kafka producer", extra={"replacements": self.replacements})
        if old is not None:
            threading.Thread(
                target=_discard, args=(old,), name="ingest-producer-discard", daemon=True
            ).start()

    # -- health ------------------------------------------------------------------------
    def connected(self) -> bool:
        return self._producer is not None and self._health.healthy()

    def io_on_loop(self) -> bool:
        producer = self._producer
        return hooks.io_on_loop(producer)

    def _probe_loop(self) -> None:
        """Refresh metadata every second: the broker answered recently, or we are not ready."""
        while not self._stop.wait(1.0):
            producer = self._producer
            assert producer is not None
            try:
                future = hooks.request_metadata_update(producer)
                done = threading.Event()
                future.add_both(lambda _value, event=done: event.set())
                done.wait(2.0)
                if future.is_done and future.succeeded():
                    if self._reachable_since is None:
                        self._reachable_since = time.monotonic()
                    if self._wedged():
                        self._health.mark_failed()
                        self._replace_producer()
                    else:
                        self._health.mark_ok()
                else:
                    self._reachable_since = None
                    self._health.mark_failed()
            except Exception:  # pragma: no cover - defensive
                self._health.mark_failed()


def _discard(producer: KafkaProducer) -> None:
    """Close a replaced producer at once (its unacknowledged records were answered 503): its
    batches are aborted first, so that close's own flush has nothing left to wait for."""
    with contextlib.suppress(Exception):
        hooks.force_close(producer)
    with contextlib.suppress(Exception):
        producer.close(timeout=0)


class _Health:
    """Broker reachability: the last metadata probe or publish decides."""

    def __init__(self) -> None:
        self._ok = False
        self.changed = time.monotonic()

    def mark_ok(self) -> None:
        if not self._ok:
            self.changed = time.monotonic()
        self._ok = True

    def mark_failed(self) -> None:
        if self._ok:
            self.changed = time.monotonic()
        self._ok = False

    def healthy(self) -> bool:
        return self._ok


def assert_idempotent(producer: KafkaProducer) -> None:
    """Refuse a producer that silently fell back to non-idempotent, or without acks=all."""
    config = producer.config
    manager = hooks.transaction_manager(producer)
    if not config.get("enable_idempotence") or manager is None or config.get("acks") != -1:
        raise HandshakeError(
            "the Kafka producer is not idempotent with acks=all (broker too old or conflicting "
            "settings); refusing to start"
        )


def wait_for_producer_id(producer: KafkaProducer, timeout: float) -> None:
    """Wait until the broker assigned a producer id (proof the idempotent protocol is live)."""
    manager = hooks.transaction_manager(producer)
    wakeup = hooks.sender_wakeup(producer)
    deadline = time.monotonic() + timeout
    while not manager.has_producer_id():
        if time.monotonic() > deadline:
            raise HandshakeError("the broker did not assign an idempotent producer id in time")
        wakeup()
        time.sleep(0.05)


class MemoryPublisher:
    """A publisher without Kafka, for unit tests: records what it was given.

    ``fail`` makes every publish time out (as if the broker never acknowledged); ``delay``
    simulates the acknowledgement latency.
    """

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.records: list[Record] = []
        self.fail = fail
        self.delay = delay
        self.is_connected = True

    async def publish(self, records: Sequence[Record], ack_timeout: float) -> list[Outcome]:
        if self.fail:
            await asyncio.sleep(ack_timeout)
            return [Outcome(False, error=f"not acknowledged within {ack_timeout:g}s") for _ in records]
        if self.delay:
            await asyncio.sleep(self.delay)
        start = len(self.records)
        self.records.extend(records)
        return [Outcome(True, partition=0, offset=start + i) for i in range(len(records))]

    def connected(self) -> bool:
        return self.is_connected and not self.fail

    def io_on_loop(self) -> bool:
        return False

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None
