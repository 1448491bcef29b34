"""The live view: latest snapshot of every country pair, with indexes and incremental totals.

Pure (no Kafka, no I/O): the consumer adapter feeds it ``PairStats`` snapshots and the routes
query it. A snapshot whose ``version`` is not newer than the stored one is ignored, so replays,
duplicates and out-of-order deliveries never overwrite newer data.

Counting rule: totals are sums over pairs. An event with k countries (host + delegations)
contributes to k(k-1)/2 pairs, so it counts k(k-1)/2 times in ``active_events`` of the summary
(and k-1 times in a country's total). Totals are "pair-events", not distinct events.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sortedcontainers import SortedList

from schemas.records import PairStats

SortKey = Literal["events", "participants", "change", "-change"]


@dataclass(frozen=True, slots=True)
class PairQuery:
    """Filters of a ranking; codes are canonical, months are ``YYYY-MM``, inclusive."""

    country: str | None = None
    kind: str | None = None
    status: str | None = None
    month_from: str | None = None
    month_to: str | None = None
    sort: SortKey = "events"
    limit: int = 20
    offset: int = 0
    compare: bool = False  # also the previous window of the same length (needs both months)

    @property
    def months(self) -> bool:
        return self.month_from is not None or self.month_to is not None

    @property
    def filtered(self) -> bool:
        return (
            self.country is not None
            or self.kind is not None
            or self.status is not None
            or self.months
            or self.compare
        )


@dataclass(frozen=True, slots=True)
class Activity:
    code: str
    value: int  # sum of the pairs' rank values (pair-events: an event counts once per partner)
    pairs: int


@dataclass(frozen=True, slots=True)
class Ranked:
    stats: PairStats
    value: int
    previous: int | None = None  # events in the previous window (compare=previous)

    @property
    def change(self) -> int | None:
        return None if self.previous is None else self.value - self.previous


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    items: list[Ranked]


@dataclass(frozen=True, slots=True)
class Totals:
    pairs: int = 0
    active_events: int = 0
    participants: int = 0
    cancelled: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    by_month: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CountryDetail:
    code: str
    totals: Totals
    partners: list[Ranked]


def _add_counts(target: dict[str, int], counts: Mapping[str, int], sign: int) -> None:
    for key, n in counts.items():
        value = target.get(key, 0) + sign * n
        if value:
            target[key] = value
        else:
            target.pop(key, None)


def months_in(stats: PairStats, month_from: str | None, month_to: str | None) -> int:
    """Events of a pair whose month lies in [month_from, month_to] (either bound optional)."""
    low = month_from or ""
    high = month_to or "9999-99"
    return sum(n for month, n in stats.by_month.items() if low <= month <= high)


def shift_month(month: str, months: int) -> str:
    year, mo = int(month[:4]), int(month[5:7])
    index = year * 12 + (mo - 1) + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def previous_window(month_from: str, month_to: str) -> tuple[str, str]:
    """The window of the same number of months that ends just before ``month_from``."""
    length = (
        (int(month_to[:4]) * 12 + int(month_to[5:7])) - (int(month_from[:4]) * 12 + int(month_from[5:7])) + 1
    )
    return shift_month(month_from, -length), shift_month(month_from, -1)


def rank_value(stats: PairStats, query: PairQuery) -> int:
    """What a pair is ranked by under ``query``.

    ``participants`` when sorting by participants; otherwise the events matching the most
    specific filter: the month range, else the kind, else the status, else all active events.
    """
    if query.sort == "participants":
        return stats.participants
    if query.months:
        return months_in(stats, query.month_from, query.month_to)
    if query.kind is not None:
        return stats.by_kind.get(query.kind, 0)
    if query.status is not None:
        return stats.by_status.get(query.status, 0)
    return stats.active_events


def matches(stats: PairStats, query: PairQuery) -> bool:
    if query.country is not None and query.country not in stats.countries:
        return False
    if query.kind is not None and stats.by_kind.get(query.kind, 0) <= 0:
        return False
    if query.status is not None and stats.by_status.get(query.status, 0) <= 0:
        return False
    return not (query.months and months_in(stats, query.month_from, query.month_to) <= 0)


class LiveView:
    """pair -> latest PairStats, a country index, sorted rankings and running totals."""

    def __init__(self) -> None:
        self._pairs: dict[str, PairStats] = {}
        self._by_country: dict[str, set[str]] = defaultdict(set)
        self._rank: dict[SortKey, SortedList] = {"events": SortedList(), "participants": SortedList()}
        # (-count, pair) per kind and per status: kind- or status-filtered rankings without a scan
        self._kind_rank: dict[str, SortedList] = defaultdict(SortedList)
        self._status_rank: dict[str, SortedList] = defaultdict(SortedList)
        self.active_events = 0
        self.participants = 0
        self.cancelled = 0
        self._by_kind: dict[str, int] = {}
        self._by_status: dict[str, int] = {}
        self._by_month: dict[str, int] = {}
        self.last_updated_at: datetime | None = None

    # --- updates --------------------------------------------------------------------

    def apply(self, stats: PairStats) -> bool:
        """Store ``stats`` unless a snapshot with the same or a newer version is stored."""
        return self.replace(stats)[0]

    def replace(self, stats: PairStats) -> tuple[bool, PairStats | None]:
        """Like :meth:`apply`, also returning the snapshot that was stored before."""
        old = self._pairs.get(stats.pair)
        if old is not None and stats.version <= old.version:
            return False, old
        if old is not None:
            self._account(old, -1)
        self._pairs[stats.pair] = stats
        self._account(stats, +1)
        if self.last_updated_at is None or stats.updated_at > self.last_updated_at:
            self.last_updated_at = stats.updated_at
        return True, old

    def _account(self, stats: PairStats, sign: int) -> None:
        pair = stats.pair
        if sign > 0:
            for code in stats.countries:
                self._by_country[code].add(pair)
            self._rank["events"].add((-stats.active_events, pair))
            self._rank["participants"].add((-stats.participants, pair))
            for kind, n in stats.by_kind.items():
                self._kind_rank[kind].add((-n, pair))
            for status, n in stats.by_status.items():
                self._status_rank[status].add((-n, pair))
        else:
            for code in stats.countries:
                members = self._by_country[code]
                members.discard(pair)
                if not members:
                    del self._by_country[code]
            self._rank["events"].remove((-stats.active_events, pair))
            self._rank["participants"].remove((-stats.participants, pair))
            for kind, n in stats.by_kind.items():
                self._kind_rank[kind].remove((-n, pair))
            for status, n in stats.by_status.items():
                self._status_rank[status].remove((-n, pair))
        self.active_events += sign * stats.active_events
        self.participants += sign * stats.participants
        self.cancelled += sign * stats.cancelled
        _add_counts(self._by_kind, stats.by_kind, sign)
        _add_counts(self._by_status, stats.by_status, sign)
        _add_counts(self._by_month, stats.by_month, sign)

    # --- queries --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[PairStats]:
        return iter(self._pairs.values())

    def get(self, pair: str) -> PairStats | None:
        return self._pairs.get(pair)

    def countries(self) -> list[str]:
        return sorted(self._by_country)

    def pairs_of(self, code: str) -> set[str]:
        return set(self._by_country.get(code, ()))

    def totals(self) -> Totals:
        return Totals(
            pairs=len(self._pairs),
            active_events=self.active_events,
            participants=self.participants,
            cancelled=self.cancelled,
            by_kind=dict(sorted(self._by_kind.items())),
            by_status=dict(sorted(self._by_status.items())),
            by_month=dict(sorted(self._by_month.items())),
        )

    def query(self, query: PairQuery) -> Page:
        """Ranked pairs, highest value first, ties by pair key; ``total`` counts all matches."""
        start, stop = query.offset, query.offset + query.limit
        if not query.filtered:
            ranking = self._rank[query.sort]
            items = [self._pairs[pair] for _, pair in ranking.islice(start, stop)]
            return Page(total=len(ranking), items=[Ranked(s, rank_value(s, query)) for s in items])
        if query.compare:
            return self._compare(query)
        index = self._single_index(query)
        if index is not None:  # only kind, or only status, ranked by events: already sorted
            items = [self._pairs[pair] for _, pair in index.islice(start, stop)]
            return Page(total=len(index), items=[Ranked(s, rank_value(s, query)) for s in items])
        candidates: Iterable[PairStats]
        if query.country is not None:
            candidates = (self._pairs[p] for p in self._by_country.get(query.country, ()))
        else:
            candidates = self._pairs.values()
        hits = [(-rank_value(s, query), s.pair) for s in candidates if matches(s, query)]
        best = heapq.nsmallest(stop, hits)[start:stop]
        return Page(total=len(hits), items=[Ranked(self._pairs[pair], -neg) for neg, pair in best])

    def _compare(self, query: PairQuery) -> Page:
        """Pairs with events in the window or the previous one, with both counts and the change."""
        assert query.month_from is not None and query.month_to is not None
        prev_from, prev_to = previous_window(query.month_from, query.month_to)
        candidates: Iterable[PairStats]
        if query.country is not None:
            candidates = (self._pairs[p] for p in self._by_country.get(query.country, ()))
        else:
            candidates = self._pairs.values()
        rows: list[tuple[int, str, int, int]] = []
        for s in candidates:
            if query.kind is not None and s.by_kind.get(query.kind, 0) <= 0:
                continue
            if query.status is not None and s.by_status.get(query.status, 0) <= 0:
                continue
            now = months_in(s, query.month_from, query.month_to)
            before = months_in(s, prev_from, prev_to)
            if now or before:
                key = {"change": before - now, "-change": now - before, "participants": -s.participants}.get(
                    query.sort, -now
                )
                rows.append((key, s.pair, now, before))
        start, stop = query.offset, query.offset + query.limit
        best = heapq.nsmallest(stop, rows)[start:stop]
        return Page(
            total=len(rows),
            items=[Ranked(self._pairs[pair], now, before) for _, pair, now, before in best],
        )

    def trend(self, month_from: str, month_to: str) -> tuple[int, int]:
        """(events in the window, events in the previous window), summed over pairs."""
        prev_from, prev_to = previous_window(month_from, month_to)
        by_month = self._by_month
        now = sum(n for m, n in by_month.items() if month_from <= m <= month_to)
        before = sum(n for m, n in by_month.items() if prev_from <= m <= prev_to)
        return now, before

    def _single_index(self, query: PairQuery) -> SortedList | None:
        if query.country is not None or query.months or query.sort != "events":
            return None
        if query.kind is not None and query.status is None:
            return self._kind_rank.get(query.kind, SortedList())
        if query.status is not None and query.kind is None:
            return self._status_rank.get(query.status, SortedList())
        return None

    def activity(self, query: PairQuery) -> list[Activity]:
        """Every country's sum of ``rank_value`` over its pairs matching ``query`` (the map's shading).

        ``query.country``, ``sort``, ``limit`` and ``offset`` are ignored: ranked by value, then code.
        """
        values: dict[str, int] = defaultdict(int)
        pairs: dict[str, int] = defaultdict(int)
        unfiltered = query.kind is None and query.status is None and not query.months
        for s in self._pairs.values():
            if not unfiltered and not matches(s, query):
                continue
            value = s.active_events if unfiltered else rank_value(s, query)
            for code in s.countries:
                values[code] += value
                pairs[code] += 1
        return [
            Activity(code, values[code], pairs[code])
            for code in sorted(values, key=lambda c: (-values[c], c))
        ]

    def country(self, code: str) -> CountryDetail | None:
        """A country's partners ranked by active events, and totals over its pairs."""
        pairs = self._by_country.get(code)
        if not pairs:
            return None
        stats = [self._pairs[p] for p in pairs]
        totals = recompute_totals(stats)
        ranked = sorted(stats, key=lambda s: (-s.active_events, s.pair))
        return CountryDetail(code=code, totals=totals, partners=[Ranked(s, s.active_events) for s in ranked])


def recompute_totals(snapshots: Iterable[PairStats]) -> Totals:
    """Batch recomputation of :meth:`LiveView.totals` (the reference the tests compare with)."""
    items = list(snapshots)
    by_kind: dict[str, int] = {}
    by_status: dict[str, int] = {}
    by_month: dict[str, int] = {}
    for s in items:
        _add_counts(by_kind, s.by_kind, 1)
        _add_counts(by_status, s.by_status, 1)
        _add_counts(by_month, s.by_month, 1)
    return Totals(
        pairs=len(items),
        active_events=sum(s.active_events for s in items),
        participants=sum(s.participants for s in items),
        cancelled=sum(s.cancelled for s in items),
        by_kind=dict(sorted(by_kind.items())),
        by_status=dict(sorted(by_status.items())),
        by_month=dict(sorted(by_month.items())),
    )
