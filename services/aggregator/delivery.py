"""Delivery checks of the aggregator's two stages: generations, skipped offsets, holes, seeks.

faust can deliver stale or out-of-order records around a rebalance, skip records it counts as
read, and acknowledge records whose processing failed; these functions keep each stage's batches
to the records it must process, in order, and never let a commit pass one it has not processed
(``docs/reliability.md``, "No record is skipped"). faust internals they need are in
:mod:`services.aggregator.hooks`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT

from services.aggregator import hooks


def in_generation(events: Sequence[EventT], generation: int | None, unacked: Any) -> list[EventT]:
    """The events of a batch that belong to the current consumer generation, in offset order.

    faust's take buffer keeps events fetched before a rebalance, and faust re-delivers them from
    the committed offset afterwards, behind events the buffer may already hold. The domain gives
    the same result in any order, but acknowledging such a stale event would let a commit pass
    it before its re-delivery is processed (a crash then loses it). Events of an older
    generation are therefore dropped and marked acknowledged without reaching faust's
    acknowledged-offset list; the rest are sorted by (partition, offset), once each.
    """
    current: dict[tuple[int, int], EventT] = {}
    stale: list[EventT] = []
    for ev in events:
        msg = ev.message
        if generation is not None and msg.generation_id is not None and msg.generation_id != generation:
            stale.append(ev)
        else:
            current.setdefault((msg.partition, msg.offset), ev)
    unacknowledge(stale, unacked)
    return [current[k] for k in sorted(current)]


@dataclass
class SourcePositions:
    """The next offset each source partition must deliver, within one consumer generation.

    faust can lose fetched records around a rebalance: its fetcher counts a record as read even
    when its stream skipped it (records that arrive while flow control is suspended, between
    "resume partitions" and "resume flow"), and it seeks back to the committed offset only where
    one exists and is above 0 (aiokafka's ``seek_to_committed``). A later record acknowledged
    past such a hole would be committed past it. The source topics have contiguous offsets
    (no transactions; compaction holes and retention at the head are the exceptions), so a
    record beyond the next expected offset means records were skipped: :meth:`admit` cuts the
    batch there and asks for a seek back. If the same record comes first again after that seek,
    the log itself has the hole (compaction, retention) and it is accepted.
    """

    generation: int | None = None
    next: dict[Any, int] = field(default_factory=dict)
    sought: dict[Any, tuple[int, int]] = field(default_factory=dict)  # tp -> (sought to, first seen)
    # tp -> (start, offsets): from ``start`` up to ``offsets[-1]`` the log holds exactly these
    # offsets, as the broker answered a probe (see LogProbe); compaction only ever removes
    # records, so what is absent stays absent (kept across generations)
    known: dict[Any, tuple[int, list[int]]] = field(default_factory=dict)

    def admit(
        self, events: Sequence[EventT], generation: int | None, start: Callable[[Any], int]
    ) -> tuple[list[EventT], list[EventT], dict[Any, int]]:
        """(kept, dropped, seeks) for events sorted by (partition, offset) of one generation.

        ``start(tp)`` is where a partition's delivery begins in this generation (its committed
        offset, or 0). ``seeks`` maps each partition cut at a gap to the offset to seek to.
        """
        if generation != self.generation:
            self.generation, self.next, self.sought = generation, {}, {}
        kept: list[EventT] = []
        dropped: list[EventT] = []
        seeks: dict[Any, int] = {}
        for ev in events:
            msg = ev.message
            tp = msg.tp
            if tp in seeks:
                dropped.append(ev)
                continue
            nxt = self.next.get(tp)
            if nxt is None:
                nxt = start(tp)
            nxt = self.first_existing(tp, nxt)  # holes in the log hold nothing to deliver
            offset = msg.offset
            if offset <= nxt or self.sought.get(tp) == (nxt, offset):
                kept.append(ev)
                self.next[tp] = max(nxt, offset + 1)
                self.sought.pop(tp, None)
            else:
                dropped.append(ev)
                self.next[tp] = nxt
                seeks[tp] = nxt
                self.sought[tp] = (nxt, offset)
        return kept, dropped, seeks

    def forget(self) -> None:
        """Check the next batch against the committed offsets again (after a failed batch)."""
        self.generation, self.next, self.sought = None, {}, {}

    def first_existing(self, tp: Any, offset: int) -> int:
        """The first offset at or after ``offset`` known to hold a record (``offset`` if unknown)."""
        known = self.known.get(tp)
        if known is None or not known[0] <= offset <= known[1][-1]:
            return offset
        return known[1][bisect.bisect_left(known[1], offset)]

    def covers(self, tp: Any, offset: int) -> bool:
        known = self.known.get(tp)
        return known is not None and known[0] <= offset <= known[1][-1]

    def snapshot(self) -> tuple[int | None, dict[Any, int], dict[Any, tuple[int, int]]]:
        return self.generation, dict(self.next), dict(self.sought)

    def restore(self, snapshot: tuple[int | None, dict[Any, int], dict[Any, tuple[int, int]]]) -> None:
        self.generation, self.next, self.sought = snapshot[0], dict(snapshot[1]), dict(snapshot[2])


class LogProbe:
    """Asks the broker which offsets a partition's log really holds from a given one on.

    A record beyond the next expected offset is either a hole in the log itself (compaction has
    removed superseded records: both source topics are compacted, and a reader that lags or
    restarts reads cleaned segments full of holes) or records faust skipped. Seeking back on a
    hole cannot help: faust keeps delivering what it fetched before the seek and re-reads from
    there, so every seek finds the "gap" again (a livelock, seen at 1,000,000 events). One
    fetch from a consumer of its own (no group) tells them apart, for every offset up to the
    last record it returns.
    """

    def __init__(self, bootstrap: str, security: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = security or {}  # aiokafka's SASL/TLS arguments
        self._consumer: Any = None
        self._lock = asyncio.Lock()

    async def offsets_from(self, tp: Any, offset: int, timeout_ms: int = 5000) -> list[int]:
        """The offsets of the records of one fetch of ``tp`` from ``offset`` (empty if none came in
        time): every offset missing between them is a hole, so one probe answers for many."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async with self._lock:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    group_id=None,
                    enable_auto_commit=False,
                    client_id="handshake-aggregator-log-probe",
                    max_partition_fetch_bytes=1024 * 1024,
                    **self.security,
                )
                await consumer.start()
                self._consumer = consumer
            partition = TopicPartition(tp.topic, tp.partition)
            self._consumer.assign([partition])
            self._consumer.seek(partition, offset)
            deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                batch = await self._consumer.getmany(
                    partition, timeout_ms=int(left * 1000) + 1, max_records=10_000
                )
                # only records at or after the offset asked for (never one fetched before the seek)
                found = sorted(int(r.offset) for r in batch.get(partition) or () if r.offset >= offset)
                if found:
                    return found
            return []

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None


