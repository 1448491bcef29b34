"""Fan-out of applied updates to Server-Sent-Events clients (pure asyncio, no I/O).

Every applied update gets a global sequence number (the SSE ``id``). The hub keeps a bounded
ring of recent updates so a client reconnecting with ``Last-Event-ID: n`` receives exactly the
matching updates after ``n``; when ``n`` is older than the ring (or from another API instance)
the client gets ``event: reset`` and must refetch through REST.

Sequence numbers start at the start time in microseconds since the epoch and grow by one per
update, so they keep increasing across API restarts (unless an instance published more than a
million updates per second) and an id from a previous instance is always "older than the ring".

Publishing never awaits a client: each client has a bounded queue. When it overflows the queue
is coalesced (only the latest snapshot per pair is kept, in sequence order); if even that is
over the bound the client is dropped (its connection is closed; it may reconnect and resume).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

import orjson

from schemas.records import PairStats


@dataclass(frozen=True, slots=True)
class Entry:
    """One published update, already encoded as an SSE frame.

    ``pair`` is the coalescing key (a pair on ``/v1/stream``, an event key on
    ``/v1/stream/events``); ``pairs``, ``countries`` and ``kinds`` are what filters match.
    """

    seq: int
    pair: str
    countries: frozenset[str] | tuple[str, ...]
    kinds: frozenset[str]  # kinds of the new state and of the one it replaced
    frame: bytes
    pairs: frozenset[str] | None = None  # None: just ``pair``


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which updates a client wants; ``None`` = any. Codes and pair keys are canonical."""

    country: str | None = None
    pair: str | None = None
    kind: str | None = None

    def matches(self, entry: Entry) -> bool:
        if self.pair is not None and (
            entry.pair != self.pair if entry.pairs is None else self.pair not in entry.pairs
        ):
            return False
        if self.country is not None and self.country not in entry.countries:
            return False
        # a pair that just lost its last event of this kind still matches, so the client sees it go
        return self.kind is None or self.kind in entry.kinds


def pair_frame(seq: int, stats: PairStats) -> bytes:
    data = orjson.dumps(stats.model_dump(mode="json"))
    return b"id: %d\nevent: pair\ndata: %s\n\n" % (seq, data)


def control_frame(seq: int, event: str, data: dict[str, object]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), orjson.dumps(data))


HEARTBEAT = b": ping\n\n"


class Change(Protocol):
    """An event change to publish (see services.api.index.store.Change)."""

    @property
    def change(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def kinds(self) -> frozenset[str]: ...
    @property
    def countries(self) -> frozenset[str]: ...
    @property
    def pairs(self) -> frozenset[str]: ...
    @property
    def doc(self) -> bytes: ...


class TooManyClients(Exception):
    pass


class Subscription:
    """One client's bounded queue of pending frames."""

    def __init__(self, stream_filter: StreamFilter, bound: int) -> None:
        self.filter = stream_filter
        self.bound = bound
        self._pending: deque[Entry] = deque()
        self._latest: OrderedDict[str, Entry] | None = None  # set while coalescing
        self._wake = asyncio.Event()
        self.gone = asyncio.Event()  # set when dropped
        self.dropped = False
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._latest) if self._latest is not None else len(self._pending)

    def offer(self, entry: Entry) -> None:
        if self.dropped:
            return
        if self._latest is not None:
            if self._latest.pop(entry.pair, None) is not None:
                self.coalesced += 1
            self._latest[entry.pair] = entry
        else:
            self._pending.append(entry)
            if len(self._pending) > self.bound:
                latest: OrderedDict[str, Entry] = OrderedDict()
                for e in self._pending:
                    if latest.pop(e.pair, None) is not None:
                        self.coalesced += 1
                    latest[e.pair] = e
                self._pending.clear()
                self._latest = latest
        if len(self) > self.bound:
            self.dropped = True
            self._pending.clear()
            self._latest = None
            self.gone.set()
        self._wake.set()

    def take(self) -> list[Entry]:
        """Everything pending, in sequence order."""
        if self._latest is not None:
            items = list(self._latest.values())
            self._latest = None
        else:
            items = list(self._pending)
            self._pending.clear()
        self._wake.clear()
        return items

    async def wait(self, patience: float) -> bool:
        """Wait until something is pending (or the client is dropped); False on timeout."""
        if len(self) or self.dropped:
            return True
        try:
            async with asyncio.timeout(patience):  # no extra task per wait (unlike wait_for)
                await self._wake.wait()
        except TimeoutError:
            return False
        return True


