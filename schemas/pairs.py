"""Country pairs of an event: pure functions shared by the aggregator and analysts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from itertools import combinations

from schemas.events import ExchangeEvent

CHECKSUM_MOD = 2**64
THIRD_COUNTRY = "third_country"


def pair_key(a: str, b: str) -> str:
    """The two codes sorted and joined by '-' ("CN-US")."""
    if a == b:
        raise ValueError(f"a pair needs two different countries, got {a!r} twice")
    return "-".join(sorted((a, b)))


@dataclass(frozen=True, slots=True)
class PairContribution:
    pair: str
    direction: str
    participants: int


def contributions(event: ExchangeEvent) -> list[PairContribution]:
    """Every unordered pair among host and delegations, sorted by pair key."""
    host = event.host_country
    out: list[PairContribution] = []
    for d in event.delegations:
        out.append(PairContribution(pair_key(d.country, host), f"{d.country}>{host}", d.participants or 0))
    for a, b in combinations(event.delegations, 2):
        out.append(
            PairContribution(
                pair_key(a.country, b.country), THIRD_COUNTRY, (a.participants or 0) + (b.participants or 0)
            )
        )
    out.sort(key=lambda c: c.pair)
    return out


def pair_keys(countries: list[str]) -> list[str]:
    """The sorted pair keys of an event's countries (host and delegations): what
    :func:`contributions` yields as ``pair``, without the rest (the event index needs only these)."""
    return sorted(f"{a}-{b}" if a < b else f"{b}-{a}" for a, b in combinations(countries, 2))


def event_checksum(partner_id: str, event_id: str) -> int:
    """64-bit unsigned hash of (partner_id, event_id); a pair's checksum sums these mod 2^64."""
    digest = hashlib.blake2b(f"{partner_id}/{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def month_of(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"
