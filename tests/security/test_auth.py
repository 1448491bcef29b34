"""OWASP API2 (broken authentication).

ingest: revoked, invalid (well-formed, wrong secret), malformed and missing keys get the same
401, byte for byte, on every ``/v1`` route; a revocation takes effect within a second.
api: with ``HANDSHAKE_API_TOKENS`` set, every route except the public set declared in
``services/api/middleware.py`` (``/healthz``, the dashboard shell ``/`` and ``/static/*``)
answers 401 problem+json without a token or with a wrong one, and works with a right one;
``?access_token=`` is honoured on ``/v1/stream`` only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from handshake.settings import KafkaSettings
from services.api.app import create_app as create_api
from services.api.middleware import PUBLIC_PATHS, PUBLIC_PREFIXES, QUERY_TOKEN_PATHS
from services.api.settings import ApiSettings
from services.api.testing import RecordMaker, ServerThread, make_stats
from services.ingest.app import create_app as create_ingest
from services.ingest.domain import generate_key
from services.ingest.partners import revoke_partner
from services.ingest.settings import IngestSettings
from services.ingest.testing import ingest_settings, running_ingest
from tests.samples import EVENT
from tests.security.conftest import bearer, event
from tests.security.report import record

pytestmark = pytest.mark.integration


def ingest_v1_routes() -> list[tuple[str, str]]:
    """(method, path) of every /v1 route of the ingest app, path parameters filled in."""
    app = create_ingest(IngestSettings(create_topics=False))
    out = []
    for template, route in flat_routes(app.routes):
        if template.startswith("/v1"):
            for method in sorted(route.methods):
                out.append((method, template.replace("{event_id}", "e-1")))
    return out


async def test_every_bad_key_gets_the_same_401_and_revocation_is_fast(
    kafka_settings: KafkaSettings, partner: Any
) -> None:
    settings = ingest_settings(kafka_settings)
    pid, key = await partner("Honest")
    pid_r, key_r = await partner("To Revoke")
    secret = key.removeprefix(f"hsk_{pid}_")
    bad_keys: dict[str, dict[str, str]] = {
        "missing": {},
        "invalid secret": bearer(generate_key(pid)),
        "invalid, unknown partner": bearer(generate_key("nobody-here")),
        "truncated secret": bearer(key[:-1]),
        "secret of another partner": bearer(f"hsk_{pid_r}_{secret}"),
        "malformed": bearer("not-a-key"),
        "malformed prefix only": bearer("hsk_"),
        "malformed short secret": bearer(f"hsk_{pid}_short"),
        "malformed non-ascii": {"Authorization": "Bearer hsk_é_ü".encode()},  # type: ignore[dict-item]
        "empty bearer": {"Authorization": "Bearer "},
        "wrong scheme": {"Authorization": f"Basic {key}"},
        "key without scheme": {"Authorization": key},
        "in a query string": {},  # ?api_key= is not a credential
    }
    routes = ingest_v1_routes()
    assert {path for _, path in routes} == {"/v1/events", "/v1/events/batch", "/v1/events/e-1"}
    answers: dict[tuple[str, str], dict[str, tuple[int, bytes, str | None]]] = {}
    async with running_ingest(settings) as client:
        # the honest key works (and creates e-1 so DELETE has something a stranger might hit)
        assert (await client.post("/v1/events", json=event("e-1"), headers=bearer(key))).status_code == 202
        assert (await client.post("/v1/events", json=event("r-1"), headers=bearer(key_r))).status_code == 202

        revoked_at = time.monotonic()
        await asyncio.to_thread(revoke_partner, settings, pid_r)
        acked = time.monotonic()
        while (await client.post("/v1/events", json=event("r-2"), headers=bearer(key_r))).status_code != 401:
            assert time.monotonic() - acked < 1.0, "revocation not applied within 1 s"
            await asyncio.sleep(0.01)
        revocation_s = time.monotonic() - acked
        bad_keys["revoked"] = bearer(key_r)

        for method, path in routes:
            per_key: dict[str, tuple[int, bytes, str | None]] = {}
            for name, headers in bad_keys.items():
                url = path + ("?api_key=" + key if name == "in a query string" else "")
                kwargs: dict[str, Any] = {"headers": headers}
                if method == "POST":
                    # no/odd content types too: authentication comes before any body handling
                    kwargs["content"] = orjson.dumps(event("x") if path == "/v1/events" else [event("x")])
                    kwargs["headers"] = {**headers, "Content-Type": "application/json"}
                resp = await client.request(method, url, **kwargs)
                per_key[name] = (resp.status_code, resp.content, resp.headers.get("www-authenticate"))
                assert resp.status_code == 401, (method, path, name, resp.text)
                assert resp.headers["content-type"] == "application/problem+json"
                assert resp.json()["instance"] == path
            answers[(method, path)] = per_key
            distinct = {v for v in per_key.values()}
            assert len(distinct) == 1, (method, path, per_key)
            # nothing in the answer echoes the presented credential
            body = next(iter(distinct))[1]
            assert secret.encode() not in body and pid_r.encode() not in body
        # a body that is not even JSON, or a wrong content type: still the same 401
        for headers in ({"Content-Type": "text/plain"}, {}):
            resp = await client.post("/v1/events", content=b"\xff\xfe", headers=headers)
            assert (resp.status_code, resp.content) == (401, answers[("POST", "/v1/events")]["missing"][1])
        # the honest key still works after all this
        assert (await client.post("/v1/events", json=event("e-2"), headers=bearer(key))).status_code == 202
    record(
        "auth.ingest",
        {
            "routes": len(routes),
            "bad_key_kinds": len(bad_keys),
            "identical_401_bodies": all(len({*v.values()}) == 1 for v in answers.values()),
            "revocation_visible_s": round(revocation_s, 3),
            "revoke_call_s": round(acked - revoked_at, 3),
        },
    )


TOKENS = ("tok-right-1", "tok-right-2")


def flat_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(full path template, route) of every route, descending into included routers and mounts."""
    out: list[tuple[str, Any]] = []
    for route in routes:
        original = getattr(route, "original_router", None)  # FastAPI's included router
        if original is not None:
            out.extend(flat_routes(original.routes, prefix + route.include_context.prefix))
        elif isinstance(route, (APIRoute, Route, Mount)):
            out.append((prefix + route.path, route))
        else:
            raise AssertionError(f"unknown route type {type(route)}: extend the test")
    return out


