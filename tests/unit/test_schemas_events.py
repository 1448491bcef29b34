import json
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import (
    URL_PATTERN,
    AcceptedEvent,
    EventValidationError,
    ExchangeEvent,
    FieldError,
    Format,
    Kind,
    Status,
    content_hash,
    parse_event,
)


def valid(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "evt-1",
        "kind": "cultural",
        "title": "Choir exchange",
        "host_country": "FR",
        "delegations": [{"country": "DE", "participants": 30}],
        "starts_on": "2025-05-01",
    }
    data.update(overrides)
    return data


def errors_of(data: object) -> list[FieldError]:
    with pytest.raises(EventValidationError) as info:
        parse_event(data)
    assert info.value.errors
    return info.value.errors


def pointers(data: object) -> list[str]:
    return [e.pointer for e in errors_of(data)]


def test_minimal_event_and_defaults() -> None:
    e = parse_event(valid())
    assert e.revision == 1
    assert e.ends_on == date(2025, 5, 1)
    assert e.status is Status.announced
    assert e.format is Format.in_person
    assert e.kind is Kind.cultural
    assert e.tags == []
    assert e.city is None and e.url is None


def test_full_event() -> None:
    e = parse_event(
        valid(
            revision=3,
            host_country="fra",
            delegations=[{"country": "usa"}, {"country": "SUHH", "participants": 0}],
            ends_on="2025-05-04",
            status="cancelled",
            format="hybrid",
            city="Lyon",
            organizer="Lyon choirs",
            url="https://example.org/x?y=1",
            description="d" * 5000,
            tags=["music"] * 20,
        )
    )
    assert e.host_country == "FR"
    assert [d.country for d in e.delegations] == ["US", "SUHH"]
    assert e.delegations[0].participants is None
    assert e.countries == ["FR", "US", "SUHH"]


def test_example_in_schema_is_valid() -> None:
    example = ExchangeEvent.model_json_schema()["examples"][0]
    parse_event(example)
    AcceptedEvent.model_validate(AcceptedEvent.model_json_schema()["examples"][0])


@pytest.mark.parametrize("event_id", ["a", "A.b_c:d-1", "x" * 128])
def test_event_id_ok(event_id: str) -> None:
    assert parse_event(valid(event_id=event_id)).event_id == event_id


@pytest.mark.parametrize("event_id", ["", "x" * 129, "a b", "a/b", "é", 12, None])
def test_event_id_bad(event_id: object) -> None:
    assert pointers(valid(event_id=event_id)) == ["/event_id"]


@pytest.mark.parametrize("revision", [0, -1, True, 1.0, "2", None])
def test_revision_strict(revision: object) -> None:
    assert pointers(valid(revision=revision)) == ["/revision"]


@pytest.mark.parametrize("participants", [True, 1.0, "3", -1, 100_001])
def test_participants_strict(participants: object) -> None:
    data = valid(delegations=[{"country": "DE", "participants": participants}])
    assert pointers(data) == ["/delegations/0/participants"]


@pytest.mark.parametrize("participants", [0, 100_000, None])
def test_participants_ok(participants: int | None) -> None:
    parse_event(valid(delegations=[{"country": "DE", "participants": participants}]))


def test_kind_status_format_enums() -> None:
    assert pointers(valid(kind="sports")) == ["/kind"]
    assert pointers(valid(status="done")) == ["/status"]
    assert pointers(valid(format="online")) == ["/format"]
    assert "expected one of" in errors_of(valid(kind="sports"))[0].message


def test_title_bounds() -> None:
    parse_event(valid(title="t" * 200))
    assert pointers(valid(title="t" * 201)) == ["/title"]
    assert pointers(valid(title="")) == ["/title"]
    assert pointers(valid(title="   ")) == ["/title"]


def test_former_countries() -> None:
    e = parse_event(valid(host_country="SUHH", delegations=[{"country": "DDDE"}, {"country": "YUCS"}]))
    assert e.host_country == "SUHH"


def test_bad_host_country_message() -> None:
    (err,) = errors_of(valid(host_country="XX"))
    assert err.pointer == "/host_country"
    assert err.message == "host_country: 'XX' is not an ISO 3166 country code"


def test_bad_delegation_country_pointer() -> None:
    data = valid(delegations=[{"country": "DE"}, {"country": "QQ"}])
    assert pointers(data) == ["/delegations/1/country"]


