"""OWASP API8/API10: schemathesis against the real apps on the real broker, plus contract fuzzing.

- ingest (real Kafka publisher, partner registry and events view on this test's topics; the
  ASGI app in-process, its lifespan started by schemathesis) and api (its view filled from
  snapshots produced to the real pair-stats topic): **stateful** runs
  (``schema.as_state_machine()``) following the links schemathesis infers plus explicit ones
  added here (push -> cancel, list pairs -> pair detail -> country), and a per-operation run
  so every operation gets its quota of examples. Checks: no 5xx, responses conform to the
  documented schema and content type.
- hypothesis on the contract, completing ``tests/unit/test_schemas_*`` (which fuzz flat
  dictionaries and arbitrary record bytes): ``parse_event`` on arbitrary *nested* JSON values
  and on valid events with one field replaced by anything; ``decode_event`` on a valid value
  with arbitrary keys and headers (it may only succeed when the key is the event's own).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis.python import asgi

import tests.ndjson  # noqa: F401  (registers the NDJSON serializer)
from handshake.settings import KafkaSettings
from schemas.events import AcceptedEvent, EventValidationError, FieldError, parse_event
from schemas.records import RecordError, decode_event, encode_event, encode_pair_stats
from services.api.main import build
from services.api.settings import ApiSettings
from services.api.testing import make_stats
from services.ingest.app import create_app as create_ingest
from services.ingest.partners import create_partner
from services.ingest.testing import ingest_settings
from tests.security.conftest import EVENT
from tests.security.report import record, scale

EXAMPLES = scale(25, 200)
STEPS = scale(4, 10)
V1_INGEST = ("POST /v1/events", "POST /v1/events/batch", "DELETE /v1/events/{event_id}")
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
]


def _settings(examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _link(raw: dict[str, Any], path: str, method: str, status: str, name: str, link: dict[str, Any]) -> None:
    responses = raw["paths"][path][method]["responses"]
    responses[status].setdefault("links", {})[name] = link


def _schema(app: Any, links: Callable[[dict[str, Any]], None]) -> Any:
    raw = copy.deepcopy(app.openapi())
    links(raw)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    return schema


def _wait(
    app: Any,
    path: str,
    ok: Callable[[Any], bool],
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    deadline = time.monotonic() + timeout
    with asgi.get_client(app) as client:
        while True:
            resp = client.get(f"http://{asgi.HOST}{path}", headers=headers)
            if ok(resp):
                return
            assert time.monotonic() < deadline, f"{path}: {resp.status_code} {resp.text[:300]}"
            time.sleep(0.05)


@pytest.fixture
def lifespans() -> Iterator[None]:
    """Stop the apps whose lifespan schemathesis started (closes their Kafka clients)."""
    yield
    asgi.shutdown_lifespans()


def _run(
    schema: Any,
    headers: dict[str, str],
    label: str,
    scenario_headers: Callable[[], dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Stateful run, then every operation with EXAMPLES generated cases; calls per operation.

    ``scenario_headers``, when given, is called at the start of every stateful scenario for its
    own headers: hypothesis replays choice prefixes across scenarios and fails with
    FlakyStrategyDefinition when the same calls get other answers (events an earlier scenario
    pushed turn a 202 into a 409, and the 202 bundle stays empty).
    """
    stateful: Counter[str] = Counter()
    statuses: Counter[str] = Counter()

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.headers = scenario_headers() if scenario_headers is not None else headers

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": self.headers}

        def after_call(self, response: Any, case: Any) -> None:
            stateful[case.operation.label] += 1
            statuses[str(response.status_code)] += 1

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    started = time.monotonic()
    Workflow.run(settings=_settings(EXAMPLES))
    stateful_s = time.monotonic() - started

    single: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @_settings(EXAMPLES)
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            single[case.operation.label] += 1
            statuses[str(response.status_code)] += 1
            case.validate_response(response, checks=CHECKS)

        check()
    figures = {
        "examples_per_operation": EXAMPLES,
        "stateful_calls": dict(stateful),
        "stateful_s": round(stateful_s, 2),
        "single_calls": dict(single),
        "statuses": dict(statuses),
    }
    record(f"fuzz.{label}", figures)
    return figures


