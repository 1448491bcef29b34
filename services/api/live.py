"""The service layer: applies snapshots to the view, numbers and fans them out, tracks readiness."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from schemas.records import PairStats
from services.api.hub import StreamHub
from services.api.view import LiveView

log = logging.getLogger(__name__)


class Live:
    """What a source feeds (on the event loop) and what the routes read."""

    def __init__(
        self, hub: StreamHub | None = None, fanout_batch: int = 100, freeze_gc: bool = False
    ) -> None:
        self.view = LiveView()
        self.freeze_gc = freeze_gc
        self.fanout_batch = fanout_batch
        self._inbox: deque[PairStats | None] = deque()  # None = "caught up" marker
        self._draining = False
        self.hub = hub or StreamHub()
        self.ready = False
        self.applied = 0
        self.stale = 0
        self.invalid = 0
        self.failed = 0  # snapshots that raised while applied (see _take)
        self.consumer_stalls = 0  # consumers recreated after a stall (StallGuard)
        self.last_apply_monotonic: float | None = None
        self.started_monotonic = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop that owns the view (set by the app's lifespan)."""
        self.loop = loop

    def submit(self, batch: Iterable[PairStats]) -> None:
        """Thread-safe :meth:`deliver` (for other threads: sources, tests, benchmarks)."""
        if self.loop is None:
            raise RuntimeError("the app is not running")
        self.loop.call_soon_threadsafe(self.deliver, list(batch))

    def apply(self, stats: PairStats) -> bool:
        """Apply one snapshot; a newer one is published to stream clients."""
        changed, previous = self.view.replace(stats)
        if not changed:
            self.stale += 1
            return False
        self.applied += 1
        self.last_apply_monotonic = time.monotonic()
        self.hub.publish(stats, previous)
        return True

    def deliver(self, batch: Iterable[PairStats]) -> None:
        """Queue snapshots; they are applied in order, ``fanout_batch`` at a time, yielding to the
        event loop in between so stream writers drain their queues during large bursts."""
        self._inbox.extend(batch)
        self._schedule()

    def caught_up(self) -> None:
        """Mark ready once everything delivered so far is applied."""
        self._inbox.append(None)
        self._schedule()

    def _schedule(self) -> None:
        if not self._draining:
            self._draining = True
            if self.loop is not None:
                self.loop.call_soon(self._drain)
            else:
                self._drain()

    def _take(self, item: PairStats | None) -> None:
        """Apply one queued item; a snapshot that breaks the view is logged and counted, never
        allowed to stop the drain (the view would then stay frozen while still ready)."""
        if item is None:
            self.mark_ready()
            return
        try:
            self.apply(item)
        except Exception:
            self.failed += 1
            log.exception("a snapshot could not be applied: skipped", extra={"pair": item.pair})

    def _drain(self) -> None:
        for _ in range(self.fanout_batch):
            if not self._inbox:
                break
            self._take(self._inbox.popleft())
        if self._inbox and self.loop is not None:
            self.loop.call_soon(self._drain)
            return
        while self._inbox:  # no loop: apply the rest now
            self._take(self._inbox.popleft())
        self._draining = False

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def record_invalid(self, count: int = 1) -> None:
        self.invalid += count

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            if self.freeze_gc:
                # the bulk of the view is now long-lived: keep it out of the collector's full passes
                gc.collect()
                gc.freeze()
            log.info("view caught up", extra={"pairs": len(self.view), "applied": self.applied})

    def staleness_seconds(self) -> float:
        """now - updated_at of the newest applied snapshot (0 when the view is empty)."""
        last = self.view.last_updated_at
        return max(0.0, (datetime.now(UTC) - last).total_seconds()) if last else 0.0

    def seconds_since_last_apply(self) -> float:
        since = self.last_apply_monotonic or self.started_monotonic
        return time.monotonic() - since


class SnapshotSource(Protocol):
    """Feeds a :class:`Live` from somewhere (Kafka in production, nothing or a fake in tests)."""

    def start(self, live: Live) -> None:
        """Begin delivering; called on the event loop. Must call ``live.mark_ready()`` once caught up."""

    def stop(self) -> None:
        """Stop delivering and release resources (may block briefly)."""