def test_64_delegations_ok_65_not() -> None:
    codes = sorted(c for c, _ in __import__("schemas.countries").countries.all_countries() if c != "FR")
    e = parse_event(valid(delegations=[{"country": c} for c in codes[:64]]))
    assert len(e.delegations) == 64
    errs = errors_of(valid(delegations=[{"country": c} for c in codes[:65]]))
    assert [e.pointer for e in errs] == ["/delegations"]
    assert "at most 64" in errs[0].message


def test_no_delegation() -> None:
    assert pointers(valid(delegations=[])) == ["/delegations"]
    assert pointers(valid(delegations=None)) == ["/delegations"]


def test_delegation_equal_to_host() -> None:
    (err,) = errors_of(valid(delegations=[{"country": "DE"}, {"country": "FRA"}]))
    assert err.pointer == "/delegations/1/country"
    assert "host" in err.message


def test_duplicate_delegations_pointer() -> None:
    data = valid(delegations=[{"country": "DE"}, {"country": "US"}, {"country": "IT"}, {"country": "usa"}])
    (err,) = errors_of(data)
    assert err.pointer == "/delegations/3/country"
    assert err.code == "delegation_duplicate"
    assert "'US'" in err.message and "index 1" in err.message


def test_unknown_and_server_owned_fields() -> None:
    errs = errors_of(valid(foo=1, partner_id="p", received_at="2025-01-01T00:00:00Z"))
    by_pointer = {e.pointer: e for e in errs}
    assert set(by_pointer) == {"/foo", "/partner_id", "/received_at"}
    assert by_pointer["/partner_id"].message == (
        "unknown field 'partner_id' (server-owned fields cannot be sent)"
    )
    assert by_pointer["/foo"].message == "unknown field 'foo'"
    assert all(e.code == "extra_forbidden" for e in errs)


def test_unknown_field_in_delegation() -> None:
    assert pointers(valid(delegations=[{"country": "DE", "size": 3}])) == ["/delegations/0/size"]


def test_description_10_kib_rejected() -> None:
    (err,) = errors_of(valid(description="x" * 10 * 1024))
    assert err.pointer == "/description"
    assert "5000" in err.message


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "ftp://example.org/f", "example.org", "https://", "http://a b", "/relative", 5],
)
def test_url_rejected(url: object) -> None:
    assert pointers(valid(url=url)) == ["/url"]


def test_url_length() -> None:
    base = "https://example.org/"
    parse_event(valid(url=base + "a" * (2000 - len(base))))
    assert pointers(valid(url=base + "a" * (2001 - len(base)))) == ["/url"]


def test_tags() -> None:
    assert pointers(valid(tags=["t"] * 21)) == ["/tags"]
    assert pointers(valid(tags=["ok", ""])) == ["/tags/1"]
    assert pointers(valid(tags=["x" * 51])) == ["/tags/0"]


def test_optional_text_bounds() -> None:
    assert pointers(valid(city="c" * 101)) == ["/city"]
    assert pointers(valid(organizer="o" * 201)) == ["/organizer"]


def test_dates() -> None:
    assert pointers(valid(ends_on="2025-04-30")) == ["/ends_on"]
    assert parse_event(valid(ends_on="2025-05-01")).ends_on == date(2025, 5, 1)
    (err,) = errors_of(valid(starts_on="01/05/2025"))
    assert err.message == "starts_on: expected a date YYYY-MM-DD"
    assert pointers(valid(starts_on="2025-02-30")) == ["/starts_on"]
    assert pointers(valid(starts_on=20250501)) == ["/starts_on"]
    assert pointers(valid(starts_on="2025-05-01T00:00:00")) == ["/starts_on"]
    assert pointers(valid(ends_on="nope")) == ["/ends_on"]


def test_missing_fields() -> None:
    errs = errors_of({})
    assert {e.pointer for e in errs} == {
        "/event_id",
        "/kind",
        "/title",
        "/host_country",
        "/delegations",
        "/starts_on",
    }
    assert all(e.code == "missing" for e in errs)


@pytest.mark.parametrize("data", [[], "x", 1, None, [valid()]])
def test_not_an_object(data: object) -> None:
    (err,) = errors_of(data)
    assert err.pointer == ""
    assert "object" in err.message