def unacknowledge(events: Sequence[EventT], unacked: Any) -> None:
    """Keep faust from ever acknowledging ``events`` (so from committing past them).

    A stage acknowledges its processed batch whole, with the events it left out (stale, or cut
    before a seek back); an event already marked acknowledged is skipped there. Out of faust's
    unacknowledged set, a failed batch's events do not keep a rebalance waiting either.
    """
    for ev in events:
        ev.message.acked = True
        unacked.discard(ev.message)


@dataclass
class FirstBatches:
    """The source partitions whose first batch is still to come since the consumer generation
    began or a batch failed (then delivery starts again at the committed offset): stage 1
    republishes what a crash may have lost in that batch
    (:func:`services.aggregator.domain.republish`)."""

    generation: int | None = None
    done: set[int] = field(default_factory=set)

    def due(self, generation: int | None, partitions: Iterable[int]) -> list[int]:
        """Which of ``partitions`` (a batch's) have their first batch now."""
        if generation != self.generation:
            self.generation, self.done = generation, set()
        return sorted(set(partitions) - self.done)

    def succeeded(self, partitions: Iterable[int]) -> None:
        self.done.update(partitions)

    def forget(self) -> None:
        """A batch failed: every partition starts again."""
        self.done.clear()


def start_offset(consumer: Any, tp: Any) -> int:
    """Where a partition's delivery starts in a consumer generation: its committed offset, or 0."""
    return hooks.committed_offset(consumer, tp) or 0


def seek_sources_after_recovery(consumer: Any, topics: set[str]) -> None:
    """Make faust's post-recovery seek cover every assigned partition of ``topics``.

    faust's ``perform_seek`` resumes the partitions, then awaits the committed offsets one by
    one, seeking only those above 0; records fetched meanwhile are skipped by the suspended
    streams but counted as read. Seeking every source partition again to its committed offset
    (or 0) at the end, with no await before faust resumes the flow, re-delivers them.
    """

    async def seek_sources() -> None:
        for tp in consumer.assignment():
            if tp.topic in topics:
                await consumer.seek(tp, start_offset(consumer, tp))  # no I/O: aiokafka's seek is synchronous

    hooks.wrap_perform_seek(consumer, seek_sources)
