import base64
import json
from datetime import UTC, date, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import AcceptedEvent, ExchangeEvent
from schemas.records import (
    CE_TYPE_EVENT,
    DeadLetter,
    PairStats,
    PartnerRecord,
    RecordError,
    checksum_hex,
    decode_dead_letter,
    decode_event,
    decode_pair_stats,
    decode_partner,
    encode_accepted,
    encode_dead_letter,
    encode_event,
    encode_pair_stats,
    encode_partner,
    event_key,
)


def accepted(**overrides: object) -> AcceptedEvent:
    data: dict[str, object] = {
        "event_id": "evt:1",
        "revision": 2,
        "kind": "athletic",
        "title": "Friendly match",
        "host_country": "US",
        "delegations": [{"country": "CN", "participants": 11}, {"country": "SUHH"}],
        "starts_on": "2025-06-01",
        "partner_id": "acme-club",
        "received_at": datetime(2025, 5, 1, 12, 30, tzinfo=UTC),
    }
    data.update(overrides)
    return AcceptedEvent.model_validate(data)


def test_event_round_trip() -> None:
    event = accepted()
    key, value, headers = encode_event(event)
    assert key == b"acme-club/evt:1"
    assert event_key("acme-club", "evt:1") == "acme-club/evt:1"
    h = dict(headers)
    assert h == {
        "ce_specversion": b"1.0",
        "ce_id": b"acme-club/evt:1/2",
        "ce_source": b"/partners/acme-club",
        "ce_type": CE_TYPE_EVENT.encode(),
        "ce_time": b"2025-05-01T12:30:00Z",
        "content-type": b"application/json",
    }
    body = json.loads(value)
    assert body["received_at"] == "2025-05-01T12:30:00Z"
    assert body["starts_on"] == "2025-06-01"
    assert body["partner_id"] == "acme-club"
    assert b" " not in value.replace(b"Friendly match", b"")
    assert decode_event(key, value, headers) == event


def test_encoded_values_hold_no_more_memory_than_their_length() -> None:
    """Ingest keeps every accepted event's value in its view: a value must cost about its length,
    not the 4-8 KiB buffer that orjson.dumps (3.12 and later) leaves allocated behind it."""
    import tracemalloc

    event = accepted()
    fields = {k: v for k, v in event.model_dump().items() if k not in ("partner_id", "received_at")}
    partner_event = ExchangeEvent.model_validate(fields)
    encoders = {
        "encode_event": lambda: encode_event(event)[1],
        "encode_accepted": lambda: encode_accepted(partner_event, "acme-club", event.received_at)[0][1],
    }
    for name, encode in encoders.items():
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [encode() for _ in range(200)]
            per_value = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
        finally:
            tracemalloc.stop()
        assert per_value < len(kept[0]) + 256, (name, per_value, len(kept[0]))


def reason(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None) -> str:
    with pytest.raises(RecordError) as info:
        decode_event(key, value, headers)
    assert str(info.value)
    return info.value.reason


def test_decode_errors() -> None:
    key, value, headers = encode_event(accepted())
    no_type = [h for h in headers if h[0] != "ce_type"]
    assert reason(key, value, no_type) == "missing_header"
    assert reason(key, value, None) == "missing_header"
    other = [(n, b"org.handshake.exchange.v2" if n == "ce_type" else v) for n, v in headers]
    assert reason(key, value, other) == "unknown_type"
    spec = [(n, b"0.3" if n == "ce_specversion" else v) for n, v in headers]
    assert reason(key, value, spec) == "unknown_type"
    assert reason(key, b"{not json", headers) == "invalid_json"
    assert reason(key, None, headers) == "invalid_json"
    assert reason(key, b'{"event_id": "x"}', headers) == "schema_invalid"
    assert reason(key, b"[]", headers) == "schema_invalid"
    assert reason(b"other/evt:1", value, headers) == "key_mismatch"
    assert reason(None, value, headers) == "key_mismatch"
    assert reason(b"\xff\xfe", value, headers) == "key_mismatch"


def test_decode_ignores_unknown_headers_and_fields() -> None:
    key, value, headers = encode_event(accepted())
    body = json.loads(value)
    body["future_optional_field"] = 1
    body["delegations"][0]["future_nested"] = "x"
    event = decode_event(key, json.dumps(body).encode(), [*headers, ("traceparent", b"00-abc")])
    assert event.event_id == "evt:1"


@pytest.mark.parametrize("where", ["top", "nested"])
def test_decode_ignores_a_later_field_at_either_level_alone(where: str) -> None:
    key, value, headers = encode_event(accepted())
    body = json.loads(value)
    if where == "top":
        body["future_optional_field"] = {"any": "thing"}
    else:
        body["delegations"][-1]["future_nested"] = 3
    assert decode_event(key, json.dumps(body).encode(), headers) == decode_event(key, value, headers)


