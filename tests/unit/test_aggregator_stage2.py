"""Stage 2's state (pure): months laid over one year per key, summed per pair, in whole units."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.aggregator import batching, domain, merge

PAIR = "CN-US"


def partial(updates: int, **fields: Any) -> dict[str, Any]:
    return {**domain.empty_partial(months=False), "updates": updates, **fields}


class Stage2:
    """Stage 2's store, and batches taken over it (reads give new objects, as RocksDB's do)."""

    def __init__(self, store: dict[str, Any] | None = None) -> None:
        self.store: dict[str, Any] = store or {}

    def state(self) -> merge.PairsState:
        return merge.PairsState(lambda k: orjson.loads(orjson.dumps(self.store.get(k))), 12)

    def take(self, *entries: tuple[int, dict[str, Any], dict[str, int], bool]) -> dict[str, Any]:
        """Take ``entries`` of PAIR (partition, partial, months, full) in one batch; its writes."""
        state = self.state()
        for partition, value, months, full in entries:
            state.take(PAIR, partition, value, months, full)
        writes = dict(state.writes().get(PAIR, []))
        for key, value in writes.items():
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = orjson.loads(orjson.dumps(value))
        return writes

    def months(self) -> dict[str, int]:
        return self.state().snapshot(PAIR).by_month


def test_changed_months_are_laid_over_their_years_and_summed_over_partitions() -> None:
    stage2 = Stage2()
    stage2.take((4, partial(1), {"1950-01": 2, "2026-12": 1}, False), (7, partial(1), {"1950-01": 1}, False))
    assert stage2.months() == {"1950-01": 3, "2026-12": 1}
    assert stage2.store["y:CN-US:4:1950"] == {"1950-01": 2} and stage2.store["CN-US:4"]["years"] == [
        "1950",
        "2026",
    ]
    writes = stage2.take((4, partial(2), {"1950-01": 0, "1987-03": 4}, False))
    assert writes["y:CN-US:4:1950"] is None and "y:CN-US:4:2026" not in writes  # only changed years
    assert stage2.months() == {"1950-01": 1, "1987-03": 4, "2026-12": 1}
    assert stage2.store["CN-US:4"]["years"] == ["1987", "2026"] and "y:CN-US:4:1950" not in stage2.store
    assert stage2.state().snapshot(PAIR).version == 3


def test_a_full_entry_replaces_every_month_of_its_partial_and_no_other() -> None:
    stage2 = Stage2()
    stage2.take((4, partial(1), {"1950-01": 2, "2026-12": 1}, False), (7, partial(1), {"2026-12": 5}, False))
    stage2.take((4, partial(2), {"1987-03": 4}, True))  # a replay after entries were lost
    assert stage2.months() == {"1987-03": 4, "2026-12": 5}
    assert {k for k in stage2.store if k.startswith("y:")} == {"y:CN-US:4:1987", "y:CN-US:7:2026"}


def test_an_older_entry_is_ignored_and_an_equal_one_taken_again_adds_nothing() -> None:
    stage2 = Stage2()
    stage2.take((4, partial(3), {"1950-01": 2}, False))
    before = dict(stage2.store)
    assert stage2.take((4, partial(2), {"1950-01": 9}, True)) == {}
    # taken again after its unit was stored (a crash before the commit): the partial and its
    # months are in the totals already, so nothing is added
    writes = stage2.take((4, partial(3), {"1950-01": 2}, False))
    assert set(writes) == {"CN-US:4", "m:CN-US"} and stage2.store == before


def test_the_previous_release_s_partials_are_converted_when_their_pair_is_first_read() -> None:
    old = {
        "CN-US:3": {**domain.empty_partial(), "by_month": {"1951-02": 1, "2026-01": 1}, "updates": 4},
        "CN-US:8": {**domain.empty_partial(), "by_month": {"1990-07": 1}, "updates": 1},
    }
    stage2 = Stage2(old)
    assert stage2.months() == {"1951-02": 1, "1990-07": 1, "2026-01": 1}  # read in either form
    writes = stage2.take((3, partial(5), {"1951-02": 0}, False))
    assert set(writes) == {
        "CN-US:3",
        "CN-US:8",
        "y:CN-US:3:1951",
        "y:CN-US:3:2026",
        "y:CN-US:8:1990",
        "m:CN-US",
    }  # all in one unit: the conversion is kept whole or lost with the entry
    assert not any("by_month" in v for k, v in stage2.store.items() if not k.startswith(("y:", "m:")))
    assert stage2.months() == {"1990-07": 1, "2026-01": 1}
    assert stage2.state().snapshot(PAIR).version == 6


def test_an_entry_of_an_earlier_stage_1_carries_every_month() -> None:
    stage2 = Stage2()
    stage2.take((4, partial(1), {"1950-01": 2, "2026-12": 1}, False))
    stage2.take((4, {**partial(2), "by_month": {"1987-03": 1}}, {}, False))
    assert stage2.months() == {"1987-03": 1} and "by_month" not in stage2.store["CN-US:4"]


@given(st.lists(st.lists(st.binary(max_size=300), max_size=6), max_size=30), st.integers(1_000, 3_000))
def test_units_are_packed_whole_and_in_order(units: list[list[bytes]], limit: int) -> None:
    items = [[(b"k%d" % i, v) for i, v in enumerate(unit)] for unit in units]
    packed = batching.pack(items, limit)
    assert [item for chunk in packed for item in chunk] == [item for unit in items for item in unit]
    for chunk in packed:
        assert chunk, "no empty unit"
        assert batching.unit_bytes(chunk) <= limit or len(chunk) <= 6  # only a lone unit is over
    bounds = {sum(len(u) for u in items[: i + 1]) for i in range(len(items))}
    ends = {sum(len(c) for c in packed[: i + 1]) for i in range(len(packed))}
    assert ends <= bounds, "a unit is never split"


MONTHS = ["1950-01", "1950-07", "1987-03", "2026-12"]
DAYS = ["1950-01-05", "1987-03-02", "2024-06-30", "2026-12-31"]


@st.composite
def entries(draw: st.DrawFn) -> tuple[int, dict[str, Any], dict[str, int], bool, bool]:
    """(partition, partial, months, full, ends a batch)"""
    dates = sorted(draw(st.lists(st.sampled_from(DAYS), max_size=2)))
    value = partial(
        draw(st.integers(1, 6)),
        active_events=draw(st.integers(0, 5)),
        participants=draw(st.integers(0, 90)),
        cancelled=draw(st.integers(0, 2)),
        checksum=draw(st.integers(0, 2**64 - 1)),
        by_kind=draw(st.dictionaries(st.sampled_from(["athletic", "civic"]), st.integers(1, 3))),
        by_direction=draw(st.dictionaries(st.sampled_from(["CN>US", "US>CN"]), st.integers(1, 3))),
        first_date=dates[0] if dates else None,
        last_date=dates[-1] if dates else None,
    )
    months = draw(st.dictionaries(st.sampled_from(MONTHS), st.integers(0, 4)))
    return draw(st.integers(0, 3)), value, months, draw(st.booleans()), draw(st.booleans())


@given(st.lists(entries(), max_size=25))
def test_totals_are_those_of_the_partials_taken_whatever_the_batches(
    taken: list[tuple[int, dict[str, Any], dict[str, int], bool, bool]],
) -> None:
    """Against a model: per partition the newest partial (``>=``) and its months laid over (or
    replaced when full); the snapshot sums them, as stage 2 did before it kept totals."""
    latest: dict[int, dict[str, Any]] = {}
    months: dict[int, dict[str, int]] = {}
    stage2, batch = Stage2(), []
    for partition, value, changed, full, ends in taken:
        if partition not in latest or value["updates"] >= latest[partition]["updates"]:
            latest[partition] = value
            laid = {} if full else months.get(partition, {})
            months[partition] = {m: n for m, n in {**laid, **changed}.items() if n}
        batch.append((partition, value, changed, full))
        if ends:
            stage2.take(*batch)
            batch = []
    stage2.take(*batch)
    parts = {str(p): {**v, "by_month": months[p]} for p, v in latest.items()}
    if parts:
        assert merge.comparable(stage2.state().snapshot(PAIR)) == merge.comparable(merge.merge_partials(PAIR, parts))
        assert stage2.state().snapshot(PAIR).version == sum(v["updates"] for v in latest.values())
