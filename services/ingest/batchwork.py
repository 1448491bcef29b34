"""Turning a batch body into encoded records: pure, and run off the event loop when it pays.

``encode_batch`` does a batch's CPU work (split, JSON decode, validation, encoding and content
hash of every record). It needs nothing from the event loop, so ``BatchEncoder`` runs it in a
worker process: ingest's loop holds the GIL for everything else it does per record (the
revision rule, kafka-python's ``send()``, reading the events topic back, HTTP), and under batch
load it was the bottleneck while the machine's second core idled. Small bodies are encoded
inline (the hand-off costs more than it saves), and so is everything when there are no workers
(``HANDSHAKE_BATCH_WORKERS=0``, the default on a one-core machine) or they are not up yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from schemas.records import encode_accepted, event_key
from services.ingest.domain import BodyError, errors_out, parse_batch, validate_item

if TYPE_CHECKING:  # workers need not import kafka-python
    from services.ingest.producer import Record

log = logging.getLogger(__name__)


class Encoded(NamedTuple):
    """One valid record of a batch, encoded as it goes to Kafka."""

    position: int  # the record's index in the batch
    line: int | None
    key: str
    revision: int
    status: str
    digest: str  # content hash (duplicate detection)
    record: Record


class Invalid(NamedTuple):
    """One record of a batch that cannot be accepted, with every field error."""

    position: int  # the record's index in the batch
    line: int | None
    errors: list[dict[str, str]]


BatchRecords = list[Encoded | Invalid]


def encode_batch(
    raw: bytes, ndjson: bool, max_records: int, max_depth: int, partner_id: str, received_at: datetime
) -> BatchRecords:
    """Every record of a batch body, encoded or with its errors; BodyError when the body as a whole
    cannot be read (see :func:`~services.ingest.domain.parse_batch`)."""
    out: BatchRecords = []
    for item in parse_batch(raw, ndjson, max_records, max_depth):
        event = validate_item(item)
        if event is None:
            out.append(Invalid(item.index, item.line, errors_out(item.errors)))
            continue
        record, digest = encode_accepted(event, partner_id, received_at)
        key = event_key(partner_id, event.event_id)
        out.append(Encoded(item.index, item.line, key, event.revision, event.status.value, digest, record))
    return out


BodyFailure = tuple[int, str, str]  # BodyError's status, message, code


def _encode_in_worker(
    raw: bytes, ndjson: bool, max_records: int, max_depth: int, partner_id: str, received_at: datetime
) -> BatchRecords | BodyFailure:
    # a BodyError is returned, not raised: exceptions with their own __init__ do not unpickle
    try:
        return encode_batch(raw, ndjson, max_records, max_depth, partner_id, received_at)
    except BodyError as exc:
        return (exc.status, exc.message, exc.code)


def _ready() -> bool:
    return True


def _exit_with_parent() -> None:
    """Worker initializer: leave when ingest goes, however it goes.

    A worker blocks reading its task queue, and a parent killed with SIGKILL never closes it:
    without this the worker (and multiprocessing's resource tracker) would outlive ingest.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set in a spawned worker
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class BatchEncoder:
    """Runs :func:`encode_batch` in ``workers`` processes, for bodies of ``inline_bytes`` or more.

    The workers start on the first such body, in the background (a spawned interpreter takes a
    second or so to import the models); until they are up, bodies are encoded inline. A worker
    that dies (killed, out of memory) breaks the pool: that batch is encoded inline and a new
    pool starts, so a request never fails because of it.
    """

    def __init__(self, workers: int, *, inline_bytes: int = 16 * 1024, retry_s: float = 30.0) -> None:
        self.workers = workers
        self.inline_bytes = inline_bytes
        self.retry_s = retry_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._starting = False
        self._closed = False
        self._not_before = 0.0  # after a failed start, when to try again
        self._started = threading.Event()
        self.restarts = 0

    def start(self) -> None:
        """Nothing to do before the first big batch."""

    def pooled(self) -> bool:
        return self._pool is not None

    def warm(self, timeout: float) -> bool:
        """Start the workers now and wait up to ``timeout`` s for them (blocking); True when up."""
        self._want_pool()
        return self._started.wait(timeout) and self._pool is not None

    async def encode(
        self,
        raw: bytes,
        ndjson: bool,
        max_records: int,
        max_depth: int,
        partner_id: str,
        received_at: datetime,
    ) -> BatchRecords:
        if self.workers > 0 and len(raw) >= self.inline_bytes:
            pool = self._pool
            if pool is None:
                self._want_pool()
            else:
                loop = asyncio.get_running_loop()
                try:
                    result = await loop.run_in_executor(
                        pool, _encode_in_worker, raw, ndjson, max_records, max_depth, partner_id, received_at
                    )
                except BrokenProcessPool:
                    self._broken(pool)
                else:
                    if isinstance(result, tuple):
                        raise BodyError(*result)
                    return result
        return encode_batch(raw, ndjson, max_records, max_depth, partner_id, received_at)

    def _want_pool(self) -> None:
        with self._lock:
            if self._closed or self._starting or self._pool is not None or self.workers == 0:
                return
            if time.monotonic() < self._not_before:
                return
            self._starting = True
            self._started.clear()
        threading.Thread(target=self._start_pool, name="ingest-batch-workers", daemon=True).start()

    def _start_pool(self) -> None:
        fresh: ProcessPoolExecutor | None = None
        try:
            # spawn, not fork: the parent runs kafka-python's threads and the event loop
            fresh = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent
            )
            for f in [fresh.submit(_ready) for _ in range(self.workers)]:
                f.result(timeout=60)
        except Exception as exc:
            log.error(
                "could not start batch worker processes; encoding batches inline",
                extra={"error": repr(exc), "retry_in_s": self.retry_s},
            )
            if fresh is not None:
                fresh.shutdown(wait=False, cancel_futures=True)
            fresh = None
        with self._lock:
            self._starting = False
            if fresh is None:
                self._not_before = time.monotonic() + self.retry_s
            elif self._closed:
                fresh.shutdown(wait=False, cancel_futures=True)
            else:
                self._pool = fresh
            self._started.set()

    def _broken(self, pool: ProcessPoolExecutor) -> None:
        """A worker died: drop the pool (the next big batch starts a new one)."""
        with self._lock:
            if self._pool is not pool:
                return
            self._pool = None
            self.restarts += 1
        log.warning("a batch worker process died; encoding inline while a new pool starts")
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.shutdown(wait=True, cancel_futures=True)