@pytest.mark.integration
def test_ingest_stateful_fuzz_on_the_real_broker(kafka_settings: KafkaSettings, lifespans: None) -> None:
    settings = ingest_settings(kafka_settings)
    _, key = create_partner(settings, "Fuzzer", rate=1_000_000)
    app = create_ingest(settings)

    def links(raw: dict[str, Any]) -> None:
        cancel = {"operationId": None, "operationRef": "#/paths/~1v1~1events~1{event_id}/delete"}
        cancel.pop("operationId")
        _link(
            raw,
            "/v1/events",
            "post",
            "202",
            "CancelPushed",
            {**cancel, "parameters": {"event_id": "$request.body#/event_id"}},
        )
        _link(
            raw,
            "/v1/events/batch",
            "post",
            "200",
            "CancelFirst",
            {**cancel, "parameters": {"event_id": "$request.body#/0/event_id"}},
        )

    def own_partner() -> dict[str, str]:
        """A new partner per stateful scenario, so no scenario sees another's events."""
        _, scenario_key = create_partner(settings, f"Fuzzer {uuid.uuid4().hex[:8]}", rate=1_000_000)
        partners = app.state.ingest.partners
        deadline = time.monotonic() + 30
        while partners.authenticate(scenario_key) is None:
            assert time.monotonic() < deadline, "ingest never learned the scenario's partner"
            time.sleep(0.01)
        return {"Authorization": f"Bearer {scenario_key}"}

    schema = _schema(app, links)
    _wait(app, "/readyz", lambda r: r.status_code == 200)
    figures = _run(schema, {"Authorization": f"Bearer {key}"}, "ingest", own_partner)
    assert figures["stateful_calls"], "the state machine made no calls"
    # operations without inputs have a single possible example; hypothesis stops there
    assert all(figures["single_calls"][op] >= min(EXAMPLES, 10) for op in V1_INGEST), figures["single_calls"]
    assert set(figures["single_calls"]) >= {
        "POST /v1/events",
        "POST /v1/events/batch",
        "DELETE /v1/events/{event_id}",
    }
    assert any(s.startswith("2") for s in figures["statuses"]), "nothing was ever accepted"


@pytest.mark.integration
def test_api_stateful_fuzz_on_the_real_broker(
    kafka_settings: KafkaSettings, producer_factory: Any, lifespans: None
) -> None:
    producer = producer_factory()
    pairs = [("CN", "US", 5), ("DE", "FR", 2), ("FR", "US", 3), ("DDDE", "SUHH", 1), ("BR", "JP", 4)]
    for a, b, n in pairs:
        k, v = encode_pair_stats(make_stats(a, b, events=n, by_kind={"athletic": n}, by_month={"2025-02": n}))
        producer.send(kafka_settings.pair_stats_topic, key=k, value=v)
    producer.send(kafka_settings.pair_stats_topic, key=b"XX-YY", value=b"garbage")
    producer.flush(timeout=10)
    token = "fuzz-token"
    app = build(ApiSettings(**kafka_settings.model_dump(), api_tokens=token))

    def links(raw: dict[str, Any]) -> None:
        detail = {"operationRef": "#/paths/~1v1~1pairs~1{a}~1{b}/get"}
        country = {"operationRef": "#/paths/~1v1~1countries~1{code}/get"}
        _link(
            raw,
            "/v1/pairs",
            "get",
            "200",
            "FirstPair",
            {
                **detail,
                "parameters": {
                    "a": "$response.body#/items/0/countries/0/code",
                    "b": "$response.body#/items/0/countries/1/code",
                },
            },
        )
        _link(
            raw,
            "/v1/pairs",
            "get",
            "200",
            "FirstCountry",
            {**country, "parameters": {"code": "$response.body#/items/0/countries/0/code"}},
        )
        _link(
            raw,
            "/v1/pairs/{a}/{b}",
            "get",
            "200",
            "OtherCountry",
            {**country, "parameters": {"code": "$response.body#/countries/1"}},
        )

    schema = _schema(app, links).exclude(path="/v1/stream")  # never ends by design; see test_api_sse
    auth = {"Authorization": f"Bearer {token}"}
    _wait(app, "/v1/summary", lambda r: r.status_code == 200 and r.json()["pairs"] == len(pairs), auth)
    figures = _run(schema, auth, "api")
    assert figures["stateful_calls"], "the state machine made no calls"
    assert (
        "GET /v1/pairs/{a}/{b}" in figures["stateful_calls"]
        or "GET /v1/countries/{code}" in figures["stateful_calls"]
    )
    assert all(n >= min(EXAMPLES, 10) for op, n in figures["single_calls"].items() if "/v1/" in op), figures


