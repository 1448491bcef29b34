"""Every private kafka-python attribute and replaced method ingest relies on, in one place.

kafka-python is pinned (``kafka-python==3.0.12`` in pyproject.toml); ``tests/unit/
test_ingest_hooks.py`` holds a tripwire per hook that fails loudly when an upgrade moves or
changes what it touches. Everything else in ingest uses kafka-python's public API.

- :class:`LoopDriver` (``Sender.run_once``, ``KafkaClient.poll`` and ``Sender.wakeup`` replaced on
  the instance; the client's network selector, connection manager and lock; the transaction
  manager's state): kafka-python runs its network I/O in a thread of its own, which costs the
  event loop a GIL hand-off per request, and offers no way to drive it from asyncio.
- :func:`accumulator_append` (``RecordAccumulator.append``): ``send()`` does per-record work
  ingest's records never need, on the hot path.
- :func:`known_partitions` (``ClusterMetadata.partitions_for_topic`` through ``_metadata``):
  ``KafkaProducer.partitions_for`` blocks up to ``max_block_ms`` when the topic is not known yet,
  which must never happen on the event loop.
- :func:`request_metadata_update` (``_metadata.request_update`` and a sender wake-up): there is no
  public way to ask whether the brokers still answer (ingest's readiness probe).
- :func:`transaction_manager` (``_transaction_manager``): the only proof that idempotence is in
  force (the producer falls back silently) and that a producer id was assigned.
- :func:`force_close` (``Sender.force_close``): ``close(timeout=0)`` still flushes; a replaced,
  wedged producer's batches must be aborted at once.

And one aiokafka hook (``aiokafka==0.14.0``, pinned too):

- :func:`cluster_partitions` (``AIOKafkaConsumer._client.fetch_all_metadata``): the consumer's
  ``partitions_for_topic`` only knows topics it already consumes, and its public ``topics()``
  fetches the whole cluster's metadata but returns the names alone, not the partitions the view
  follower must assign itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

log = logging.getLogger("services.ingest.producer")


def loop_driver(producer: KafkaProducer, loop: asyncio.AbstractEventLoop) -> LoopDriver:
    """The producer's :class:`LoopDriver` for ``loop``, attached on first use (kept on the sender)."""
    sender = producer._sender
    driver = sender.__dict__.get("_driver")
    if driver is None or driver.loop is not loop:  # once per producer and loop
        if driver is not None:
            driver._to_thread()  # its loop ended (a second running loop would be a misuse)
        driver = sender._driver = LoopDriver(producer, loop)
        driver.attach()
    return driver


def io_on_loop(producer: KafkaProducer | None) -> bool:
    """True while a :class:`LoopDriver` drives the producer's network I/O on the loop."""
    driver = producer._sender.__dict__.get("_driver") if producer is not None else None
    return driver is not None and bool(driver.on_loop)


def accumulator_append(producer: KafkaProducer) -> Callable[..., Any]:
    """``RecordAccumulator.append(tp, timestamp_ms, key, value, headers)`` of the producer:
    ``(future, batch_is_full, new_batch_created, ...)``. What ``send()`` ends with for a keyed
    record, without its per-record checks (header types, no-op serialisers, the partition set
    rebuilt, the size estimated, a debug line formatted)."""
    return producer._accumulator.append


def sender_wakeup(producer: KafkaProducer) -> Callable[[], None]:
    """``Sender.wakeup``: after an append that fills or opens a batch, as ``send()`` does (the
    :class:`LoopDriver`'s own once it is attached)."""
    return producer._sender.wakeup


