"""Pure ingest rules: revisions, batch parsing, rate limiting, API keys."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import ExchangeEvent, content_hash, parse_event
from services.ingest.domain import (
    Accept,
    BodyError,
    Conflict,
    Duplicate,
    RateLimiter,
    TokenBucket,
    ViewEntry,
    decide,
    generate_key,
    hash_key,
    json_depth_exceeds,
    key_matches,
    key_partner_id,
    load_json,
    parse_batch,
    retry_after_header,
    slugify_partner_id,
    validate_item,
)
from tests.samples import EVENT as BASE


def event(**changes: object) -> ExchangeEvent:
    return parse_event({**BASE, **changes})


def entry(ev: ExchangeEvent) -> ViewEntry:
    return ViewEntry(ev.revision, content_hash(ev), ev.status.value, b"{}")


# --- revision rule ------------------------------------------------------------------------


def test_nothing_stored_is_accepted() -> None:
    ev = event()
    assert decide(None, ev.revision, content_hash(ev)) == Accept()


def test_newer_revision_is_accepted() -> None:
    stored = event()
    new = event(revision=2, title="Changed")
    assert decide(entry(stored), new.revision, content_hash(new)) == Accept()


def test_same_revision_same_content_is_duplicate() -> None:
    ev = event()
    # key order and delegation order do not matter to the content hash
    again = parse_event(dict(reversed(list({**BASE}.items()))))
    assert decide(entry(ev), again.revision, content_hash(again)) == Duplicate()


def test_same_revision_other_content_is_conflict() -> None:
    stored = event()
    other = event(title="Another title")
    decision = decide(entry(stored), other.revision, content_hash(other))
    assert isinstance(decision, Conflict)
    assert decision.stored_revision == 1
    assert "revision 2" in decision.reason


def test_older_revision_is_conflict() -> None:
    stored = event(revision=3)
    old = event(revision=2)
    decision = decide(entry(stored), old.revision, content_hash(old))
    assert isinstance(decision, Conflict)
    assert "older" in decision.reason
    assert decision.stored_revision == 3


@given(stored=st.integers(1, 50), sent=st.integers(1, 50), same=st.booleans())
def test_decision_table(stored: int, sent: int, same: bool) -> None:
    ev = event(revision=sent)
    existing = ViewEntry(stored, content_hash(ev) if same else "0" * 64, "announced")
    decision = decide(existing, ev.revision, content_hash(ev))
    if sent > stored:
        assert decision == Accept()
    elif sent == stored and same:
        assert decision == Duplicate()
    else:
        assert isinstance(decision, Conflict)


# --- JSON and batches ---------------------------------------------------------------------


def test_load_json_errors_are_body_errors() -> None:
    with pytest.raises(BodyError) as bad:
        load_json(b"{nope", 32)
    assert bad.value.status == 400
    assert bad.value.code == "invalid_json"
    with pytest.raises(BodyError) as utf:
        load_json(b'{"title": "\xff\xfe"}', 32)
    assert utf.value.code == "invalid_utf8"
    with pytest.raises(BodyError) as deep:
        load_json(b"[" * 40 + b"]" * 40, 32)
    assert deep.value.code == "json_too_deep"
    with pytest.raises(BodyError) as very_deep:
        load_json(b"[" * 5000 + b"]" * 5000, 32)
    assert very_deep.value.status == 400


def test_depth_limit_is_exact() -> None:
    nested: object = 1
    for _ in range(32):
        nested = [nested]
    assert not json_depth_exceeds(nested, 32)
    assert json_depth_exceeds([nested], 32)
    assert not json_depth_exceeds({"a": [{"b": 1}]}, 3)
    assert json_depth_exceeds({"a": [{"b": {}}]}, 3)


def test_json_array_batch() -> None:
    items = parse_batch(orjson.dumps([BASE, {"x": 1}]), ndjson=False, max_records=10, max_depth=32)
    assert [i.index for i in items] == [0, 1]
    assert validate_item(items[0]) is not None
    assert validate_item(items[1]) is None
    assert {e.pointer for e in items[1].errors} >= {"/x", "/event_id"}


def test_json_batch_must_be_an_array_and_bounded() -> None:
    with pytest.raises(BodyError) as not_array:
        parse_batch(orjson.dumps(BASE), ndjson=False, max_records=10, max_depth=32)
    assert not_array.value.status == 422
    with pytest.raises(BodyError) as too_many:
        parse_batch(orjson.dumps([BASE] * 11), ndjson=False, max_records=10, max_depth=32)
    assert too_many.value.status == 413
    with pytest.raises(BodyError) as broken:
        parse_batch(b"[{}, {", ndjson=False, max_records=10, max_depth=32)
    assert broken.value.status == 400


def test_ndjson_batch_with_broken_line_blank_lines_and_crlf() -> None:
    good = orjson.dumps(BASE)
    body = good + b"\r\n\n" + b'{"event_id": "x",' + b"\n" + b"[]\n" + b"\xff\n" + good + b"\n"
    items = parse_batch(body, ndjson=True, max_records=10, max_depth=32)
    assert [(i.index, i.line) for i in items] == [(0, 1), (1, 3), (2, 4), (3, 5), (4, 6)]
    assert validate_item(items[0]) is not None
    assert validate_item(items[1]) is None
    assert items[1].errors[0].code == "invalid_json"
    assert "line 3" in items[1].errors[0].message
    assert validate_item(items[2]) is None
    assert items[2].errors[0].code == "model_type"
    assert items[3].errors[0].code == "invalid_utf8"
    assert validate_item(items[4]) is not None


def test_ndjson_limits() -> None:
    with pytest.raises(BodyError) as empty:
        parse_batch(b"\n\n  \n", ndjson=True, max_records=10, max_depth=32)
    assert empty.value.status == 422
    with pytest.raises(BodyError) as too_many:
        parse_batch(b"{}\n" * 11, ndjson=True, max_records=10, max_depth=32)
    assert too_many.value.status == 413


# --- rate limiting ------------------------------------------------------------------------


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=20, tokens=20, updated=0.0)
    for _ in range(20):
        assert bucket.take(1, 0.0) == 0.0
    wait = bucket.take(1, 0.0)
    assert wait == pytest.approx(0.1)
    assert bucket.take(1, 0.1) == 0.0


def test_big_batch_passes_when_full_then_leaves_debt() -> None:
    limiter = RateLimiter(burst_seconds=2)
    assert limiter.take("p", 50, 1000, now=0.0) == 0.0  # capacity 100, full: allowed, debt 900
    wait = limiter.take("p", 50, 1, now=0.0)
    assert wait == pytest.approx(901 / 50)
    assert retry_after_header(wait) == "19"
    assert retry_after_header(0.01) == "1"


def test_waiting_takes_nothing() -> None:
    limiter = RateLimiter(burst_seconds=1)
    assert limiter.wait("p", 2, 1, now=0.0) == 0.0
    assert limiter.take("p", 2, 2, now=0.0) == 0.0  # the wait above took nothing
    assert limiter.wait("p", 2, 1, now=0.0) == pytest.approx(0.5)
    assert limiter.wait("p", 2, 1, now=0.0) == pytest.approx(0.5)  # nor does this one
    assert limiter.wait("p", 2, 1, now=0.5) == 0.0


def test_partners_have_separate_buckets_and_rate_changes_apply() -> None:
    limiter = RateLimiter(burst_seconds=1)
    assert limiter.take("a", 1, 1, now=0.0) == 0.0
    assert limiter.take("a", 1, 1, now=0.0) > 0
    assert limiter.take("b", 1, 1, now=0.0) == 0.0
    assert limiter.take("a", 100, 1, now=0.0) > 0  # new rate keeps the (empty) level
    assert limiter.take("a", 100, 1, now=0.02) == 0.0


# --- keys ---------------------------------------------------------------------------------


def test_generated_key_round_trip() -> None:
    key = generate_key("euro-twinning")
    assert key.startswith("hsk_euro-twinning_")
    assert key_partner_id(key) == "euro-twinning"
    digest = hash_key(key)
    assert len(digest) == 64
    assert key_matches(key, digest)
    assert not key_matches(key + "x", digest)
    assert generate_key("euro-twinning") != key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "hsk_",
        "hsk_partner",
        "Bearer x",
        "hsk_UPPER_abcdefghijklmnopqrstuvwxyz",
        "hsk_p_short",
        "sk_p_" + "a" * 40,
    ],
)
def test_malformed_keys_have_no_partner(key: str) -> None:
    assert key_partner_id(key) is None


def test_generate_key_refuses_bad_ids() -> None:
    with pytest.raises(ValueError):
        generate_key("Not An Id")


def test_slugify() -> None:
    assert slugify_partner_id("Seattle Sister Cities!") == "seattle-sister-cities"
    assert slugify_partner_id("???") == "partner"
    assert len(slugify_partner_id("x" * 300)) <= 50


def test_publisher_judges_a_wedged_producer_only_after_the_broker_is_back() -> None:
    """After an outage, an idempotent producer whose batches expired is replaced (not before the
    broker answers again, and not while retried batches may still be acknowledged)."""
    import time as _time

    from services.ingest.producer import KafkaPublisher
    from services.ingest.settings import IngestSettings

    publisher = KafkaPublisher(IngestSettings(ack_timeout_s=1.0))
    publisher._failed(0)  # a batch expired
    assert not publisher._wedged(), "broker not reachable yet: nothing to judge"
    publisher._reachable_since = _time.monotonic()
    assert not publisher._wedged(), "within the grace period retried batches get their chance"
    publisher._reachable_since = _time.monotonic() - 5
    assert publisher._wedged(), "expired batches leave a sequence gap: replace the producer"
    publisher._expired = False
    publisher._outstanding = 3
    publisher._last_ack = _time.monotonic() - 5
    assert publisher._wedged(), "records outstanding and no acknowledgement for long: stalled"
    publisher._last_ack = _time.monotonic()
    assert not publisher._wedged()
    publisher._failed(7)  # closing an old producer: an older generation's failure
    assert not publisher._expired
