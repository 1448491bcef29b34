"""How each stage cuts its batches: small and at once when it is caught up, large when behind.

A fixed ``take_events(size, within)`` made every live event wait up to ``within`` in each of the
two stages (p50 320 ms at 100 events/s with 0.2 s), while a short ``within`` made catch-up
batches small (stage 1 -14 %, the pipeline -19 % at 200,000 events). Here each stage polls
faust's buffer often (``POLL``) and keeps the records it has until one of:

- the batch is full (``size``);
- the stage is caught up: no assigned partition of its topic has records past the last one
  delivered (the consumer's high watermark);
- the oldest record has waited ``flush_interval``, and what waits in Kafka cannot fill the batch;
- the oldest record has waited ``patience`` (``flush_interval`` unless the stage says longer).

A stage that gets the event loop only between the other stage's batches (stage 2, while stage
1 catches up in batches of ~0.4 s) would otherwise cut a batch of whatever arrived in one look,
however far behind it is: stage 2 took ~600 bundles per batch where 2,500 were allowed, and its
per-batch work (reading, summing and publishing every changed pair) was paid four times over.

faust's ``noack_take`` (public API) leaves acknowledging to the caller, so records held across
polls are never acknowledged, hence never committed, before their batch is processed: the stage
acknowledges each batch after it succeeds (``take_events`` acknowledged a batch when the loop
asked for the next one). While a batch is processed, faust goes on filling the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT

#: seconds between two looks at faust's buffer (an idle stage wakes this often)
POLL = 0.01

#: a stage-1 unit's writes, inside one 900 KiB producer batch
UNIT_BYTES = 768 * 1024

Item = tuple[bytes, bytes]  # a write: key, value


@dataclass
class Hold:
    """The records a stage holds, and when to hand them over (pure: no faust, no clock)."""

    size: int
    flush_interval: float
    patience: float | None = None  # how long a batch may wait to fill (None, or less: flush_interval)
    events: list[EventT] = field(default_factory=list)
    since: float | None = None  # when the oldest held record arrived

    def add(self, events: Sequence[EventT], now: float) -> None:
        if events and self.since is None:
            self.since = now
        self.events.extend(events)

    def deadline(self) -> float | None:
        """When the oldest held record will have waited ``flush_interval``."""
        return None if self.since is None else self.since + self.flush_interval

    def last_call(self) -> float | None:
        """When the oldest held record will have waited ``patience`` (at least ``flush_interval``):
        the batch goes then, full or not."""
        if self.since is None:
            return None
        patience = self.flush_interval if self.patience is None else self.patience
        return self.since + max(self.flush_interval, patience)

    def wake(self, now: float) -> float | None:
        """When :meth:`due` may turn true with no new record: the deadline, then the last call
        (None: nothing held)."""
        deadline = self.deadline()
        return deadline if deadline is None or now < deadline else self.last_call()

    def due(self, now: float, waiting: int) -> bool:
        """Hand the batch over now? ``waiting``: records in Kafka past the last one delivered."""
        deadline, last_call = self.deadline(), self.last_call()
        if deadline is None or last_call is None:
            return False
        held = len(self.events)
        if held >= self.size or waiting <= 0:
            return True
        if now < deadline:
            return False
        return held + waiting < self.size or now >= last_call

    def take(self) -> list[EventT]:
        out, self.events, self.since = self.events, [], None
        return out


class Positions:
    """The next offset of each partition of a topic, from the records delivered so far."""

    def __init__(self, highwater: Callable[[Any], int | None]) -> None:
        self._highwater = highwater
        self._next: dict[Any, int] = {}

    def note(self, events: Sequence[EventT]) -> None:
        for ev in events:
            msg = ev.message
            if msg.offset + 1 > self._next.get(msg.tp, -1):
                self._next[msg.tp] = msg.offset + 1

    def waiting(self) -> int:
        """How many records the partitions seen so far hold past the last one delivered (those
        in faust's buffer too).

        ``highwater`` returns None for a partition it knows nothing of (e.g. no longer assigned).
        """
        return sum(max(0, (self._highwater(tp) or 0) - next_offset) for tp, next_offset in self._next.items())

    def forget(self) -> None:
        """After a rebalance or a seek back: positions are learned again from what comes."""
        self._next.clear()


async def batches(
    stream: Any,
    size: int,
    flush_interval: float,
    positions: Positions,
    poll: float = POLL,
    clock: Callable[[], float] = time.monotonic,
    patience: float | None = None,
) -> AsyncIterator[list[EventT]]:
    """The stage's batches from ``stream.noack_take``, cut as the module says; none acknowledged.

    The next poll of faust's buffer is pending while the caller processes a batch: faust fills
    it whenever the caller awaits (e.g. Kafka's acknowledgement of the batch's writes). It is
    cancelled when the caller stops iterating.
    """
    hold = Hold(size, flush_interval, patience)
    polls = stream.noack_take(size, within=poll).__aiter__()
    pending: asyncio.Future[Sequence[EventT]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(polls.__anext__())
            wake = hold.wake(clock())
            timeout = None if wake is None else max(0.0, wake - clock())
            done, _ = await asyncio.wait({pending}, timeout=timeout)
            if done:
                try:
                    events = pending.result()
                except StopAsyncIteration:
                    pending = None
                    break
                pending = None
                positions.note(events)
                hold.add(events, clock())
            if hold.due(clock(), positions.waiting()):
                if pending is None:  # faust fills the next poll while the caller processes
                    pending = asyncio.ensure_future(polls.__anext__())
                yield hold.take()
        if hold.events:
            yield hold.take()
    finally:
        if pending is not None:  # the stage stops: faust's generator ends with the cancelled poll
            pending.add_done_callback(_retrieve)
            pending.cancel()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a poll that failed as the stage stopped is not logged


class UnitSizer:
    """How many records stage 1 tries to put in a unit, whose writes must fit ``limit`` bytes
    (one Kafka record batch; pure: no faust).

    What a unit writes is known only once its records are processed, and a unit that does not fit
    is processed again with fewer records: that work is lost. Halving until it fits lost a lot
    when one partition held most of a batch (1,600 records where ~300 fit: 1,600, 800 and 400
    processed for nothing, then again for the next unit), as at the end of a backlog; in the last
    100,000 of 1,000,000 events stage 1 processed each record 1.6 times. The sizer remembers the
    bytes per record of the last sizeable unit: it splits only what it expects not to fit, and
    after a miss it tries the count that the bytes seen say fits, with ``fill`` to spare.
    """

    def __init__(self, limit: int, fill: float = 0.9) -> None:
        self.limit = limit
        self.fill = fill
        self.per_record: float | None = None  # bytes written per record (see fits)

    def first(self, pending: int) -> int:
        """How many of ``pending`` records to try first: all of them unless they would not fit."""
        if self.per_record is None or pending * self.per_record <= self.limit:
            return pending
        return max(1, min(pending, int(self.limit * self.fill / self.per_record)))

    def fits(self, count: int, size: int) -> bool:
        """Do ``count`` records whose writes take ``size`` bytes fit? Learns from a sizeable unit,
        or from any unit that wrote less per record than believed (a small unit writes more per
        record than a full one, so it can only lower the figure: after one record too big for any
        unit, the next units are back to their size)."""
        per = size / count
        if size * 4 >= self.limit or self.per_record is None or per < self.per_record:
            self.per_record = per
        return size <= self.limit

    def retry(self, count: int, size: int) -> int:
        """The count to try instead of ``count`` records, whose writes took ``size`` > limit bytes."""
        return max(1, min(count - 1, int(count * self.limit * self.fill / size)))


def unit_bytes(items: Sequence[Item]) -> int:
    """What ``items`` take of a record batch, as the units are sized (with a record's overhead)."""
    return sum(len(key) + len(value) + 64 for key, value in items)
