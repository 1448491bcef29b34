"""The partials topic's records: bundles of bounded size, read back whole, in either form."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.aggregator import domain, merge, partials


def entry(pair: str, partition: int, updates: int) -> bytes:
    partial = {**domain.empty_partial(months=False), "updates": updates, "active_events": updates}
    months = {f"{1950 + updates}-{m:02d}": updates * m for m in range(1, 1 + updates % 13)}
    return partials.entry_bytes(pair, partition, updates, orjson.dumps(partial), months, updates % 2 == 0)


@given(
    st.dictionaries(
        st.integers(0, 11),
        st.lists(
            st.tuples(st.sampled_from(["CN-US", "DE-FR", "ABCD-XY"]), st.integers(0, 11), st.integers(1, 99))
        ),
        max_size=4,
    ),
    st.integers(200, 4_000),
)
def test_bundles_keep_every_entry_in_order_within_the_limit(
    given_entries: dict[int, list[tuple[str, int, int]]], limit: int
) -> None:
    raw = {target: [entry(*e) for e in items] for target, items in given_entries.items()}
    out = partials.bundle(raw, limit)
    for target, items in given_entries.items():
        records = out.get(target, [])
        read = [e for _, value in records for e in partials.entries(value)]
        assert [(e["pair"], e["partition"], e["updates"]) for e in read] == items
        for e in read:  # the months and whether they are all of them, as written
            assert e["full"] is (e["updates"] % 2 == 0) and len(e["months"]) == e["updates"] % 13
            assert all(n == e["updates"] * int(m[5:]) for m, n in e["months"].items())
        for _, value in records:
            assert len(value) <= limit or len(partials.entries(value)) == 1  # only a lone big entry
    keys = [key for records in out.values() for key, _ in records]
    assert len(set(keys)) == len(keys), "keys are unique: compaction could never drop a bundle"


def test_a_single_partial_of_an_earlier_release_reads_as_one_entry() -> None:
    legacy = {**domain.empty_partial(), "dates": {"2025-04-10": 1}, "active_events": 1, "updates": 3}
    del legacy["first_date"], legacy["last_date"]
    value = b'{"pair":"CN-US","partition":4,"updates":3,"partial":' + orjson.dumps(legacy) + b"}"
    (only,) = partials.entries(value)
    assert (only["pair"], only["partition"], domain.span(only["partial"])) == (
        "CN-US",
        4,
        ("2025-04-10", "2025-04-10"),
    )
    assert (only["months"], only["full"]) == ({}, False)
    # it carries its months: stage 2 keeps them as they are, whatever it held
    stored = {**domain.empty_partial(), "by_month": {"1999-01": 5}, "updates": 2}
    assert merge.apply_entry(stored, only["partial"], only["months"], only["full"]) == legacy


def test_stage2_lays_the_changed_months_over_its_own_or_replaces_them_all() -> None:
    def partial(updates: int) -> dict[str, object]:
        return {**domain.empty_partial(months=False), "updates": updates}

    stored = {**partial(4), "by_month": {"1950-01": 2, "2026-12": 1}}
    changed = merge.apply_entry(stored, partial(5), {"1950-01": 0, "1987-03": 4}, False)
    assert changed is not None and changed["by_month"] == {"2026-12": 1, "1987-03": 4}
    whole = merge.apply_entry(stored, partial(5), {"1987-03": 4}, True)
    assert whole is not None and whole["by_month"] == {"1987-03": 4}
    assert merge.apply_entry(stored, partial(4), {}, False) == stored  # again: the same
    assert merge.apply_entry(stored, partial(3), {"1987-03": 4}, True) is None  # older: ignored
    assert stored["by_month"] == {"1950-01": 2, "2026-12": 1}, "the stored partial is not changed"


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"[]",
        b'{"partials":[{"pair":"CN-US"}]}',
        b'{"pair":1,"partition":0,"partial":{}}',
        b'{"pair":"CN-US","partition":0,"partial":{},"months":[1]}',
    ],
)
def test_unreadable_records_raise(value: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - stage 2 logs any of them and goes on
        partials.entries(value)
