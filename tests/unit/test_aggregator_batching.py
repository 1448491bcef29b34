"""How the aggregator's stages cut their batches (services/aggregator/batching.py), without Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.aggregator.batching import Hold, Positions, UnitSizer, batches


@dataclass(frozen=True)
class Msg:
    tp: str
    offset: int


@dataclass(frozen=True)
class Ev:
    message: Msg


def evs(tp: str, *offsets: int) -> list[Any]:
    return [Ev(Msg(tp, o)) for o in offsets]


def test_a_hold_is_due_when_full_caught_up_or_old_enough() -> None:
    hold = Hold(size=3, flush_interval=0.2)
    assert not hold.due(0.0, behind=False)  # nothing held
    hold.add(evs("a", 0), now=10.0)
    assert not hold.due(10.1, behind=True)
    assert hold.due(10.1, behind=False)  # caught up: at once
    assert hold.due(10.2, behind=True)  # waited flush_interval
    hold.add(evs("a", 1, 2), now=10.15)
    assert hold.due(10.15, behind=True)  # full
    assert [e.message.offset for e in hold.take()] == [0, 1, 2]
    assert hold.deadline() is None and not hold.due(99.0, behind=False)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 50)), max_size=30))
def test_positions_are_behind_exactly_when_a_highwater_is_past_the_next_offset(
    delivered: list[tuple[str, int]],
) -> None:
    highwaters = {"a": 20, "b": 40, "c": None}
    positions = Positions(highwaters.get)
    for tp, offset in delivered:
        positions.note(evs(tp, offset))
    nexts: dict[str, int] = {}
    for tp, offset in delivered:
        nexts[tp] = max(nexts.get(tp, 0), offset + 1)
    assert positions.behind() == any((highwaters[tp] or 0) > n for tp, n in nexts.items())
    positions.forget()
    assert not positions.behind()


class Stream:
    """What :func:`batches` uses of a faust stream: ``noack_take`` yielding polls as scripted."""

    def __init__(self, polls: Sequence[tuple[float, list[Any]]]) -> None:
        self.polls = polls

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
        for delay, events in self.polls:
            await asyncio.sleep(delay)
            yield events


def run(polls: Sequence[tuple[float, list[Any]]], highwater: dict[str, int], size: int, flush: float) -> Any:
    async def go() -> list[list[int]]:
        out = []
        async for batch in batches(Stream(polls), size, flush, Positions(highwater.get), poll=0.001):
            out.append([e.message.offset for e in batch])
        return out

    return asyncio.run(go())


def test_caught_up_records_go_at_once() -> None:
    # records arrive live: the high watermark is the next offset, every poll is its own batch
    class Live(Stream):
        async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
            async for events in super().noack_take(max_, within):
                highwater["a"] = events[-1].message.offset + 1
                yield events

    highwater: dict[str, int] = {}

    async def go() -> list[list[int]]:
        polls = [(0, evs("a", 0)), (0.01, evs("a", 1)), (0.01, evs("a", 2, 3))]
        out = []
        async for batch in batches(Live(polls), 100, 10, Positions(highwater.get), poll=0.001):
            out.append([e.message.offset for e in batch])
        return out

    assert asyncio.run(go()) == [[0], [1], [2, 3]]


def test_behind_records_wait_to_fill_a_batch() -> None:
    # 5 records exist; each poll brings one: held until the batch of 2 is full, the rest at the end
    polls = [(0, evs("a", i)) for i in range(5)]
    assert run(polls, {"a": 5}, size=2, flush=10) == [[0, 1], [2, 3], [4]]


def test_behind_records_wait_at_most_the_flush_interval() -> None:
    # more is said to be there but does not come: the held records go after flush_interval
    polls = [(0, evs("a", 0)), (0.3, evs("a", 1))]
    assert run(polls, {"a": 9}, size=100, flush=0.05) == [[0], [1]]


def _units(sizer: UnitSizer, pending: int, bytes_per_record: int) -> tuple[list[int], int]:
    """Cut ``pending`` records as stage 1 does; (the units' sizes, records processed in all)."""
    units, processed = [], 0
    while pending:
        n = sizer.first(pending)
        while True:
            processed += n
            if sizer.fits(n, n * bytes_per_record) or n == 1:
                break
            n = sizer.retry(n, n * bytes_per_record)
        units.append(n)
        pending -= n
    return units, processed


def test_unit_sizer_tries_everything_while_it_fits() -> None:
    sizer = UnitSizer(limit=1_000)
    assert _units(sizer, 40, 20) == ([40], 40)  # 800 bytes: one unit, at the first try
    assert _units(sizer, 50, 20) == ([50], 50)  # exactly the limit still fits


def test_unit_sizer_loses_one_try_not_one_per_unit_when_a_partition_holds_a_lot() -> None:
    """1,600 records of which ~300 fit: halving processed 1,600, 800 and 400 for nothing, and did
    it again for each next unit; the sizer loses the first try only, and none in the next batch."""
    sizer = UnitSizer(limit=300_000)
    units, processed = _units(sizer, 1_600, 1_000)
    assert sum(units) == 1_600 and all(u * 1_000 <= 300_000 for u in units)
    assert processed == 1_600 + 1_600  # the first try, then each record once
    units, processed = _units(sizer, 1_600, 1_000)
    assert processed == 1_600 and len(units) == 6


def test_unit_sizer_ends_at_one_record_when_one_alone_is_too_big() -> None:
    sizer = UnitSizer(limit=1_000)
    units, _ = _units(sizer, 3, 5_000)
    assert units == [1, 1, 1]


def test_unit_sizer_recovers_after_a_record_too_big_for_any_unit() -> None:
    sizer = UnitSizer(limit=1_000)
    assert _units(sizer, 1, 5_000) == ([1], 1)  # written in order, not atomically (counted)
    units, processed = _units(sizer, 40, 20)
    assert processed == 40 and len(units) <= 2  # not one record per unit from now on


def test_unit_sizer_is_not_misled_by_a_small_unit() -> None:
    sizer = UnitSizer(limit=300_000)
    _units(sizer, 3, 5_000)  # a live batch: few records, each touching new partials
    units, processed = _units(sizer, 250, 1_000)  # 250 KB: a full unit fits
    assert processed == 250 and len(units) <= 2
