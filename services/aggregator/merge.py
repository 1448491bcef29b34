"""Stage 2 and the ground truth: partials into the snapshots of pairs (pure, no Kafka).

Stage 2 keeps one partial per (pair, source partition), that partial's count per month one year
per key, and each pair's months summed (:class:`PairsState`, which lays over them the months
stage 1 published with each partial), and makes of them a :class:`~schemas.records.PairStats`
whose ``version`` is the sum of the partials' ``updates``. :func:`recompute` is the ground truth: a batch computation
from the latest revision of every event, used by the tests (and the fault suite) to reconcile
the incremental aggregates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from schemas.acceptance import latest_revisions
from schemas.events import AcceptedEvent
from schemas.pairs import CHECKSUM_MOD
from schemas.records import PairStats, checksum_hex
from services.aggregator.domain import (
    MemoryDays,
    Months,
    Partial,
    add_contribution,
    bump,
    contribution,
    empty_partial,
    pairs_of,
    span,
)


def stage2_key(pair: str, partition: int) -> str:
    """Stage 2's partial of a pair from one source partition (no months: see :class:`PairsState`)."""
    return f"{pair}:{partition}"


def year_key(pair: str, partition: int, year: str) -> str:
    """That partial's count per month of one year (YYYY-MM -> count, at most 12 entries)."""
    return f"y:{pair}:{partition}:{year}"


def pair_key(pair: str) -> str:
    """The pair's totals: its partials summed, its months, and each partial's first/last date."""
    return f"m:{pair}"


def accept_partial(stored: Partial | None, partial: Partial) -> bool:
    """Whether an incoming partial (from the internal topic) is at least as new as the stored one.

    ``>=``: an equal one is accepted again, so a replay republishes a snapshot that a crash lost.
    """
    return stored is None or partial["updates"] >= stored["updates"]


Reader = Callable[[str], Any]  # a stored value (decoded), or None
Write = tuple[str, Any]  # (key, value); a None value deletes the key
SUMMED = ("active_events", "participants", "cancelled", "updates")
COUNTED = ("by_kind", "by_status", "by_direction")


def empty_totals() -> dict[str, Any]:
    """A pair's totals (:func:`pair_key`) with no partial."""
    return {
        "sum": {**{n: 0 for n in SUMMED}, **{n: {} for n in COUNTED}, "checksum": 0},
        "months": {},
        "spans": {},
    }


def add_partial(total: Partial, partial: Partial, sign: int) -> None:
    """Add (+1) or subtract (-1) a partial's counts to a sum of partials, in place."""
    for name in SUMMED:
        total[name] += sign * partial[name]
    for name in COUNTED:
        for k, v in partial[name].items():
            bump(total[name], k, sign * v)
    total["checksum"] = (total["checksum"] + sign * partial["checksum"]) % CHECKSUM_MOD


class _Pair:
    """What a batch read and changed of one pair."""

    __slots__ = ("dirty", "partials", "totals", "years")

    def __init__(self, totals: dict[str, Any] | None) -> None:
        self.totals: dict[str, Any] = empty_totals() if totals is None else totals
        self.partials: dict[int, Partial | None] = {}
        self.years: dict[tuple[int, str], Months] = {}
        self.dirty: set[Any] = set()  # partitions (partials), (partition, year), "totals"
        if totals is None:
            self.dirty.add("totals")  # a pair new to this form: its totals are written


