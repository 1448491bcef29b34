"""The SSE endpoint end to end over a real socket (uvicorn in a thread, no Kafka)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import orjson

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.api.testing import EventReader, ServerThread, make_stats


async def wait_for(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_stream_hello_filtered_updates_and_disconnect_cleanup() -> None:
    app = create_app(ApiSettings(sse_heartbeat_seconds=0.2))
    live = app.state.live
    with ServerThread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with client.stream("GET", "/v1/stream", params={"country": "fra"}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                events = EventReader(r)
                hello = await events.next()
                assert hello.event == "hello" and int(hello.id) == live.hub.sequence
                live.submit([make_stats("CN", "US"), make_stats("DE", "FR", events=4)])
                [update] = await events.until(1)
                data = orjson.loads(update.data)
                assert data["pair"] == "DE-FR" and data["active_events"] == 4
                assert int(update.id) == int(hello.id) + 2  # CN-US took one sequence number too
                assert live.hub.clients == 1
                # heartbeats keep idle connections alive
                async with asyncio.timeout(3):
                    while ": ping" not in events.raw:
                        await events.chunk()
            await wait_for(lambda: live.hub.clients == 0)


async def test_resume_with_last_event_id_over_http() -> None:
    app = create_app(ApiSettings())
    live = app.state.live
    with ServerThread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with client.stream("GET", "/v1/stream") as r:
                events = EventReader(r)
                await events.next()
                live.submit([make_stats("CN", "US", version=1)])
                [first] = await events.until(1)
            live.submit([make_stats("CN", "US", version=2), make_stats("DE", "FR"), make_stats("FR", "US")])
            await wait_for(lambda: len(live.view) == 3)
            headers = {"Last-Event-ID": first.id}
            async with client.stream("GET", "/v1/stream", params={"country": "US"}, headers=headers) as r:
                missed = await EventReader(r).until(2)
            assert [orjson.loads(e.data)["pair"] for e in missed] == ["CN-US", "FR-US"]
            assert [int(e.id) for e in missed] == [int(first.id) + 1, int(first.id) + 3]
            async with client.stream("GET", "/v1/stream", headers={"Last-Event-ID": "12"}) as r:
                reset = await EventReader(r).next()
            assert reset.event == "reset"
            r = await client.get("/v1/stream", headers={"Last-Event-ID": "abc"})
            assert r.status_code == 400
            r = await client.get("/v1/stream", params={"pair": "CN"})
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


async def test_stream_accepts_query_token_when_tokens_are_required() -> None:
    app = create_app(ApiSettings(api_tokens="t0ken"))
    with ServerThread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/v1/stream")).status_code == 401
            async with client.stream("GET", "/v1/stream", params={"access_token": "t0ken"}) as r:
                assert r.status_code == 200
                assert (await EventReader(r).next()).event == "hello"
            async with client.stream("GET", "/v1/stream", headers={"Authorization": "Bearer t0ken"}) as r:
                assert r.status_code == 200


async def test_client_that_stops_reading_is_dropped_and_others_get_everything() -> None:
    app = create_app(ApiSettings(sse_client_queue=64, fanout_batch=16))
    live = app.state.live
    with ServerThread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            async with (
                httpx.AsyncClient(base_url=url, timeout=10) as client,
                client.stream("GET", "/v1/stream") as r,
            ):
                events = EventReader(r)
                await events.next()
                await wait_for(lambda: live.hub.clients == 2)
                codes = [
                    f"{a}{b}" for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ]
                big = {f"{y}-{m:02d}": 1 for y in range(1900, 2030) for m in range(1, 13)}
                got = []
                for i in range(0, len(codes), 40):
                    batch = [
                        make_stats("US", code, by_month=big, events=len(big))
                        for code in codes[i : i + 40]
                        if code[0] != code[1]
                    ]
                    live.submit(batch)  # paced by the reader: it is never more than one batch behind
                    got += await events.until(len(batch), seconds=15)
                assert len({e.id for e in got}) == len(got) == 650
                await wait_for(lambda: live.hub.dropped == 1)
                assert live.hub.clients == 1
            # the server closed the dropped connection: reading it to the end reaches EOF
            stuck.settimeout(10)
            while chunk := await asyncio.to_thread(stuck.recv, 1 << 20):
                assert len(chunk) > 0
        finally:
            stuck.close()


def _validator(openapi: dict[str, object], path: str) -> tuple[object, object]:
    """Validators of a stream's documented frame (itemSchema) and of its JSON data (contentSchema)."""
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(openapi))
    frame = openapi["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]  # type: ignore[index]
    rebase = orjson.loads(orjson.dumps(frame).replace(b'"#/components', b'"urn:openapi#/components'))
    cls = jsonschema.Draft202012Validator
    return cls(rebase, registry=registry), cls(
        rebase["properties"]["data"]["contentSchema"], registry=registry
    )


async def test_every_frame_of_both_streams_matches_its_documented_item_schema() -> None:
    from services.api.testing import RecordMaker
    from tests.samples import EVENT

    app = create_app(ApiSettings(sse_replay_size=1))
    live, index = app.state.live, app.state.index
    openapi = app.openapi()
    with ServerThread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for path, publish, event in (
                ("/v1/stream", lambda: live.submit([make_stats("CN", "US"), make_stats("DE", "FR")]), "pair"),
                ("/v1/stream/events", lambda: index.apply([RecordMaker()(EVENT, "p1")]), "event"),
            ):
                frame_ok, data_ok = _validator(openapi, path)
                seen = []
                async with client.stream("GET", path) as r:
                    reader = EventReader(r)
                    seen.append(await reader.next())  # hello
                    publish()
                    seen += await reader.until(1, event=event)
                async with client.stream("GET", path, headers={"Last-Event-ID": "0"}) as r:
                    seen.append(await EventReader(r).next())  # reset: older than the replay buffer
                assert [f.event for f in seen] == ["hello", event, "reset"], path
                for f in seen:
                    frame = {"event": f.event, "id": f.id, "data": f.data}
                    frame_ok.validate(frame)  # type: ignore[attr-defined]
                    data_ok.validate(orjson.loads(f.data))  # type: ignore[attr-defined]