def api_paths(app: Any) -> list[tuple[str, str]]:
    """(route template, concrete path) of every route of the api app."""
    fill = {"{a}": "CN", "{b}": "US", "{code}": "FR", "{partner_id}": "p1", "{event_id}": "e-1"}
    out = []
    for template, route in flat_routes(app.routes):
        if isinstance(route, Mount):
            out.append((template, template + "/js/main.js"))
            continue
        path = template
        for k, v in fill.items():
            path = path.replace(k, v)
        assert "{" not in path, f"unfilled path parameter in {template}: extend the test"
        out.append((template, path))
    return out


def _get(client: httpx.Client, path: str, **kwargs: Any) -> tuple[int, str, bytes]:
    """Status, content type and (for the never-ending stream, only the first bytes of) the body."""
    with client.stream("GET", path, **kwargs) as resp:
        first = b""
        for chunk in resp.iter_bytes():
            first += chunk
            if path.startswith("/v1/stream") or len(first) > 1 << 20:
                break
        return resp.status_code, resp.headers.get("content-type", ""), first


def test_api_routes_need_a_token_except_the_public_set() -> None:
    app = create_api(ApiSettings(api_tokens=",".join(TOKENS), sse_heartbeat_seconds=0.2))
    app.state.live.apply(make_stats("CN", "US", events=3))
    app.state.live.apply(make_stats("DE", "FR", events=2))
    app.state.index.apply([RecordMaker()(EVENT, "p1")])  # what /v1/events/p1/e-1 answers
    paths = api_paths(app)
    public_templates = {t for t, _ in paths if t in PUBLIC_PATHS or (t + "/").startswith(PUBLIC_PREFIXES)}
    # the public set is exactly what the middleware declares, and nothing else
    assert public_templates == {"/healthz", "/", "/static"}, public_templates
    assert {"/healthz", "/"} == set(PUBLIC_PATHS) and PUBLIC_PREFIXES == ("/static/",)
    assert {"/v1/stream", "/v1/stream/events"} == set(QUERY_TOKEN_PATHS)
    results: dict[str, dict[str, int]] = {}
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for template, path in paths:
            row: dict[str, int] = {}
            none = _get(client, path)
            wrong = _get(client, path, headers=bearer("tok-wrong"))
            right = _get(client, path, headers=bearer(TOKENS[1]))
            query = _get(client, path, params={"access_token": TOKENS[0]})
            wrong_query = _get(client, path, params={"access_token": "tok-wrong"})
            row.update(
                none=none[0], wrong=wrong[0], right=right[0], query=query[0], wrong_query=wrong_query[0]
            )
            results[template] = row
            assert 200 <= right[0] < 300, (template, right)
            if template in public_templates:
                assert none[0] == 200 and wrong[0] == 200, (template, row)
                continue
            for name, (status, ctype, body) in {
                "none": none,
                "wrong": wrong,
                "wrong_query": wrong_query,
            }.items():
                assert status == 401, (template, name, status)
                assert ctype == "application/problem+json", (template, name, ctype)
                problem = orjson.loads(body)
                assert problem["status"] == 401 and problem["instance"] == path, problem
                assert TOKENS[0] not in body.decode() and "tok-wrong" not in body.decode()
            if template in QUERY_TOKEN_PATHS:
                assert query[0] == 200 and query[1].startswith("text/event-stream"), (template, query)
            else:
                assert query[0] == 401, (template, "?access_token= must not work here", query)
        # a token in another header, or a near-miss token, is not enough
        for headers in (
            {"X-Api-Token": TOKENS[0]},
            bearer(TOKENS[0] + "x"),
            bearer(TOKENS[0][:-1]),
            {"Authorization": "Bearer"},
        ):
            assert _get(client, "/v1/summary", headers=headers)[0] == 401, headers
        assert _get(client, "/v1/summary", headers={"Authorization": f"bearer  {TOKENS[0]}"})[0] == 200
    record("auth.api", {"routes": len(paths), "public": sorted(public_templates), "answers": results})
