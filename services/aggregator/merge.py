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
    COUNT_FIELDS,
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


def months_key(pair: str) -> str:
    """The pair's count per month, summed over its partials."""
    return f"m:{pair}"


def accept_partial(stored: Partial | None, partial: Partial) -> bool:
    """Whether an incoming partial (from the internal topic) is at least as new as the stored one.

    ``>=``: an equal one is accepted again, so a replay republishes a snapshot that a crash lost.
    """
    return stored is None or partial["updates"] >= stored["updates"]


Reader = Callable[[str], Any]  # a stored value (decoded), or None
Write = tuple[str, Any]  # (key, value); a None value deletes the key


class _Pair:
    """What a batch read and changed of one pair."""

    __slots__ = ("dirty_months", "dirty_partials", "dirty_years", "months", "partials", "years")

    def __init__(self, months: Months | None) -> None:
        self.months: Months = {} if months is None else months
        self.partials: dict[int, Partial | None] = {}
        self.years: dict[tuple[int, str], Months] = {}
        self.dirty_partials: set[int] = set()
        self.dirty_years: set[tuple[int, str]] = set()
        self.dirty_months = months is None  # a pair new to this form: its merged months written


class PairsState:
    """Stage 2's state of the pairs one batch takes entries for, read through ``get`` (pure).

    Stage 2 keeps, per pair, one partial per source partition (:func:`stage2_key`, stage 1's form
    and the years it has months in), that partial's months one year per key (:func:`year_key`),
    and the pair's months summed over its partials (:func:`months_key`). An entry's months are
    laid over its partial's years (only the years they fall in are read), and each change of a
    month is added to the pair's sum; a ``full`` entry replaces all its partial's years. So a
    batch reads and writes one year's months per change, and one sum per pair, however long a
    pair's history is: stage 2 no longer decodes, sums and rewrites 12 copies of every month.

    All of a pair's writes (:meth:`writes`) must be stored as one unit (kept whole or lost): the
    sum is then always the sum of the stored years, and an entry taken again after a crash
    (accepted again: ``>=``) finds its months laid already and adds nothing. Stage 2's keys of
    the previous release (every month in each partial) are converted when the pair is first
    read (no :func:`months_key` yet), in the same unit.
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
        for month, count in targets.items():
            year = month[:4]
            counts = self._year(pair, view, partition, year)
            delta = count - counts.get(month, 0)
            if delta:
                bump(counts, month, delta)
                bump(view.months, month, delta)
                view.dirty_years.add((partition, year))
                view.dirty_months = True
                years.add(year)
        kept = sorted(y for y in years if view.years.get((partition, y), True))
        view.partials[partition] = {**partial, "years": kept}
        view.dirty_partials.add(partition)
        self.changed[pair] = None
        return True

    def writes(self) -> dict[str, list[Write]]:
        """Per pair, everything the batch changed: one unit each (see the class doc)."""
        out: dict[str, list[Write]] = {}
        for pair, view in self.pairs.items():
            unit: list[Write] = [(stage2_key(pair, p), view.partials[p]) for p in sorted(view.dirty_partials)]
            for partition, year in sorted(view.dirty_years):
                unit.append((year_key(pair, partition, year), view.years[(partition, year)] or None))
            if view.dirty_months:
                unit.append((months_key(pair), view.months))
            if unit:
                out[pair] = unit
        return out

    def snapshot(self, pair: str, updated_at: datetime | None = None) -> PairStats:
        """The pair's snapshot: its partials summed, with its months; version = sum of updates."""
        view = self._pair(pair)
        parts = [self._partial(pair, view, p) for p in range(self.partitions)]
        total = sum_partials(p for p in parts if p is not None)
        total["by_month"] = view.months
        return to_pair_stats(pair, total, version=total["updates"], updated_at=updated_at)

    def _pair(self, pair: str) -> _Pair:
        view = self.pairs.get(pair)
        if view is None:
            view = self.pairs[pair] = _Pair(self.get(months_key(pair)))
            if view.dirty_months:
                self._convert(pair, view)
        return view

    def _convert(self, pair: str, view: _Pair) -> None:
        """A pair without summed months: its partials (if any) carry their months inside."""
        for partition in range(self.partitions):
            stored = self._partial(pair, view, partition)
            if stored is None or "by_month" not in stored:
                continue
            years: set[str] = set()
            for month, count in stored["by_month"].items():
                year = month[:4]
                view.years.setdefault((partition, year), {})[month] = count
                view.dirty_years.add((partition, year))
                bump(view.months, month, count)
                years.add(year)
            partial = {k: v for k, v in stored.items() if k != "by_month"}
            view.partials[partition] = {**partial, "years": sorted(years)}
            view.dirty_partials.add(partition)

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
        for name in ("active_events", "participants", "cancelled", "updates"):
            total[name] += part[name]
        for name in COUNT_FIELDS:
            for k, v in part.get(name, {}).items():  # stage 2's partials keep no by_month
                bump(total[name], k, v)
        first, last = span(part)
        if first is not None and (total["first_date"] is None or first < total["first_date"]):
            total["first_date"] = first
        if last is not None and (total["last_date"] is None or last > total["last_date"]):
            total["last_date"] = last
        total["checksum"] = (total["checksum"] + part["checksum"]) % CHECKSUM_MOD
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