def known_partitions(producer: KafkaProducer, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in the producer's metadata, without waiting (None: not known)."""
    return producer._metadata.partitions_for_topic(topic)


def request_metadata_update(producer: KafkaProducer) -> Any:
    """Ask for fresh metadata now; the returned future resolves when a broker answered."""
    future = producer._metadata.request_update()
    producer._sender.wakeup()
    return future


def transaction_manager(producer: KafkaProducer) -> Any:
    """The producer's ``TransactionManager``: None when it is not idempotent."""
    return getattr(producer, "_transaction_manager", None)


async def cluster_partitions(consumer: Any, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in freshly fetched cluster metadata (None: no such topic)."""
    cluster = await consumer._client.fetch_all_metadata()
    return cluster.partitions_for_topic(topic)


def force_close(producer: KafkaProducer) -> None:
    """Abort the producer's batches and stop its sender thread (waits at most 5 s)."""
    producer._sender.force_close()
    producer._sender.join(5)


class LoopDriver:
    """Runs a KafkaProducer's network I/O on the asyncio event loop while its connections are steady.

    kafka-python runs its sender in a thread of its own, which shares the GIL with the event loop:
    every produce request and response costs a GIL hand-off, and the loop's own code ran 1.3-1.5x
    slower per request beside it (measured; bench/README.md). The driver parks that thread and
    runs the sender's iterations as loop callbacks instead, polling kafka-python's selector
    without blocking: when its selector has events (its epoll descriptor is watched by the loop),
    when ``send()`` wakes the sender (merged into one iteration per loop pass), and when the
    sender's next deadline (linger, retry, timeout) is due.

    Whatever could block stays off the loop: connecting to a broker (a DNS lookup), obtaining
    or bumping the idempotent producer id (blocking waits in kafka-python), and closing all run
    in the producer's own thread, which resumes until the state is steady again (producer id
    assigned, no producer-id request pending, every broker connection up), then hands back.
    """

    def __init__(self, producer: KafkaProducer, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.sender = producer._sender
        self.client = self.sender._client
        self.net = self.client._net
        self.manager = self.client._manager
        self.transactions = producer._transaction_manager
        self.on_loop = False  # True: the loop drives the sender and its thread is parked
        sender_class = type(self.sender)
        self._real_run_once = sender_class.run_once.__get__(self.sender)
        self._unpark = threading.Event()
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._wanted_ms: float | None = None
        self._to_thread_now = False
        self._watching = False

    def attach(self) -> None:
        """Called on the loop: from now on the producer's thread only runs the unsteady states."""
        self.sender.run_once = self._run_once_in_thread
        self.client.poll = self._poll
        self.sender.wakeup = self.wakeup
        self.net.wakeup()  # the thread leaves its select and hands over at its next iteration

    # -- which side runs the sender ------------------------------------------------------
    def steady(self) -> bool:
        """Nothing the sender does next can block: safe to run it on the loop."""
        tm = self.transactions
        if (
            tm is None
            or not self.sender._running
            or not tm.has_producer_id()
            or tm.has_fatal_error()
            or tm.is_bumping_epoch()
            or tm.has_in_flight_transactional_request()
            or tm._pending_requests
        ):
            return False
        conns = self.manager._conns
        return bool(conns) and all(conn.connected for conn in conns.values())

    def _run_once_in_thread(self) -> None:
        """The sender thread's iteration: parked while the loop drives, else kafka-python's own."""
        while self.on_loop:
            self._unpark.wait()
            self._unpark.clear()
        self._real_run_once()
        if self.steady() and self.loop.is_running():
            self.on_loop = True  # from here on this thread only returns and parks
            try:
                self.loop.call_soon_threadsafe(self._resume)
            except RuntimeError:  # the loop closed meanwhile: keep running here
                self.on_loop = False

    def _resume(self) -> None:
        if not self.on_loop:
            return
        if not self._watching:
            self.loop.add_reader(self.net._selector.fileno(), self._readable)
            self._watching = True
        self._schedule()

    def _to_thread(self) -> None:
        """Stop driving and let the sender's thread run (on the loop, or once the loop is gone)."""
        self.on_loop = False
        with contextlib.suppress(Exception):  # a closed loop (shutdown) has nothing to remove
            if self._watching:
                self._watching = False
                self.loop.remove_reader(self.net._selector.fileno())
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._unpark.set()
        # a wake-up the loop took (close's, say) must not leave the thread's first poll blocking
        self.net.wakeup()

    # -- the sender on the loop ------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._tick)

    def _readable(self) -> None:
        """Kafka-python's selector has events: handle them, then run the sender, as its thread
        does after every poll that returned (an acknowledgement may have unpaused a connection
        with batches waiting)."""
        if self.on_loop and self.steady():
            try:
                self.net._poll_once(0)
            except Exception:  # as kafka-python's own thread does: log, and go on
                log.exception("uncaught error in the Kafka producer's I/O")
        self._tick()

    def _tick(self) -> None:
        self._scheduled = False
        if not self.on_loop:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.steady():
            self._to_thread()
            return
        self._wanted_ms = None
        try:
            self._real_run_once()
        except Exception:  # as kafka-python's own thread does: log, and go on
            log.exception("uncaught error in the Kafka producer's I/O")
        if self._to_thread_now:
            self._to_thread_now = False
            self._to_thread()
            return
        if self.net._ready:
            self._schedule()
            return
        delay = None if self._wanted_ms is None else self._wanted_ms / 1000
        due = self.net._next_scheduled_timeout(time.monotonic())
        if due is not None:
            delay = due if delay is None else min(delay, due)
        if delay is not None:
            self._timer = self.loop.call_later(max(delay, 0.0), self._tick)

    def _poll(self, timeout_ms: float | None = None, future: Any = None) -> None:
        """``client.poll`` for the sender: without blocking on the loop, kafka-python's elsewhere."""
        if self.on_loop and threading.get_ident() == self.loop_thread:
            if not self.steady():  # e.g. run_once just started a connection: its thread goes on
                self._to_thread_now = True
                return
            self._wanted_ms = timeout_ms
            self.net._poll_once(0)
            return
        with self.client._lock:
            self.net.poll(timeout_ms=timeout_ms, future=future)

    def wakeup(self) -> None:
        """``sender.wakeup`` (send(), metadata requests, close): reaches whichever side runs it."""
        if threading.get_ident() == self.loop_thread:
            if self.on_loop:
                self._schedule()
            else:
                self.net.wakeup()
        elif not self.on_loop:
            self.net.wakeup()
        elif self.loop.is_running():
            try:
                self.loop.call_soon_threadsafe(self.wakeup)
            except RuntimeError:  # closed meanwhile
                self._to_thread()
        else:  # the loop is gone (shutdown): nothing else can be driving the sender
            self._to_thread()
