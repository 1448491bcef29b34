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
