"""The ingest app with in-memory adapters (no Kafka): auth, media types, limits, rules, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import PartnerRecord, decode_event
from services.ingest.app import KeyLocks, create_app
from services.ingest.domain import generate_key, hash_key
from services.ingest.partners import InMemoryPartners
from services.ingest.producer import MemoryPublisher
from services.ingest.settings import IngestSettings
from services.ingest.view import InMemoryView
from tests.samples import EVENT


def partner(pid: str, rate: float = 1000.0, revoked: bool = False) -> tuple[PartnerRecord, str]:
    key = generate_key(pid)
    record = PartnerRecord(
        partner_id=pid,
        name=pid.title(),
        key_hash=hash_key(key),
        created_at=datetime.now(UTC),
        revoked_at=datetime.now(UTC) if revoked else None,
        rate_per_second=rate,
    )
    return record, key


class Env:
    def __init__(self, **settings_overrides: Any) -> None:
        self.settings = IngestSettings(
            create_topics=False, ack_timeout_s=0.2, max_body_bytes=64 * 1024, **settings_overrides
        )
        self.publisher = MemoryPublisher()
        a, self.key_a = partner("alpha")
        b, self.key_b = partner("beta")
        slow, self.key_slow = partner("slow", rate=1)
        gone, self.key_revoked = partner("gone", revoked=True)
        self.partners = InMemoryPartners([a, b, slow, gone])
        self.view = InMemoryView()
        self.app = create_app(self.settings, publisher=self.publisher, partners=self.partners, view=self.view)

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://ingest", headers=headers
        )


@pytest.fixture
def env() -> Env:
    return Env()


@pytest.fixture
async def client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    async with env.client(env.key_a) as c:
        yield c


def is_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert "Traceback" not in resp.text
    return body


# --- happy path ---------------------------------------------------------------------------


async def test_push_is_accepted_and_produced_with_server_fields(env: Env, client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/events", json=EVENT)
    assert resp.status_code == 202
    assert resp.json() == {"status": "accepted", "key": "alpha/e-1", "revision": 1}
    assert len(env.publisher.records) == 1
    key, value, headers = env.publisher.records[0]
    stored = decode_event(key, value, headers)
    assert stored.partner_id == "alpha"
    assert stored.received_at.tzinfo is not None
    assert dict(headers)["ce_source"] == b"/partners/alpha"
    assert env.view.get("alpha/e-1") is not None


async def test_resend_is_duplicate_and_not_produced(env: Env, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/events", json=EVENT)).status_code == 202
    resp = await client.post(
        "/v1/events", json={**EVENT, "delegations": [{"participants": 4, "country": "DEU"}]}
    )
    assert resp.status_code == 202
    assert resp.json()["status"] == "duplicate"
    assert len(env.publisher.records) == 1


async def test_revision_conflicts(env: Env, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/events", json={**EVENT, "revision": 2})).status_code == 202
    same_rev = await client.post("/v1/events", json={**EVENT, "revision": 2, "title": "Other"})
    body = is_problem(same_rev, 409)
    assert body["stored_revision"] == 2
    assert body["key"] == "alpha/e-1"
    older = is_problem(await client.post("/v1/events", json={**EVENT, "revision": 1}), 409)
    assert "older" in older["detail"]
    newer = await client.post("/v1/events", json={**EVENT, "revision": 3, "title": "Other"})
    assert newer.json() == {"status": "accepted", "key": "alpha/e-1", "revision": 3}
    assert len(env.publisher.records) == 2


async def test_racing_resends_produce_once(env: Env, client: httpx.AsyncClient) -> None:
    env.publisher.delay = 0.02
    responses = await asyncio.gather(*(client.post("/v1/events", json=EVENT) for _ in range(10)))
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 9
    assert len(env.publisher.records) == 1


# --- authentication -----------------------------------------------------------------------


async def test_missing_malformed_unknown_and_revoked_keys_get_identical_401(env: Env) -> None:
    bodies = []
    for key in (None, "garbage", "hsk_nobody_" + "x" * 43, env.key_a + "x", env.key_revoked):
        async with env.client(key) as c:
            resp = await c.post("/v1/events", json=EVENT)
        is_problem(resp, 401)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        bodies.append(resp.content)
    async with env.client() as c:
        basic = await c.post("/v1/events", json=EVENT, headers={"Authorization": "Basic YTpi"})
    bodies.append(basic.content)
    assert len(set(bodies)) == 1
    assert env.publisher.records == []


async def test_revocation_applies_at_once(env: Env, client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/events", json=EVENT)).status_code == 202
    record = env.partners.get("alpha")
    assert record is not None
    env.partners.apply(record.model_copy(update={"revoked_at": datetime.now(UTC)}))
    is_problem(await client.post("/v1/events", json={**EVENT, "event_id": "e-2"}), 401)


# --- media types, sizes, malformed input --------------------------------------------------


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-ndjson", "application/xml", "application/json; charset=latin-1"]
)
async def test_single_push_refuses_other_media_types(client: httpx.AsyncClient, ctype: str) -> None:
    resp = await client.post("/v1/events", content=orjson.dumps(EVENT), headers={"Content-Type": ctype})
    is_problem(resp, 415)


async def test_missing_content_type_is_415(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/events", content=orjson.dumps(EVENT), headers={"Content-Type": ""})
    is_problem(resp, 415)


async def test_batch_refuses_other_media_types(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/events/batch", content=b"a,b\n", headers={"Content-Type": "text/csv"})
    is_problem(resp, 415)


async def test_too_large_by_content_length(env: Env, client: httpx.AsyncClient) -> None:
    big = b"[" + b" " * (env.settings.max_body_bytes + 10) + b"]"
    resp = await client.post("/v1/events/batch", content=big, headers={"Content-Type": "application/json"})
    is_problem(resp, 413)
    resp = await client.post("/v1/events", content=big, headers={"Content-Type": "application/json"})
    is_problem(resp, 413)


async def test_too_large_when_content_length_lies(env: Env, client: httpx.AsyncClient) -> None:
    chunks_sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(1000):
            chunks_sent += 1
            yield b" " * 4096

    resp = await client.post(
        "/v1/events",
        content=body(),
        headers={"Content-Type": "application/json", "Content-Length": "10"},
    )
    is_problem(resp, 413)


async def test_streamed_body_without_length_is_limited(env: Env, client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    resp = await client.post(
        "/v1/events/batch", content=body(), headers={"Content-Type": "application/x-ndjson"}
    )
    is_problem(resp, 413)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"title": "\xc3\x28"}', "invalid_utf8"),
        (b"[" * 100 + b"]" * 100, "json_too_deep"),
        (b"[" * 3000 + b"]" * 3000, "json_too_deep"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "json_too_deep"),
    ],
)
async def test_malformed_json_is_400_problem(client: httpx.AsyncClient, body: bytes, code: str) -> None:
    resp = await client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    problem = is_problem(resp, 400)
    assert problem["errors"][0]["code"] == code


async def test_invalid_event_lists_every_field_error(client: httpx.AsyncClient) -> None:
    bad = {
        **EVENT,
        "kind": "party",
        "host_country": "ZZ",
        "delegations": [{"country": "FR"}, {"country": "DE"}, {"country": "DE"}],
        "ends_on": "2025-01-01",
        "partner_id": "someone-else",
        "received_at": "2025-01-01T00:00:00Z",
    }
    body = is_problem(await client.post("/v1/events", json=bad), 422)
    pointers = {e["pointer"] for e in body["errors"]}
    assert {"/kind", "/host_country", "/partner_id", "/received_at"} <= pointers
    assert all(e["message"] for e in body["errors"])
    assert "server-owned" in next(e["message"] for e in body["errors"] if e["pointer"] == "/partner_id")


@pytest.mark.parametrize("payload", [[], [EVENT], "text", 3, None, {"event_id": []}])
async def test_non_object_payloads_are_422(client: httpx.AsyncClient, payload: object) -> None:
    resp = await client.post(
        "/v1/events", content=orjson.dumps(payload), headers={"Content-Type": "application/json"}
    )
    is_problem(resp, 422)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
BODIES = (
    st.binary(max_size=300)
    | JSON_VALUES.map(orjson.dumps)
    | st.fixed_dictionaries({k: JSON_VALUES | st.just(v) for k, v in EVENT.items()}).map(orjson.dumps)
)
ROUTES = (
    ("/v1/events", "application/json"),
    ("/v1/events/batch", "application/x-ndjson"),
    ("/v1/events/batch", "application/json"),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
async def test_arbitrary_bodies_never_500(body: bytes) -> None:
    env = Env()
    async with env.client(env.key_a) as c:
        for path, ctype in ROUTES:
            resp = await c.post(path, content=body, headers={"Content-Type": ctype})
            assert resp.status_code < 500, resp.text
            assert (
                resp.status_code in (200, 202) or resp.headers["content-type"] == "application/problem+json"
            )


# --- batches ------------------------------------------------------------------------------


async def test_batch_mixed_results(env: Env, client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json={**EVENT, "event_id": "stored", "revision": 2})
    records = [
        {**EVENT, "event_id": "b-1"},
        {**EVENT, "event_id": "b-2", "kind": "nope"},
        {**EVENT, "event_id": "stored", "revision": 2},  # duplicate of the stored one
        {**EVENT, "event_id": "stored", "revision": 1},  # stale
        {**EVENT, "event_id": "b-1"},  # duplicate of record 0 in the same batch
        {**EVENT, "event_id": "b-1", "title": "changed"},  # same revision, other content than record 0
        {**EVENT, "event_id": "b-1", "revision": 2},  # correction of record 0
    ]
    resp = await client.post("/v1/events/batch", json=records)
    assert resp.status_code == 200
    body = resp.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "duplicate",
        "conflict",
        "duplicate",
        "conflict",
        "accepted",
    ]
    assert (body["accepted"], body["duplicate"], body["rejected"], body["conflict"]) == (2, 2, 1, 2)
    assert body["results"][1]["errors"][0]["pointer"] == "/kind"
    assert body["results"][0]["key"] == "alpha/b-1"
    assert len(env.publisher.records) == 1 + 2
    assert env.view.get("alpha/b-1").revision == 2  # type: ignore[union-attr]


async def test_ndjson_batch_reports_broken_lines(env: Env, client: httpx.AsyncClient) -> None:
    lines = [orjson.dumps({**EVENT, "event_id": f"n-{i}"}) for i in range(3)]
    body = lines[0] + b"\n{broken\n\n" + lines[1] + b"\n" + lines[2] + b"\n"
    resp = await client.post(
        "/v1/events/batch", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    data = resp.json()
    assert data["accepted"] == 3
    assert data["rejected"] == 1
    broken = data["results"][1]
    assert broken == {"index": 1, "line": 2, "status": "rejected", "errors": broken["errors"]}
    assert broken["errors"][0]["code"] == "invalid_json"


async def test_batch_limits(env: Env, client: httpx.AsyncClient) -> None:
    small = Env(max_batch_records=3)
    async with small.client(small.key_a) as c:
        resp = await c.post("/v1/events/batch", json=[EVENT] * 4)
        is_problem(resp, 413)
    is_problem(await client.post("/v1/events/batch", json={"not": "array"}), 422)
    is_problem(
        await client.post("/v1/events/batch", content=b"[1,", headers={"Content-Type": "application/json"}),
        400,
    )


# --- rate limit, unavailability -----------------------------------------------------------


async def test_rate_limit_429_with_retry_after() -> None:
    env = Env(burst_seconds=1)
    async with env.client(env.key_slow) as c:
        assert (await c.post("/v1/events", json=EVENT)).status_code == 202
        resp = await c.post("/v1/events", json={**EVENT, "event_id": "e-2"})
        is_problem(resp, 429)
        assert int(resp.headers["retry-after"]) >= 1
        batch = await c.post("/v1/events/batch", json=[EVENT, EVENT])
        is_problem(batch, 429)
        # refused before the body is read: a broken body is not even looked at
        broken = await c.post(
            "/v1/events/batch", content=b"[1,", headers={"Content-Type": "application/json"}
        )
        is_problem(broken, 429)
    async with env.client(env.key_b) as other:  # other partners are not affected
        assert (await other.post("/v1/events", json=EVENT)).status_code == 202


async def test_unacknowledged_push_is_503_never_2xx(env: Env, client: httpx.AsyncClient) -> None:
    env.publisher.fail = True
    resp = await client.post("/v1/events", json=EVENT)
    is_problem(resp, 503)
    assert resp.headers["retry-after"] == str(env.settings.retry_after_s)
    assert env.view.get("alpha/e-1") is None  # not remembered: the resend will be produced
    batch = await client.post("/v1/events/batch", json=[EVENT, {**EVENT, "kind": "x"}])
    is_problem(batch, 503)
    delete = await client.delete("/v1/events/e-1")
    is_problem(delete, 404)
    env.publisher.fail = False
    assert (await client.post("/v1/events", json=EVENT)).json()["status"] == "accepted"


async def test_not_ready_view_is_503(env: Env, client: httpx.AsyncClient) -> None:
    env.view._ready = False
    is_problem(await client.post("/v1/events", json=EVENT), 503)
    is_problem(await client.get("/readyz"), 503)
    env.view._ready = True
    assert (await client.get("/readyz")).status_code == 200


# --- cancellation -------------------------------------------------------------------------


async def test_cancel_writes_cancelled_copy_with_next_revision(env: Env, client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json={**EVENT, "revision": 4})
    resp = await client.delete("/v1/events/e-1")
    assert resp.status_code == 202
    assert resp.json() == {"status": "accepted", "key": "alpha/e-1", "revision": 5}
    cancelled = decode_event(*env.publisher.records[-1])
    assert cancelled.status.value == "cancelled"
    assert cancelled.revision == 5
    assert cancelled.title == EVENT["title"]
    again = await client.delete("/v1/events/e-1")
    assert again.json() == {"status": "duplicate", "key": "alpha/e-1", "revision": 5}
    assert len(env.publisher.records) == 2


async def test_cannot_cancel_another_partners_event(env: Env, client: httpx.AsyncClient) -> None:
    async with env.client(env.key_b) as b:
        assert (await b.post("/v1/events", json=EVENT)).status_code == 202
    is_problem(await client.delete("/v1/events/e-1"), 404)
    assert env.view.get("beta/e-1").status == "announced"  # type: ignore[union-attr]
    assert len(env.publisher.records) == 1


# --- operations ---------------------------------------------------------------------------


async def test_health_ready_metrics(env: Env, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.json()["checks"] == {"partners": True, "events_view": True, "kafka": True}
    await client.post("/v1/events", json=EVENT)
    await client.post("/v1/events", json={**EVENT, "kind": "bad"})
    text = (await client.get("/metrics")).text
    assert 'ingest_records_total{outcome="accepted",partner="alpha",reason=""} 1.0' in text
    assert 'ingest_records_total{outcome="rejected",partner="alpha",reason="invalid"} 1.0' in text
    assert "ingest_produce_seconds_bucket" in text
    assert "ingest_in_flight_records 0.0" in text
    assert 'ingest_http_requests_total{method="POST",route="/v1/events",status="202"} 1.0' in text
    env.publisher.is_connected = False
    body = is_problem(await client.get("/readyz"), 503)
    assert body["checks"]["kafka"] is False


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    is_problem(await client.get("/v1/nothing"), 404)
    is_problem(await client.put("/v1/events", json=EVENT), 405)


async def test_openapi_documents_bodies_rules_and_problems(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/events"]["post"]
    assert (
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/ExchangeEvent"
    )
    assert spec["components"]["schemas"]["ExchangeEvent"]["examples"]
    assert {"401", "409", "413", "415", "422", "429", "503"} <= set(post["responses"])
    batch = spec["paths"]["/v1/events/batch"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "application/x-ndjson"}
    assert "Revision rules" in spec["info"]["description"]


async def test_key_locks_are_released_and_cleaned() -> None:
    locks = KeyLocks()
    async with locks.hold(["b", "a", "a"]):
        assert len(locks) == 2
    assert len(locks) == 0
    order: list[str] = []

    async def worker(name: str) -> None:
        async with locks.hold(["k"]):
            order.append(name + "-in")
            await asyncio.sleep(0.01)
            order.append(name + "-out")

    await asyncio.gather(worker("1"), worker("2"))
    assert order == ["1-in", "1-out", "2-in", "2-out"]
    assert len(locks) == 0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer k1",
        "bearer k2",
        "BEARER  k3",
        "Basic k4",
        "Bearerk5",
        "Bearer a b",
    ],
)
async def test_single_route_reads_the_key_as_the_bearer_dependency_does(header: str | None) -> None:
    from starlette.requests import Request as StarletteRequest

    from services.ingest.app import bearer, bearer_key

    headers = [(b"authorization", header.encode())] if header is not None else []
    credentials = await bearer(StarletteRequest({"type": "http", "headers": headers}))
    expected = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    assert bearer_key(header) == expected


async def test_an_unexpected_failure_of_the_single_route_is_a_counted_500_problem(
    env: Env, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # POST /v1/events is served ahead of the middleware stack: it must still answer as the stack would
    async def broken(records: Any, ack_timeout: float) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(env.publisher, "publish", broken)
    body = is_problem(await client.post("/v1/events", json=EVENT), 500)
    assert "secret internals" not in str(body)
    assert body["instance"] == "/v1/events"
    assert "unhandled error" in caplog.text
    text = (await client.get("/metrics")).text
    assert 'ingest_http_requests_total{method="POST",route="/v1/events",status="500"} 1.0' in text
    assert 'ingest_http_request_seconds_count{method="POST",route="/v1/events"} 1.0' in text
    # the route did not break: the next push is served
    monkeypatch.undo()
    assert (await client.post("/v1/events", json={**EVENT, "event_id": "e-2"})).status_code == 202


async def test_other_methods_and_paths_near_the_single_route_go_down_the_stack(
    client: httpx.AsyncClient,
) -> None:
    is_problem(await client.get("/v1/events"), 405)
    assert (await client.post("/v1/events/", json=EVENT)).status_code in (307, 404)
    text = (await client.get("/metrics")).text
    assert 'ingest_http_requests_total{method="GET",route="/v1/events",status="405"} 1.0' in text


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_a_client_gone_before_its_body_ended_is_not_a_server_error(
    env: Env, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        {"type": "http.request", "body": b'{"event_id": "e-1", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"ingest"),
            (b"authorization", f"Bearer {env.key_a}".encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8001),
    }
    async with env.app.router.lifespan_context(env.app):
        await env.app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert b"disconnected" in sent[1]["body"]
    assert "unhandled error" not in caplog.text
    assert env.publisher.records == []
