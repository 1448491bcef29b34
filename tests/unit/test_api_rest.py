"""REST through the ASGI app with snapshots pushed into the view (no Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from services.api.app import create_app
from services.api.live import Live
from services.api.settings import ApiSettings
from services.api.testing import RecordMaker, make_stats
from tests.samples import EVENT

PROBLEM = "application/problem+json"


def filled_app(**settings: object) -> FastAPI:
    app = create_app(ApiSettings(**settings))  # type: ignore[arg-type]
    live = app.state.live
    live.apply(make_stats("CN", "US", events=5, by_kind={"athletic": 2, "cultural": 3}))
    live.apply(make_stats("DE", "FR", events=2, by_kind={"cultural": 2}, by_month={"2025-01": 2}))
    live.apply(make_stats("FR", "US", events=3, by_kind={"civic": 3}, by_month={"2024-06": 3}, cancelled=1))
    live.apply(make_stats("DDDE", "SUHH", events=1, by_kind={"athletic": 1}, by_month={"1975-07": 1}))
    app.state.index.apply([RecordMaker()(EVENT, "p1")])
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = filled_app()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        yield c


async def test_summary_totals(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/summary")).json()
    assert body["pairs"] == 4
    assert body["countries"] == 6
    assert body["active_events"] == 11
    assert body["participants"] == 110
    assert body["by_kind"] == {"athletic": 3, "civic": 3, "cultural": 5}
    assert body["by_month"] == {"1975-07": 1, "2024-06": 3, "2025-01": 2, "2025-05": 5}
    assert body["ready"] is True
    assert "k(k-1)/2" in body["note"]


async def test_pairs_ranked_with_filters_and_paging(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/pairs")).json()
    assert [i["pair"] for i in body["items"]] == ["CN-US", "FR-US", "DE-FR", "DDDE-SUHH"]
    assert body["total"] == 4
    assert body["items"][0]["countries"] == [
        {"code": "CN", "name": "China"},
        {"code": "US", "name": "United States"},
    ]
    body = (await client.get("/v1/pairs", params={"country": "usa", "limit": 1, "offset": 1})).json()
    assert body["total"] == 2 and [i["pair"] for i in body["items"]] == ["FR-US"]
    body = (await client.get("/v1/pairs", params={"kind": "cultural"})).json()
    assert [(i["pair"], i["value"]) for i in body["items"]] == [("CN-US", 3), ("DE-FR", 2)]
    body = (await client.get("/v1/pairs", params={"status": "cancelled"})).json()
    assert [i["pair"] for i in body["items"]] == ["FR-US"]
    body = (await client.get("/v1/pairs", params={"from": "2024-01", "to": "2025-01"})).json()
    assert [(i["pair"], i["value"]) for i in body["items"]] == [("FR-US", 3), ("DE-FR", 2)]
    body = (await client.get("/v1/pairs", params={"sort": "participants", "country": "SUHH"})).json()
    assert [i["pair"] for i in body["items"]] == ["DDDE-SUHH"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"sort": "name"},
        {"kind": "chess"},
        {"status": "maybe"},
        {"from": "2025-13"},
        {"to": "2025/01"},
        {"from": "2025-06", "to": "2025-01"},
        {"country": "XX"},
        {"country": "ZZZ"},
    ],
)
async def test_bad_query_parameters_are_400_problems(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    r = await client.get("/v1/pairs", params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 400 and body["detail"]


async def test_unknown_country_message_is_clear(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/pairs", params={"country": "XX"})).json()
    assert "'XX' is not an ISO 3166 country code" in body["detail"]


@pytest.mark.parametrize(
    "path", ["/v1/pairs/CN/US", "/v1/pairs/us/cn", "/v1/pairs/USA/CHN", "/v1/pairs/chn/us"]
)
async def test_pair_detail_in_either_order_and_alpha3(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    body = r.json()
    assert body["pair"] == "CN-US"
    assert body["names"] == {"CN": "China", "US": "United States"}
    assert body["by_kind"] == {"athletic": 2, "cultural": 3}
    assert len(body["checksum"]) == 16


async def test_pair_detail_former_countries(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/pairs/suhh/dDdE")).json()
    assert body["pair"] == "DDDE-SUHH"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/pairs/JP/US", 404, "no data for the pair JP-US"),
        ("/v1/pairs/XX/US", 404, "'XX' is not an ISO 3166 country code"),
        ("/v1/pairs/US/usa", 400, "two different countries"),
        ("/v1/countries/QQ", 404, "'QQ' is not an ISO 3166 country code"),
        ("/v1/countries/JP", 404, "no data for the country JP"),
        ("/v1/nothing", 404, ""),
    ],
)
async def test_not_found_and_bad_paths_are_problems(
    client: httpx.AsyncClient, path: str, status: int, words: str
) -> None:
    r = await client.get(path)
    assert r.status_code == status
    assert r.headers["content-type"] == PROBLEM
    assert words in r.json()["detail"]


async def test_country_detail(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/countries/usa")).json()
    assert body["country"] == {"code": "US", "name": "United States"}
    assert [p["country"]["code"] for p in body["partners"]] == ["CN", "FR"]
    assert body["totals"]["active_events"] == 8
    assert body["totals"]["by_kind"] == {"athletic": 2, "civic": 3, "cultural": 3}


async def test_country_activity_shades_the_map(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/countries")).json()
    assert [(i["country"]["code"], i["value"], i["pairs"]) for i in body["items"]] == [
        ("US", 8, 2),
        ("CN", 5, 1),
        ("FR", 5, 2),
        ("DE", 2, 1),
        ("DDDE", 1, 1),
        ("SUHH", 1, 1),
    ]
    assert body["total"] == 6
    window = (await client.get("/v1/countries", params={"from": "2024-01", "to": "2024-12"})).json()
    assert [(i["country"]["code"], i["value"]) for i in window["items"]] == [("FR", 3), ("US", 3)]
    bad = await client.get("/v1/countries", params={"from": "2025-01", "to": "2024-01"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["pointer"] == "query:from"


async def test_health_ready_metrics_dashboard(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "pairs": None}
    assert (await client.get("/readyz")).json()["status"] == "ready"
    await client.get("/v1/pairs")
    metrics = (await client.get("/metrics")).text
    assert "handshake_api_view_pairs 4.0" in metrics
    assert 'handshake_api_http_requests_total{method="GET",route="/v1/pairs",status="200"}' in metrics
    assert "handshake_api_stream_clients 0.0" in metrics
    assert "handshake_api_view_staleness_seconds" in metrics
    page = await client.get("/")
    assert page.status_code == 200 and "<table" in page.text and 'aria-live="polite"' in page.text
    js = await client.get("/static/vendor/echarts.min.js")
    assert js.status_code == 200 and len(js.content) > 500_000
    assert (await client.get("/static/vendor/echarts.LICENSE")).status_code == 200
    for path in (
        "/static/vendor/world-atlas/countries-50m.json",
        "/static/vendor/world-atlas/LICENSE",
        "/static/vendor/topojson-client.min.js",
        "/static/vendor/topojson-client.LICENSE",
        "/static/places.json",
    ):
        assert (await client.get(path)).status_code == 200, path


async def test_not_ready_until_the_source_caught_up() -> None:
    class Never:
        def start(self, live: Live) -> None:
            self.live = live

        def stop(self) -> None:
            pass

    source = Never()
    app = create_app(ApiSettings(), source=source)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
        assert (await c.get("/healthz")).status_code == 200
        source.live.mark_ready()
        assert (await c.get("/readyz")).status_code == 200


def concrete_paths(app: FastAPI) -> list[str]:
    """Every route of the app as a requestable path."""
    samples = {
        "{a}": "CN",
        "{b}": "US",
        "{code}": "FR",
        "{path}": "app.css",
        "{partner_id}": "p1",
        "{event_id}": EVENT["event_id"],
    }
    paths = []
    for rc in iter_route_contexts(app.routes):
        path = getattr(rc.original_route, "path", None)
        assert path, rc
        if path == "/static":
            path = "/static/app.css"
        for k, v in samples.items():
            path = path.replace(k, v)
        paths.append(path)
    return paths


PUBLIC = {"/healthz", "/", "/static/app.css"}


async def test_tokens_required_on_every_route_except_the_public_ones() -> None:
    app = filled_app(api_tokens="s3cret, other")
    paths = concrete_paths(app)
    assert {"/v1/summary", "/v1/stream", "/metrics", "/openapi.json", "/docs", "/readyz"} <= set(paths)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        for path in paths:
            r = await c.get(path)
            if path in PUBLIC:
                assert r.status_code == 200, path
                continue
            assert r.status_code == 401, path
            assert r.headers["content-type"] == PROBLEM
            assert r.headers["www-authenticate"].startswith("Bearer")
            bad = await c.get(path, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
            if path in ("/v1/stream", "/v1/stream/events"):
                continue  # streams forever once authorised: checked at the SSE level
            ok = await c.get(path, headers={"Authorization": "Bearer other"})
            assert ok.status_code == 200, (path, ok.text)
        # the query token is accepted by the stream only
        r = await c.get("/v1/summary", params={"access_token": "s3cret"})
        assert r.status_code == 401
        spec = (await c.get("/openapi.json", headers={"Authorization": "Bearer s3cret"})).json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert spec["paths"]["/v1/pairs"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in spec["paths"]["/healthz"]["get"]


async def test_open_when_no_tokens(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/summary")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in spec.get("components", {})
    for op in ("/v1/summary", "/v1/pairs", "/v1/pairs/{a}/{b}", "/v1/countries/{code}", "/v1/stream"):
        assert op in spec["paths"]


async def test_trends_against_the_previous_window() -> None:
    app = create_app(ApiSettings())
    live = app.state.live
    live.apply(make_stats("CN", "US", events=5, by_month={"1971-04": 3, "1972-04": 2}))  # falling
    live.apply(make_stats("DE", "FR", events=4, by_month={"1972-01": 4}))  # rising
    live.apply(make_stats("FR", "US", events=2, by_month={"1971-06": 1, "1972-06": 1}))  # flat
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        params = {"from": "1972-01", "to": "1972-12", "compare": "previous"}
        body = (await c.get("/v1/pairs", params={**params, "sort": "change"})).json()
        rows = [(i["pair"], i["value"], i["previous_events"], i["change"]) for i in body["items"]]
        assert rows == [("DE-FR", 4, 0, 4), ("FR-US", 1, 1, 0), ("CN-US", 2, 3, -1)]
        body = (await c.get("/v1/pairs", params={**params, "sort": "-change"})).json()
        assert [i["pair"] for i in body["items"]] == ["CN-US", "FR-US", "DE-FR"]
        trend = (await c.get("/v1/summary", params=params)).json()["trend"]
        assert trend == {
            "from": "1972-01",
            "to": "1972-12",
            "events": 7,
            "previous_from": "1971-01",
            "previous_to": "1971-12",
            "previous_events": 4,
            "change": 3,
        }
        for bad, pointer in (
            ({"compare": "previous", "from": "1972-01"}, "query:compare"),
            ({"sort": "change"}, "query:sort"),
        ):
            r = await c.get("/v1/pairs", params=bad)
            assert r.status_code == 400 and r.json()["errors"][0]["pointer"] == pointer
        assert (await c.get("/v1/summary")).json()["trend"] is None
