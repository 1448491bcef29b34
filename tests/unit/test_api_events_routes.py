"""The event index routes through the app (no Kafka): problems, export, live stream, reconcile."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI

from services.api.app import create_app
from services.api.index.store import pair_figures
from services.api.settings import ApiSettings
from services.api.testing import EventReader, RecordMaker, ServerThread, make_stats
from tests.samples import EVENT

PROBLEM = "application/problem+json"


def indexed_app(**settings: object) -> tuple[FastAPI, RecordMaker]:
    app = create_app(ApiSettings(**settings))  # type: ignore[arg-type]
    make = RecordMaker()
    app.state.index.apply(
        [
            make(
                {
                    **EVENT,
                    "event_id": "pp",
                    "title": "Ping-pong team visit",
                    "host_country": "CN",
                    "delegations": [{"country": "USA", "participants": 15}],
                    "starts_on": "1971-04-10",
                }
            ),
            make(
                {
                    **EVENT,
                    "event_id": "spartakiad",
                    "title": "Friendship games",
                    "host_country": "SUHH",
                    "delegations": [{"country": "DDDE"}],
                    "starts_on": "1979-07-21",
                }
            ),
            make({**EVENT, "event_id": "e-3", "title": 'Quotes "and", commas', "starts_on": "2024-05-01"}),
        ]
    )
    return app, make


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app, _ = indexed_app()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        yield c


async def test_list_filters_codes_in_any_form(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/events", params={"pair": "usa-chn"})).json()
    assert body["total"] == 1 and body["next_cursor"] is None
    (item,) = body["items"]
    assert item["key"] == "p1/pp" and item["pairs"] == ["CN-US"] and item["partner_id"] == "p1"
    assert "received_at" in item
    body = (
        await client.get("/v1/events", params={"pair": "DDDE-SUHH", "from": "1979", "to": "1979-07"})
    ).json()
    assert [i["event_id"] for i in body["items"]] == ["spartakiad"]
    body = (await client.get("/v1/events", params={"country": "deu"})).json()
    assert [i["event_id"] for i in body["items"]] == ["e-3"]
    body = (await client.get("/v1/events", params={"q": "ping pong"})).json()
    assert [i["event_id"] for i in body["items"]] == ["pp"]
    assert (await client.get("/v1/events", params={"q": "*"})).json()["total"] == 0
    page1 = (await client.get("/v1/events", params={"limit": 2, "sort": "starts_on"})).json()
    page2 = (
        await client.get(
            "/v1/events", params={"limit": 2, "sort": "starts_on", "cursor": page1["next_cursor"]}
        )
    ).json()
    assert [i["event_id"] for i in page1["items"] + page2["items"]] == ["pp", "spartakiad", "e-3"]
    assert page1["total"] == page2["total"] == 3 and page2["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"pair": "FR-FRA"}, "query:pair"),
        ({"pair": "XX-FR"}, "query:pair"),
        ({"from": "1980", "to": "1979"}, "query:from"),
        ({"to": "2023-02-30"}, "query:to"),
        ({"cursor": "garbage"}, "query:cursor"),
        ({"sort": "title"}, "query:sort"),
        ({"limit": 0}, "query:limit"),
        ({"country": "ZZ"}, "query:country"),
    ],
)
async def test_bad_parameters_are_problems_naming_them(
    client: httpx.AsyncClient, params: dict[str, object], pointer: str
) -> None:
    r = await client.get("/v1/events", params=params)
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert pointer in {e["pointer"] for e in r.json()["errors"]}, r.json()


async def test_one_event_and_unknown_ones(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/events/p1/pp")
    assert r.status_code == 200 and r.json()["title"] == "Ping-pong team visit"
    for path in ("/v1/events/p1/nope", "/v1/events/P!/x", "/v1/events/p1/" + "x" * 300):
        r = await client.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


async def test_export_csv_and_ndjson(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/events", params={"sort": "starts_on"}, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    assert [row["event_id"] for row in rows] == ["pp", "spartakiad", "e-3"]
    assert rows[0]["delegations"] == "US:15" and rows[2]["title"] == 'Quotes "and", commas'
    r = await client.get("/v1/events", params={"format": "ndjson", "country": "US"})
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(line)["event_id"] for line in r.text.splitlines()] == ["pp"]
    r = await client.get("/v1/events", params={"format": "csv", "limit": 1})
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 1


async def test_reconcile_agrees_then_names_a_corrupted_pair() -> None:
    app, _ = indexed_app()
    index = app.state.index
    figures = {p: (n, c) for p, n, c in index.read_sync(lambda conn: list(pair_figures(conn)))}
    for pair, (n, checksum) in figures.items():
        a, b = pair.split("-")
        stats = make_stats(a, b, events=n)
        app.state.live.apply(stats.model_copy(update={"checksum": f"{checksum:016x}"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c,
    ):
        body = (await c.get("/v1/reconcile")).json()
        assert body == {"pairs": 3, "consistent": 3, "differing": [], "caught_up": True}
        index.store.conn.execute("UPDATE event_pairs SET ck_lo = ck_lo + 1 WHERE pair = 'CN-US'")
        body = (await c.get("/v1/reconcile")).json()
        assert body["consistent"] == 2 and [d["pair"] for d in body["differing"]] == ["CN-US"]
        d = body["differing"][0]
        assert d["aggregate"]["active_events"] == d["index"]["active_events"] == 1
        assert d["aggregate"]["checksum"] != d["index"]["checksum"]
        await c.get("/v1/reconcile")  # the same difference twice in a row: settled, alerting
        assert "handshake_api_reconcile_differing_pairs 1.0" in (await c.get("/metrics")).text


async def test_live_event_stream_filters_and_resumes() -> None:
    app, make = indexed_app(sse_heartbeat_seconds=0.2)
    index = app.state.index
    with ServerThread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            async with http.stream("GET", "/v1/stream/events", params={"pair": "US-CN"}) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                reader = EventReader(r)
                assert (await reader.next()).event == "hello"
                await asyncio.to_thread(
                    index.apply,
                    [
                        make({**EVENT, "event_id": "other"}),  # DE-FR: filtered out
                        make(
                            {
                                **EVENT,
                                "event_id": "pp",
                                "revision": 2,
                                "title": "Ping-pong, corrected",
                                "host_country": "CN",
                                "delegations": [{"country": "US"}],
                                "starts_on": "1971-04-10",
                            }
                        ),
                        make(
                            {
                                **EVENT,
                                "event_id": "pp",
                                "revision": 3,
                                "status": "cancelled",
                                "host_country": "CN",
                                "delegations": [{"country": "US"}],
                                "starts_on": "1971-04-10",
                            }
                        ),
                    ],
                )
                first, second = await reader.until(2, event="event")
                assert orjson.loads(first.data)["change"] == "corrected"
                data = orjson.loads(second.data)
                assert data["change"] == "cancelled" and data["item"]["key"] == "p1/pp"
            async with http.stream("GET", "/v1/stream/events", headers={"Last-Event-ID": first.id}) as r:
                (again,) = await EventReader(r).until(1, event="event")
                assert again.id == second.id  # exactly what followed, no filter: none skipped
