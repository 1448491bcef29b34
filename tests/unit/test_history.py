"""The curated history that `handshake up` loads: valid, sourced, idempotent by construction."""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from handshake.platform import HISTORY
from schemas.countries import is_former
from schemas.events import parse_event


def test_every_exchange_is_valid_sourced_and_unique() -> None:
    events = [parse_event(orjson.loads(line)) for line in HISTORY.read_text().splitlines()]
    assert len(events) >= 30
    assert len({e.event_id for e in events}) == len(events)  # fixed ids: a reload is all duplicates
    for e in events:
        assert e.url and urlsplit(e.url).scheme == "https", e.event_id
        assert e.description and e.revision == 1, e.event_id
        assert e.starts_on.year < 2020
    assert any(e.status == "cancelled" for e in events)  # boycotted games
    assert any(any(is_former(c) for c in e.countries) for e in events)  # SUHH, DDDE, CSHH
    titles = " ".join(e.title.lower() for e in events)
    assert "table tennis" in titles and "bolshoi" in titles and "philadelphia orchestra" in titles