# --- the contract -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=6),
    max_leaves=30,
)
FIELDS = [
    *EVENT,
    "revision",
    "status",
    "format",
    "ends_on",
    "city",
    "organizer",
    "url",
    "description",
    "tags",
]


@given(json_values)
@hypothesis.settings(max_examples=scale(150, 3000), deadline=None)
def test_parse_event_raises_only_event_validation_error_on_any_json(data: object) -> None:
    try:
        parse_event(data)
    except EventValidationError as exc:
        assert exc.errors and all(isinstance(e, FieldError) for e in exc.errors)
        assert all(e.pointer == "" or e.pointer.startswith("/") for e in exc.errors)


@given(st.sampled_from(FIELDS), json_values, st.sampled_from(["replace", "delete", "in_delegation"]))
@hypothesis.settings(max_examples=scale(150, 3000), deadline=None)
def test_parse_event_on_near_valid_events(field: str, value: object, how: str) -> None:
    data: dict[str, Any] = copy.deepcopy(EVENT)
    if how == "replace":
        data[field] = value
    elif how == "delete":
        data.pop(field, None)
    else:
        data["delegations"] = [{"country": "DE", "participants": value}]
    try:
        event = parse_event(data)
    except EventValidationError as exc:
        assert exc.errors and all(isinstance(e, FieldError) for e in exc.errors)
        return
    # whatever was accepted round-trips through the record encoding
    accepted = AcceptedEvent.model_validate(
        {**event.model_dump(mode="json"), "partner_id": "p-1", "received_at": "2025-01-01T00:00:00Z"}
    )
    k, v, h = encode_event(accepted)
    assert decode_event(k, v, h) == accepted


def _valid_record() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    event = parse_event(EVENT)
    accepted = AcceptedEvent.model_validate(
        {**event.model_dump(mode="json"), "partner_id": "p-1", "received_at": "2025-01-01T00:00:00Z"}
    )
    return encode_event(accepted)


header_names = st.sampled_from(
    ["ce_specversion", "ce_type", "ce_id", "ce_source", "ce_time", "content-type"]
) | st.text(max_size=12)


@given(
    st.one_of(
        st.none(), st.binary(max_size=40), st.just(b"p-1/e-1"), st.just(b"p-2/e-1"), st.just(b"p-1/e-1\x00")
    ),
    st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=8),
    st.booleans(),
)
@hypothesis.settings(max_examples=scale(150, 3000), deadline=None)
def test_decode_event_with_valid_value_and_arbitrary_key_and_headers(
    key: bytes | None, headers: list[tuple[str, bytes]], prepend_valid: bool
) -> None:
    good_key, value, good_headers = _valid_record()
    all_headers = [*good_headers, *headers] if prepend_valid else [*headers, *good_headers]
    try:
        event = decode_event(key, value, all_headers)
    except RecordError:
        return
    # success only for the event's own key: a record cannot claim someone else's identity
    assert key == good_key
    assert (event.partner_id, event.event_id) == ("p-1", "e-1")