class PairsState:
    """Stage 2's state of the pairs one batch takes entries for, read through ``get`` (pure).

    Stage 2 keeps, per pair, one partial per source partition (:func:`stage2_key`, stage 1's form
    and the years it has months in), that partial's months one year per key (:func:`year_key`),
    and the pair's totals (:func:`pair_key`): its partials summed, its months summed, and each
    partial's first and last date. An entry's partial replaces the stored one in the sum (the
    difference is added), its months are laid over its partial's years (only the years they fall
    in are read), and each change of a month is added to the pair's; a ``full`` entry replaces
    all its partial's years. So a batch reads one partial and one year per change and one totals
    per pair, however long a pair's history is, and a snapshot is the totals as they are: stage 2
    no longer reads, decodes and sums a pair's 12 partials, with every month, at every change.

    All of a pair's writes (:meth:`writes`) must be stored as one unit (kept whole or lost): the
    totals are then always those of the stored partials and years, and an entry taken again
    after a crash (accepted again: ``>=``) finds itself in them already and adds nothing. Stage
    2's keys of the previous release (every month in each partial, no totals) are converted
    when the pair is first read, in the same unit.
    """

    def __init__(self, get: Reader, partitions: int) -> None:
        self.get = get
        self.partitions = partitions
        self.pairs: dict[str, _Pair] = {}
        self.changed: dict[str, None] = {}  # pairs whose snapshot changed, in order

    def take(self, pair: str, partition: int, partial: Partial, months: Months, full: bool) -> bool:
        """Take an entry of the partials topic; False if it is older than the stored partial."""
        view = self._pair(pair)
        stored = self._partial(pair, view, partition)
        if not accept_partial(stored, partial):
            return False
        if "by_month" in partial:  # an earlier release's stage 1 published every month inside
            months, full = partial["by_month"], True
            partial = {k: v for k, v in partial.items() if k != "by_month"}
        years = set(stored.get("years", ())) if stored is not None else set()
        targets: Months = {}
        if full:  # whole months: every month stored and not given is now empty
            for year in years:
                targets.update(dict.fromkeys(self._year(pair, view, partition, year), 0))
        targets.update(months)
        totals = view.totals
        for month, count in targets.items():
            year = month[:4]
            counts = self._year(pair, view, partition, year)
            delta = count - counts.get(month, 0)
            if delta:
                bump(counts, month, delta)
                bump(totals["months"], month, delta)
                view.dirty.add((partition, year))
                years.add(year)
        if stored is not None:
            add_partial(totals["sum"], stored, -1)
        add_partial(totals["sum"], partial, +1)
        first, last = span(partial)
        if first is None:
            totals["spans"].pop(str(partition), None)
        else:
            totals["spans"][str(partition)] = [first, last]
        kept = sorted(y for y in years if view.years.get((partition, y), True))
        view.partials[partition] = {**partial, "years": kept}
        view.dirty.update((partition, "totals"))
        self.changed[pair] = None
        return True

    def writes(self) -> dict[str, list[Write]]:
        """Per pair, everything the batch changed: one unit each (see the class doc)."""
        out: dict[str, list[Write]] = {}
        for pair, view in self.pairs.items():
            unit: list[Write] = []
            for item in sorted(view.dirty, key=str):
                if isinstance(item, int):
                    unit.append((stage2_key(pair, item), view.partials[item]))
                elif isinstance(item, tuple):
                    partition, year = item
                    unit.append((year_key(pair, partition, year), view.years[item] or None))
            if "totals" in view.dirty:
                unit.append((pair_key(pair), view.totals))
            if unit:
                out[pair] = unit
        return out

    def snapshot(self, pair: str, updated_at: datetime | None = None) -> PairStats:
        """The pair's snapshot, from its totals; version = the sum of its partials' updates."""
        totals = self._pair(pair).totals
        spans = totals["spans"].values()
        total = {
            **totals["sum"],
            "by_month": totals["months"],
            "first_date": min((first for first, _ in spans), default=None),
            "last_date": max((last for _, last in spans), default=None),
        }
        return to_pair_stats(pair, total, version=total["updates"], updated_at=updated_at)

    def _pair(self, pair: str) -> _Pair:
        view = self.pairs.get(pair)
        if view is None:
            view = self.pairs[pair] = _Pair(self.get(pair_key(pair)))
            if "totals" in view.dirty:
                self._convert(pair, view)
        return view

    def _convert(self, pair: str, view: _Pair) -> None:
        """A pair without totals: new, or kept by the previous release (every month inside each
        partial): its totals are made from its partials, and their months go to their years."""
        totals = view.totals
        for partition in range(self.partitions):
            stored = self._partial(pair, view, partition)
            if stored is None:
                continue
            add_partial(totals["sum"], stored, +1)
            first, last = span(stored)
            if first is not None:
                totals["spans"][str(partition)] = [first, last]
            years: set[str] = set()
            for month, count in stored.get("by_month", {}).items():
                year = month[:4]
                view.years.setdefault((partition, year), {})[month] = count
                view.dirty.add((partition, year))
                bump(totals["months"], month, count)
                years.add(year)
            partial = {k: v for k, v in stored.items() if k != "by_month"}
            view.partials[partition] = {**partial, "years": sorted(years)}
            view.dirty.add(partition)

    def _partial(self, pair: str, view: _Pair, partition: int) -> Partial | None:
        if partition not in view.partials:
            view.partials[partition] = self.get(stage2_key(pair, partition))
        return view.partials[partition]

    def _year(self, pair: str, view: _Pair, partition: int, year: str) -> Months:
        counts = view.years.get((partition, year))
        if counts is None:
            counts = view.years[(partition, year)] = self.get(year_key(pair, partition, year)) or {}
        return counts


