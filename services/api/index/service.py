"""The event index as the app sees it: the writer, per-thread readers, readiness and the stream.

The writer (:class:`~services.api.index.store.IndexStore`) is used by one thread at a time: the
Kafka source's thread in production, the test's thread in unit tests. Reads run in worker
threads (``anyio.to_thread``), each with its own read-only connection (WAL: readers never block
the writer nor each other), so nothing blocking runs on the event loop. Changes are handed to
the loop with ``call_soon_threadsafe`` and published to the live event stream there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from services.api.hub import StreamHub
from services.api.index.schema import connect, remove_files
from services.api.index.store import COUNTERS, Change, IndexStore, Record

T = TypeVar("T")


class IndexUnavailable(Exception):
    """The index file cannot be read right now (it is being rebuilt)."""


class EventIndex:
    def __init__(self, path: Path, topic: str, hub: StreamHub | None = None) -> None:
        self.path = path
        self.topic = topic
        self.hub = hub or StreamHub()
        self.store: IndexStore | None = None
        self.generation = 0  # bumped when the file is replaced: readers reopen
        self._local = threading.local()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self.lag: int | None = None  # records behind the topic's end, None until measured
        self.counts = dict.fromkeys(COUNTERS, 0)  # since this process started
        self.read_records = 0  # records read from Kafka since this process started
        self.consumer_stalls = 0  # consumers recreated after a stall (StallGuard)
        self.resumed_from: dict[int, int] = {}
        self.last_apply_monotonic: float | None = None
        self.publish_live = False  # publish changes only once caught up (not the history)

    # --- lifecycle (writer thread) --------------------------------------------------------

    def open(self) -> IndexStore:
        """Open (or rebuild) the file; returns the writer. Called by the writer's thread."""
        if self.store is None:
            self.store = IndexStore(self.path, self.topic)
            self.generation += 1
        return self.store

    def reset(self) -> None:
        """Throw the file away and start empty (the source then reads the topic again)."""
        assert self.store is not None
        self.store.reset()
        self.generation += 1
        # not ready, and no history replayed to stream clients, until caught up again
        self.publish_live = False
        self._call(self._set_not_ready)

    def install(self, built: Path) -> IndexStore:
        """Replace the (empty) file with ``built``, a complete index file; returns the writer.

        Readers reopen (the generation changes); a reader still holding the old file reads it
        until then (read-only connections never write nor delete its WAL)."""
        self.close()
        remove_files(self.path)  # the old file, and its WAL and shared memory with it
        os.replace(built, self.path)
        store = self.open()
        store.rebuilt = True
        return store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def apply(self, records: Iterable[Record]) -> list[Change]:
        """Apply records (writer thread); their changes go to the live stream once caught up."""
        store = self.open()
        changes, counts = store.apply(records, changes=self.publish_live)
        for name, n in counts.items():
            self.counts[name] += n
        self.last_apply_monotonic = time.monotonic()
        if changes and self.publish_live:
            self._call(self._publish, changes)
        return changes

    def mark_caught_up(self) -> None:
        """Thread-safe: the index reached the end offsets it saw at start."""
        self.publish_live = True
        self._call(self._set_ready)

    def _set_ready(self) -> None:
        self.ready = True

    def _set_not_ready(self) -> None:
        self.ready = False

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn`` on the event loop (now, when already on it or when there is none)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is None or running is self.loop:
            fn(*args)
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self.loop.call_soon_threadsafe(fn, *args)

    def _publish(self, changes: list[Change]) -> None:
        for change in changes:
            self.hub.publish_change(change)

    # --- reading (worker threads) ---------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        held = getattr(self._local, "conn", None)
        if held is not None and held[0] == self.generation:
            conn: sqlite3.Connection = held[1]
            return conn
        if held is not None:
            held[1].close()
        if not self.path.exists() or self.generation == 0:
            raise IndexUnavailable("the event index is being built")
        conn = connect(self.path, readonly=True)
        self._local.conn = (self.generation, conn)
        return conn

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._reader())
        except sqlite3.DatabaseError as exc:
            self._local.conn = None
            raise IndexUnavailable(f"the event index cannot be read: {exc}") from None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with this worker thread's read connection, off the event loop."""
        return await anyio.to_thread.run_sync(self.read_sync, fn)

    def dedicated(self) -> sqlite3.Connection:
        """A read connection of its own (for a long export that spans many worker threads)."""
        if not self.path.exists() or self.generation == 0:
            raise IndexUnavailable("the event index is being built")
        conn = connect(self.path, readonly=True)
        conn.execute("PRAGMA cache_size = -4000")  # a scan reads each page once: a small cache
        return conn
