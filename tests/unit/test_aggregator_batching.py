"""How the aggregator's stages cut their batches (services/aggregator/batching.py), without Kafka."""

from __future__ import annotations

import asyncio
import time
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
    assert not hold.due(0.0, waiting=0)  # nothing held
    hold.add(evs("a", 0), now=10.0)
    assert not hold.due(10.1, waiting=1)
    assert hold.due(10.1, waiting=0)  # caught up: at once
    assert hold.due(10.2, waiting=1)  # waited flush_interval
    assert hold.due(10.2, waiting=50)  # no patience beyond flush_interval by default
    hold.add(evs("a", 1, 2), now=10.15)
    assert hold.due(10.15, waiting=1)  # full
    assert [e.message.offset for e in hold.take()] == [0, 1, 2]
    assert hold.deadline() is None and hold.wake(99.0) is None and not hold.due(99.0, waiting=0)


def test_a_patient_hold_waits_to_fill_only_while_enough_waits_in_kafka() -> None:
    hold = Hold(size=10, flush_interval=0.2, patience=2.0)
    hold.add(evs("a", 0, 1), now=10.0)
    assert hold.wake(10.1) == 10.2  # the flush deadline first
    assert not hold.due(10.1, waiting=100)
    assert hold.due(10.1, waiting=0)  # caught up: at once, as ever
    assert hold.due(10.2, waiting=7)  # 2 held + 7 waiting cannot fill 10: flush_interval applies
    assert not hold.due(10.2, waiting=8)  # they can: wait for them
    assert hold.wake(10.2) == 12.0  # then the end of patience
    assert not hold.due(11.9, waiting=100)
    assert hold.due(12.0, waiting=100)  # they did not come in time: go with what is held
    hold.add(evs("a", *range(2, 10)), now=10.5)
    assert hold.due(10.5, waiting=100)  # full


@given(
    st.integers(1, 20),
    st.integers(0, 30),
    st.integers(0, 40),
    st.floats(0, 5),
    st.one_of(st.none(), st.floats(0, 3)),
)
def test_a_hold_never_waits_past_its_patience_nor_holds_a_full_batch(
    size: int, held: int, waiting: int, age: float, patience: float | None
) -> None:
    hold = Hold(size=size, flush_interval=0.2, patience=patience)
    hold.add(evs("a", *range(held)), now=0.0)
    due = hold.due(age, waiting)
    if held == 0:
        assert not due
    elif held >= size or waiting == 0 or age >= (0.2 if patience is None else max(0.2, patience)):
        assert due
    elif age < 0.2:
        assert not due
    else:  # between flush_interval and patience: wait only for what can fill the batch
        assert due == (held + waiting < size)


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
    assert (positions.waiting() > 0) == any((highwaters[tp] or 0) > n for tp, n in nexts.items())
    assert positions.waiting() == sum(max(0, (highwaters[tp] or 0) - n) for tp, n in nexts.items())
    positions.forget()
    assert positions.waiting() == 0


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


def test_a_patient_stage_waits_past_the_flush_interval_for_records_that_fill_its_batch() -> None:
    # 3 records wait in Kafka and come 0.1 s apart: one batch with patience, three without
    polls = [(0, evs("a", 0)), (0.1, evs("a", 1)), (0.1, evs("a", 2))]
    clock_calls = 0

    def clock() -> float:
        nonlocal clock_calls
        clock_calls += 1
        return time.monotonic()

    async def go(patience: float | None) -> list[list[int]]:
        out = []
        stream, positions = Stream(polls), Positions({"a": 3}.get)
        async for batch in batches(stream, 3, 0.02, positions, poll=0.001, clock=clock, patience=patience):
            out.append([e.message.offset for e in batch])
        return out

    assert asyncio.run(go(patience=1.0)) == [[0, 1, 2]]
    assert clock_calls < 50  # it slept between the polls: no spin once the flush interval passed
    assert asyncio.run(go(patience=None)) == [[0], [1], [2]]


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
