"""Records as they appear on Kafka in v1: every current reader must keep reading them."""

import json
from pathlib import Path

import pytest

from schemas.records import decode_event, encode_event

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "v1"
FILES = sorted(CORPUS.glob("*.json"))


def test_corpus_is_large_enough() -> None:
    assert len(FILES) >= 6


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_v1_record_decodes(path: Path) -> None:
    record = json.loads(path.read_text())
    key = record["key"].encode()
    value = json.dumps(record["value"]).encode()
    headers = [(k, v.encode()) for k, v in record["headers"].items()]
    event = decode_event(key, value, headers)
    assert key.decode() == f"{event.partner_id}/{event.event_id}"
    # re-encoding keeps the meaning: decoding our own output gives the same event
    assert decode_event(*encode_event(event)) == event


def test_corpus_covers_the_interesting_cases() -> None:
    events = [
        decode_event(
            r["key"].encode(),
            json.dumps(r["value"]).encode(),
            [(k, v.encode()) for k, v in r["headers"].items()],
        )
        for r in (json.loads(p.read_text()) for p in FILES)
    ]
    assert any(len(e.host_country) == 4 or any(len(d.country) == 4 for d in e.delegations) for e in events)
    assert any(len(e.delegations) >= 3 for e in events)
    assert any(e.status == "cancelled" for e in events)
    assert any(e.revision >= 2 for e in events)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_encode_accepted_is_encode_event_and_content_hash(path: Path) -> None:
    """Ingest's one-dump fast path writes byte-for-byte what encode_event writes."""
    from datetime import UTC, datetime, timedelta, timezone

    from schemas.events import AcceptedEvent, ExchangeEvent, content_hash
    from schemas.records import encode_accepted

    record = json.loads(path.read_text())
    value = record["value"]
    partner_fields = {k: v for k, v in value.items() if k not in ("partner_id", "received_at")}
    event = ExchangeEvent.model_validate(partner_fields)
    for received_at in (
        datetime(2025, 5, 1, 12, 30, 0, 123456, tzinfo=UTC),
        datetime(2025, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
    ):
        reference = AcceptedEvent.model_validate(
            {**event.model_dump(), "partner_id": value["partner_id"], "received_at": received_at}
        )
        fast, digest = encode_accepted(event, value["partner_id"], received_at)
        assert fast == encode_event(reference)
        assert digest == content_hash(event) == content_hash(reference)
