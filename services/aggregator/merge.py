"""Stage 2 and the ground truth: partials into the snapshots of pairs (pure, no Kafka).

Stage 2 keeps one partial per (pair, source partition), each with its count per month
(:func:`apply_entry` lays over it the months stage 1 published with it), and sums a pair's
partials into a :class:`~schemas.records.PairStats` (:func:`merge_partials`) whose ``version`` is
the sum of the partials' ``updates``. :func:`recompute` is the ground truth: a batch computation
from the latest revision of every event, used by the tests (and the fault suite) to reconcile
the incremental aggregates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    """Stage 2 keeps one key per (pair, source partition): a change rewrites only that partial."""
    return f"{pair}:{partition}"


def accept_partial(stored: Partial | None, partial: Partial) -> bool:
    """Whether an incoming partial (from the internal topic) is at least as new as the stored one.

    ``>=``: an equal one is accepted again, so a replay republishes a snapshot that a crash lost.
    """
    return stored is None or partial["updates"] >= stored["updates"]


def apply_entry(stored: Partial | None, partial: Partial, months: Months, full: bool) -> Partial | None:
    """Stage 2's partial after an entry of the partials topic (None: older than ``stored``, ignored).

    Stage 2 keeps each partial with its count per month: the entry's ``months`` (the months its
    batch changed, or all of them if ``full``) are laid over the stored ones. Entries of a
    (pair, partition) arrive in the order stage 1 published them, and a replay publishes whole
    months, so no change is missed. An earlier release's partial carries its months: kept as is.
    """
    if not accept_partial(stored, partial):
        return None
    if "by_month" in partial:
        return partial
    by_month: Months = {} if full or stored is None else dict(stored["by_month"])
    for month, count in months.items():
        if count:
            by_month[month] = count
        else:
            by_month.pop(month, None)
    return {**partial, "by_month": by_month}


def sum_partials(partials: Iterable[Partial]) -> Partial:
    total = empty_partial()
    for part in partials:
        for name in ("active_events", "participants", "cancelled", "updates"):
            total[name] += part[name]
        for name in COUNT_FIELDS:
            for k, v in part[name].items():
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
