from datetime import date
from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.countries import all_countries
from schemas.events import ExchangeEvent
from schemas.pairs import (
    CHECKSUM_MOD,
    PairContribution,
    contributions,
    event_checksum,
    month_of,
    pair_key,
    pair_keys,
)
from tests.samples import EVENT

CODES = [c for c, _ in all_countries()]


def make_event(host: str, delegations: list[tuple[str, int | None]]) -> ExchangeEvent:
    return ExchangeEvent.model_validate(
        {
            "event_id": "e",
            "kind": "civic",
            "title": "t",
            "host_country": host,
            "delegations": [{"country": c, "participants": p} for c, p in delegations],
            "starts_on": "2025-01-01",
        }
    )


def test_pair_key() -> None:
    assert pair_key("US", "CN") == "CN-US"
    assert pair_key("CN", "US") == "CN-US"
    assert pair_key("SUHH", "US") == "SUHH-US"
    with pytest.raises(ValueError):
        pair_key("FR", "FR")


def test_contributions_example() -> None:
    event = make_event("US", [("CN", 10), ("FR", None), ("DE", 5)])
    assert contributions(event) == [
        PairContribution("CN-DE", "third_country", 15),
        PairContribution("CN-FR", "third_country", 10),
        PairContribution("CN-US", "CN>US", 10),
        PairContribution("DE-FR", "third_country", 5),
        PairContribution("DE-US", "DE>US", 5),
        PairContribution("FR-US", "FR>US", 0),
    ]


def test_month_of() -> None:
    assert month_of(date(2025, 3, 9)) == "2025-03"
    assert month_of(date(987, 12, 1)) == "0987-12"


def test_checksum_known_value() -> None:
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"p/e", digest_size=8).digest(), "big")
    assert event_checksum("p", "e") == expected
    assert CHECKSUM_MOD == 2**64


countries_st = st.lists(st.sampled_from(CODES), min_size=2, max_size=12, unique=True)
participants_st = st.one_of(st.none(), st.integers(0, 100_000))


@given(countries_st, st.data())
def test_pair_properties(countries: list[str], data: st.DataObject) -> None:
    host, *visitors = countries
    dels = [(c, data.draw(participants_st)) for c in visitors]
    result = contributions(make_event(host, dels))
    n = len(countries)
    assert len(result) == n * (n - 1) // 2
    keys = [c.pair for c in result]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert set(keys) == {pair_key(a, b) for a, b in combinations(countries, 2)}
    for c in result:
        a, b = c.pair.split("-")
        assert a < b
        if c.direction != "third_country":
            visitor, to = c.direction.split(">")
            assert to == host and {visitor, to} == {a, b}
        assert c.participants >= 0
    shuffled = data.draw(st.permutations(dels))
    assert contributions(make_event(host, list(shuffled))) == result


@given(st.text(max_size=80), st.text(max_size=150))
def test_checksum_range(partner_id: str, event_id: str) -> None:
    value = event_checksum(partner_id, event_id)
    assert 0 <= value < CHECKSUM_MOD
    assert value == event_checksum(partner_id, event_id)


@given(st.lists(st.sampled_from(["FR", "DE", "US", "CN", "SUHH", "JP"]), min_size=2, max_size=6, unique=True))
def test_pair_keys_are_the_contributions_pairs(codes: list[str]) -> None:
    event = ExchangeEvent.model_validate(
        {**EVENT, "host_country": codes[0], "delegations": [{"country": c} for c in codes[1:]]}
    )
    assert pair_keys(event.countries) == [c.pair for c in contributions(event)]
