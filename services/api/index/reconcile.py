"""Reconciliation: the aggregates against the same figures recomputed from the event index.

Two independent readers of the events topic (the aggregator, whose snapshots the api's view
holds, and the api's own index) must agree, once both have caught up, on every pair's active
event count and checksum (DESIGN.md section 2). Pure functions; the routes feed them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.records import checksum_hex

Figures = tuple[int, int]  # (active events, checksum as an unsigned 64-bit int)


@dataclass(frozen=True, slots=True)
class Difference:
    pair: str
    aggregate: Figures
    index: Figures


@dataclass(frozen=True, slots=True)
class Report:
    pairs: int
    differing: list[Difference] = field(default_factory=list)

    @property
    def consistent(self) -> int:
        return self.pairs - len(self.differing)


def compare(aggregate: Mapping[str, Figures], index: Mapping[str, Figures]) -> Report:
    """Every pair with an active event on either side; a pair missing on one side is (0, 0)."""
    zero = (0, 0)
    pairs = {p for p, f in aggregate.items() if f != zero} | {p for p, f in index.items() if f != zero}
    differing = [
        Difference(p, aggregate.get(p, zero), index.get(p, zero))
        for p in sorted(pairs)
        if aggregate.get(p, zero) != index.get(p, zero)
    ]
    return Report(pairs=len(pairs), differing=differing)


def settled(previous: Report | None, current: Report) -> list[Difference]:
    """Differences seen in two runs in a row with the same figures on both sides.

    While events flow, one reader is a little ahead of the other and pairs just touched differ
    for a moment, each time with other figures; a real disagreement stays put. The alert
    counts only these.
    """
    if previous is None:
        return []
    before = {d.pair: d for d in previous.differing}
    return [d for d in current.differing if before.get(d.pair) == d]


def as_json(figures: Figures) -> dict[str, object]:
    return {"active_events": figures[0], "checksum": checksum_hex(figures[1])}