def sum_partials(partials: Iterable[Partial]) -> Partial:
    total = empty_partial()
    for part in partials:
        add_partial(total, part, +1)
        for k, v in part.get("by_month", {}).items():  # stage 2's partials keep no by_month
            bump(total["by_month"], k, v)
        first, last = span(part)
        if first is not None and (total["first_date"] is None or first < total["first_date"]):
            total["first_date"] = first
        if last is not None and (total["last_date"] is None or last > total["last_date"]):
            total["last_date"] = last
        total["last_offset"] = max(total["last_offset"], part["last_offset"])
    return total


def merge_partials(
    pair: str, partials: Mapping[str, Partial], updated_at: datetime | None = None
) -> PairStats:
    """The snapshot of a pair from its per-partition partials; version = sum of updates."""
    total = sum_partials(partials.values())
    return to_pair_stats(pair, total, version=total["updates"], updated_at=updated_at)


def to_pair_stats(pair: str, total: Partial, version: int, updated_at: datetime | None = None) -> PairStats:
    a, b = pair.split("-")
    first, last = span(total)
    return PairStats(
        pair=pair,
        countries=(a, b),
        version=version,
        active_events=total["active_events"],
        participants=total["participants"],
        by_kind=dict(total["by_kind"]),
        by_status=dict(total["by_status"]),
        by_direction=dict(total["by_direction"]),
        by_month=dict(total["by_month"]),
        cancelled=total["cancelled"],
        first_date=date.fromisoformat(first) if first else None,
        last_date=date.fromisoformat(last) if last else None,
        checksum=checksum_hex(total["checksum"]),
        updated_at=updated_at or datetime.now(UTC),
    )


# --- ground truth ---------------------------------------------------------------------


def recompute_partials(events: Iterable[AcceptedEvent]) -> dict[str, Partial]:
    """Batch computation of every pair's totals from the latest revision of every event."""
    totals: dict[str, Partial] = {}
    days: dict[str, MemoryDays] = {}
    for event in latest_revisions(events).values():
        contrib = contribution(event)
        for pair in pairs_of(contrib):
            add_contribution(
                totals.setdefault(pair, empty_partial()),
                contrib,
                pair,
                +1,
                days.setdefault(pair, MemoryDays()),
            )
    return totals


def recompute(events: Iterable[AcceptedEvent]) -> dict[str, PairStats]:
    """Ground truth: pair -> PairStats (version 0) from the events' latest revisions."""
    at = datetime.now(UTC)
    return {
        pair: to_pair_stats(pair, total, version=0, updated_at=at)
        for pair, total in sorted(recompute_partials(events).items())
    }


def comparable(stats: PairStats) -> dict[str, Any]:
    """The fields that must match ground truth exactly (not version/updated_at)."""
    return stats.model_dump(mode="json", exclude={"version", "updated_at"})


def is_empty(stats: PairStats) -> bool:
    return stats.active_events == 0 and stats.cancelled == 0 and stats.participants == 0


def differences(truth: Mapping[str, PairStats], got: Mapping[str, PairStats]) -> dict[str, Any]:
    """Pairs whose comparable fields differ (a pair missing on one side must be empty on the other)."""
    out: dict[str, Any] = {}
    for pair in sorted(set(truth) | set(got)):
        want, have = truth.get(pair), got.get(pair)
        if want is None and have is not None and is_empty(have):
            continue
        if have is None and want is not None and is_empty(want):
            continue
        w = comparable(want) if want is not None else None
        h = comparable(have) if have is not None else None
        if w != h:
            out[pair] = {"expected": w, "got": h}
    return out