class StreamHub:
    def __init__(
        self,
        *,
        replay_size: int = 100_000,
        client_queue: int = 1000,
        max_clients: int = 10_000,
        sequence_start: int | None = None,
    ) -> None:
        self.sequence = int(time.time() * 1_000_000) if sequence_start is None else sequence_start
        self.client_queue = client_queue
        self.max_clients = max_clients
        self._ring: deque[Entry] = deque(maxlen=replay_size) if replay_size else deque(maxlen=0)
        self._subs: set[Subscription] = set()
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.resets = 0

    @property
    def clients(self) -> int:
        return len(self._subs)

    @property
    def coalesced(self) -> int:
        return sum(s.coalesced for s in self._subs)

    def publish(self, stats: PairStats, previous: PairStats | None = None) -> Entry:
        """Number a pair update, keep it for replay and queue it to every matching client."""
        self.sequence += 1
        kinds = frozenset(stats.by_kind)
        if previous is not None:
            kinds |= frozenset(previous.by_kind)
        return self._fan_out(
            Entry(self.sequence, stats.pair, stats.countries, kinds, pair_frame(self.sequence, stats))
        )

    def publish_change(self, change: Change) -> Entry:
        """Number an event change (``event: event``), keep it for replay and queue it."""
        self.sequence += 1
        frame = b'id: %d\nevent: event\ndata: {"change":"%s","item":%s}\n\n' % (
            self.sequence,
            change.change.encode(),
            change.doc,
        )
        entry = Entry(self.sequence, change.key, change.countries, change.kinds, frame, change.pairs)
        return self._fan_out(entry)

    def _fan_out(self, entry: Entry) -> Entry:
        self._ring.append(entry)
        self.published += 1
        lost: list[Subscription] = []
        for sub in self._subs:
            if sub.filter.matches(entry):
                sub.offer(entry)
                self.delivered += 1
                if sub.dropped:
                    lost.append(sub)
        for sub in lost:
            self._subs.discard(sub)
            self.dropped += 1
        return entry

    def subscribe(
        self, stream_filter: StreamFilter, last_event_id: int | None = None
    ) -> tuple[Subscription, list[bytes]]:
        """Register a client; returns it with the frames to send first (hello, replay or reset).

        Registration and the replay snapshot happen in one step on the event loop, so nothing
        published afterwards is missed or sent twice.
        """
        if len(self._subs) >= self.max_clients:
            raise TooManyClients(f"{len(self._subs)} stream clients already connected")
        sub = Subscription(stream_filter, self.client_queue)
        frames = self.initial_frames(stream_filter, last_event_id)
        self._subs.add(sub)
        return sub, frames

    def initial_frames(self, stream_filter: StreamFilter, last_event_id: int | None) -> list[bytes]:
        now = self.sequence
        if last_event_id is None:
            return [control_frame(now, "hello", {"sequence": now})]
        oldest = self._ring[0].seq if self._ring else now + 1
        if last_event_id > now or last_event_id < oldest - 1:
            self.resets += 1
            reason = "unknown id" if last_event_id > now else "id older than the replay buffer"
            return [control_frame(now, "reset", {"sequence": now, "reason": reason})]
        start = last_event_id + 1 - oldest
        return [e.frame for e in itertools.islice(self._ring, start, None) if stream_filter.matches(e)]

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