def test_decode_rejects_invalid_event_content() -> None:
    key, value, headers = encode_event(accepted())
    body = json.loads(value)
    body["delegations"].append({"country": "US"})
    assert reason(key, json.dumps(body).encode(), headers) == "schema_invalid"


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=40)))
def test_decode_event_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_type", CE_TYPE_EVENT.encode())]
    with pytest.raises(RecordError):
        decode_event(key, value, headers)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)


@given(
    json_values,
    st.one_of(st.none(), st.binary(max_size=30)),
    st.lists(st.tuples(st.text(max_size=15), st.binary(max_size=30)), max_size=6),
)
def test_decode_event_arbitrary_json_and_headers(
    body: object, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    try:
        value = orjson.dumps(body)
    except orjson.JSONEncodeError:
        return
    for hs in (headers, [*headers, ("ce_specversion", b"1.0"), ("ce_type", CE_TYPE_EVENT.encode())]):
        with pytest.raises(RecordError):
            decode_event(key, value, hs)


def stats(**overrides: object) -> PairStats:
    data: dict[str, object] = {
        "pair": "CN-US",
        "countries": ["CN", "US"],
        "version": 7,
        "active_events": 3,
        "participants": 40,
        "by_kind": {"athletic": 2, "civic": 1, "scientific": 0},
        "by_status": {"confirmed": 3, "cancelled": 0},
        "by_direction": {"CN>US": 2, "third_country": 1},
        "by_month": {"2025-06": 3},
        "cancelled": 1,
        "first_date": "2025-06-01",
        "last_date": "2025-06-30",
        "checksum": checksum_hex(2**64 - 1),
        "updated_at": "2025-06-01T00:00:00+02:00",
    }
    data.update(overrides)
    return PairStats.model_validate(data)


def test_pair_stats_round_trip() -> None:
    s = stats()
    assert s.by_kind == {"athletic": 2, "civic": 1}
    assert s.by_status == {"confirmed": 3}
    assert s.checksum == "ffffffffffffffff"
    key, value = encode_pair_stats(s)
    assert key == b"CN-US"
    body = json.loads(value)
    assert body["updated_at"] == "2025-05-31T22:00:00Z"
    assert body["first_date"] == "2025-06-01"
    assert body["countries"] == ["CN", "US"]
    assert decode_pair_stats(value) == s
    assert s.first_date == date(2025, 6, 1)


def test_pair_stats_errors() -> None:
    with pytest.raises(RecordError) as info:
        decode_pair_stats(b"nope")
    assert info.value.reason == "invalid_json"
    with pytest.raises(RecordError) as info:
        decode_pair_stats(b"{}")
    assert info.value.reason == "schema_invalid"
    with pytest.raises(RecordError):
        decode_pair_stats(None)
    _, value = encode_pair_stats(stats())
    body = json.loads(value)
    body["countries"] = ["US", "CN"]
    with pytest.raises(RecordError):
        decode_pair_stats(json.dumps(body).encode())
    body = json.loads(value)
    body["checksum"] = "FFFF"
    with pytest.raises(RecordError):
        decode_pair_stats(json.dumps(body).encode())
    assert checksum_hex(0) == "0000000000000000"
    assert checksum_hex(2**64 + 5) == "0000000000000005"


def test_dead_letter() -> None:
    key, value = encode_dead_letter(
        source_topic="handshake.exchange-events.v1",
        source_partition=3,
        source_offset=42,
        key=b"p/e",
        value=b"\x00\xff",
        headers=[("ce_type", b"x"), ("bin", b"\xff")],
        reason="invalid_json",
        error="the value is not JSON",
        failed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert key == b"p/e"
    letter = decode_dead_letter(value)
    assert isinstance(letter, DeadLetter)
    assert base64.b64decode(letter.original_value_b64 or "") == b"\x00\xff"
    assert letter.original_headers == {"ce_type": "x", "bin": "base64:/w=="}
    assert json.loads(value)["failed_at"] == "2025-01-01T00:00:00Z"
    key, value = encode_dead_letter(
        source_topic="t", source_partition=0, source_offset=0, key=None, value=None,
        headers=None, reason="r", error="e",
    )  # fmt: skip
    assert key is None
    assert decode_dead_letter(value).original_key_b64 is None


def test_partner_record() -> None:
    p = PartnerRecord(
        partner_id="acme-club",
        name="ACME Club",
        key_hash="a" * 64,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert p.rate_per_second == 50
    key, value = encode_partner(p)
    assert key == b"acme-club"
    assert decode_partner(value) == p
    with pytest.raises(RecordError):
        decode_partner(b'{"partner_id": "acme-club"}')
    with pytest.raises(ValueError):
        PartnerRecord(
            partner_id="x", name="x", key_hash="nothex", created_at=datetime(2025, 1, 1, tzinfo=UTC)
        )