def test_accepted_event_server_fields() -> None:
    e = AcceptedEvent.model_validate(
        {**valid(), "partner_id": "city-of-lyon", "received_at": "2025-01-01T01:00:00+01:00"}
    )
    assert e.received_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert e.received_at.utcoffset() is not None and e.received_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    for bad in ("Lyon", "-x", "a" * 64, "a_b"):
        with pytest.raises(Exception):  # noqa: B017
            AcceptedEvent.model_validate(
                {**valid(), "partner_id": bad, "received_at": "2025-01-01T00:00:00Z"}
            )
    with pytest.raises(Exception):  # noqa: B017 - naive datetimes are refused
        AcceptedEvent.model_validate({**valid(), "partner_id": "p", "received_at": "2025-01-01T00:00:00"})


def test_content_hash() -> None:
    a = parse_event(valid(delegations=[{"country": "DE"}, {"country": "US", "participants": 3}]))
    b = parse_event(
        valid(
            host_country="fra",
            delegations=[{"country": "usa", "participants": 3}, {"country": "deu"}],
            ends_on="2025-05-01",
            title="  Choir exchange ",
        )
    )
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 64
    assert content_hash(a) != content_hash(parse_event(valid(title="Other")))
    accepted = AcceptedEvent.model_validate(
        {**a.model_dump(mode="json"), "partner_id": "p", "received_at": "2025-01-01T00:00:00Z"}
    )
    assert content_hash(accepted) == content_hash(a)


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.integers(), st.text(max_size=5))))
def test_parse_event_only_raises_event_validation_error(data: dict[str, object]) -> None:
    try:
        parse_event(data)
    except EventValidationError as exc:
        assert all(isinstance(e, FieldError) for e in exc.errors)


def test_revision_is_bounded_so_every_record_encodes() -> None:
    """Found by the long fuzz run: an unbounded revision (2**70) was accepted, then could not be
    encoded (orjson: integer exceeds 64 bits). Revisions stay exact JSON numbers everywhere."""
    from schemas.events import MAX_REVISION, EventValidationError, parse_event

    base = {
        "event_id": "big",
        "kind": "civic",
        "title": "t",
        "host_country": "FR",
        "delegations": [{"country": "DE"}],
        "starts_on": "2026-01-01",
    }
    assert parse_event({**base, "revision": MAX_REVISION}).revision == MAX_REVISION
    for too_big in (MAX_REVISION + 1, 2**64, 2**70):
        try:
            parse_event({**base, "revision": too_big})
        except EventValidationError as exc:
            assert [e.pointer for e in exc.errors] == ["/revision"]
        else:
            raise AssertionError(f"revision {too_big} was accepted")


def _refused_by_python() -> set[int]:
    rule = re.compile(URL_PATTERN)
    return {
        c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF and not rule.fullmatch(f"http://a/{chr(c)}")
    }


def test_the_url_pattern_is_the_rule_ingest_enforces() -> None:
    """The JSON Schema pattern refuses exactly what the validator refuses: controls, DEL, spaces."""
    refused = _refused_by_python()
    assert refused == {c for c in range(0x10000) if c < 32 or c == 0x7F or chr(c).isspace()}
    for c in (0x00, 0x20, 0x85, 0x3000):
        assert pointers(valid(url=f"http://a/{chr(c)}")) == ["/url"]
    for c in (ord("é"), 0xFEFF, ord("~")):
        parse_event(valid(url=f"http://a/{chr(c)}"))
    schema = ExchangeEvent.model_json_schema()["properties"]["url"]["anyOf"][0]
    assert schema["pattern"] == URL_PATTERN and schema["maxLength"] == 2000


def test_the_url_pattern_means_the_same_in_ecma_262() -> None:
    """Clients validate with JavaScript's regular expressions: the same characters are refused."""
    node = shutil.which("node")
    assert node, "Node.js is needed (`make setup` installs it)"
    script = (
        "const r = new RegExp(process.argv[1]); const out = [];"
        "for (let c = 0; c < 0x10000; c++) { if (c >= 0xd800 && c <= 0xdfff) continue;"
        " if (!r.test('http://a/' + String.fromCharCode(c))) out.push(c); }"
        "console.log(JSON.stringify(out));"
    )
    result = subprocess.run([node, "-e", script, URL_PATTERN], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == _refused_by_python()
