"""Routes of the exchanges behind the numbers: the event index, its export, its live stream and
the reconciliation of the aggregates with it (DESIGN.md section 4)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse

from handshake.http import Problem, problem_responses
from schemas.events import EVENT_ID_PATTERN, PARTNER_ID_PATTERN, Kind, Status
from services.api.index import query as iq
from services.api.index.export import csv_header, csv_rows, ndjson_rows
from services.api.index.reconcile import Report, as_json
from services.api.index.service import EventIndex, IndexUnavailable
from services.api.models_events import EventItem, EventPage, Reconciliation
from services.api.routes import PAIR, CountryParam, canonical, open_stream, pair_param
from services.api.sse import EventStreamResponse, frame_schema

events = APIRouter(tags=["events"])

PERIOD = r"^[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?$"
CURSOR = r"^[A-Za-z0-9_-]{1,200}$"
CSV = "text/csv"
NDJSON = "application/x-ndjson"


def _index(request: Request) -> EventIndex:
    index: EventIndex = request.app.state.index
    return index


def unavailable(exc: IndexUnavailable) -> Problem:
    return Problem(503, str(exc), headers={"Retry-After": "2"})


def _format(fmt: str | None, accept: str | None) -> str:
    if fmt is not None:
        return fmt
    wanted = (accept or "").lower()
    if CSV in wanted:
        return "csv"
    if NDJSON in wanted:
        return "ndjson"
    return "json"


LIST_DOC = (
    "The accepted state of every matching event (highest revision; a cancelled event keeps its row "
    "with status `cancelled`). Filters combine with AND. `from`/`to` are inclusive on `starts_on`: "
    "`YYYY`, `YYYY-MM` or `YYYY-MM-DD` (a year or month means all of it). `q` matches every word "
    "(the last as a prefix) in title, city, organizer, description and tags. Pages follow "
    "`next_cursor` (keyset: stable while new events arrive). With `format=csv|ndjson` or "
    "`Accept: text/csv|application/x-ndjson` the whole result from `cursor` on (or `limit` rows "
    "when given) is streamed instead: CSV with a header row (RFC 4180, UTF-8; lists joined by `;`, "
    "delegations as `CODE` or `CODE:participants`), or one EventItem JSON per line."
)


@events.get(
    "/v1/events",
    response_model=EventPage,
    summary="Search, list and export the events behind the numbers",
    description=LIST_DOC,
    responses={
        200: {
            "content": {
                CSV: {"schema": {"type": "string"}},
                NDJSON: {
                    "schema": {"type": "string"},
                    "itemSchema": {"$ref": "#/components/schemas/EventItem"},
                },
            }
        },
        **problem_responses(400, 401, 503),
    },
)
async def list_events(
    request: Request,
    pair: Annotated[
        str | None, Query(max_length=9, pattern=PAIR, description="e.g. CN-US, usa-chn, SUHH-US")
    ] = None,
    country: Annotated[CountryParam | None, Query(max_length=8, description="host or delegation")] = None,
    kind: Annotated[Kind | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    date_from: Annotated[
        str | None, Query(alias="from", pattern=PERIOD, description="YYYY[-MM[-DD]]")
    ] = None,
    date_to: Annotated[str | None, Query(alias="to", pattern=PERIOD, description="YYYY[-MM[-DD]]")] = None,
    q: Annotated[str | None, Query(max_length=200, description="words to find (full text)")] = None,
    partner: Annotated[
        str | None, Query(pattern=PARTNER_ID_PATTERN, max_length=63, description="partner id")
    ] = None,
    sort: Annotated[iq.Sort, Query(description="field, '-' for newest first")] = iq.DEFAULT_SORT,
    limit: Annotated[int | None, Query(ge=1, le=500, description="page size (default 50)")] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
    format: Annotated[Literal["json", "csv", "ndjson"] | None, Query(description="else from Accept")] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    try:
        query = iq.EventQuery(
            pair=pair_param(pair) if pair is not None else None,
            country=canonical(country, status=400, where="query:country") if country is not None else None,
            kind=kind.value if kind else None,
            status=status.value if status else None,
            date_from=iq.period(date_from, end=False, param="query:from") if date_from else None,
            date_to=iq.period(date_to, end=True, param="query:to") if date_to else None,
            q=iq.fts_terms(q) if q is not None else None,
            partner=partner,
            sort=sort,
            limit=limit or 50,
            after=iq.decode_cursor(cursor, sort) if cursor else None,
        )
        if query.date_from and query.date_to and query.date_from > query.date_to:
            raise iq.QueryError("query:from", f"{date_from} is after to ({date_to})")
    except iq.QueryError as exc:
        raise Problem(400, str(exc), errors=[{"pointer": exc.param, "message": str(exc)}]) from None
    if q is not None and query.q is None:  # nothing searchable in q: nothing matches
        return _empty(_format(format, accept))
    index = _index(request)
    fmt = _format(format, accept)
    if fmt != "json":
        return _export(index, query, fmt, limit)
    try:
        result = await index.read(lambda conn: iq.page(conn, query))
    except IndexUnavailable as exc:
        raise unavailable(exc) from None
    body = b'{"items":[%s],"total":%d,"next_cursor":%s}' % (
        b",".join(result.docs),
        result.total,
        b"null" if result.next_cursor is None else b'"' + result.next_cursor.encode() + b'"',
    )
    return Response(body, media_type="application/json")


def _empty(fmt: str) -> Response:
    if fmt == "csv":
        return Response(csv_header(), media_type=f"{CSV}; charset=utf-8; header=present")
    if fmt == "ndjson":
        return Response(b"", media_type=NDJSON)
    return Response(b'{"items":[],"total":0,"next_cursor":null}', media_type="application/json")


def _export(index: EventIndex, query: iq.EventQuery, fmt: str, limit: int | None) -> Response:
    render: Callable[[list[bytes]], bytes] = csv_rows if fmt == "csv" else ndjson_rows
    try:
        conn = index.dedicated()
    except IndexUnavailable as exc:
        raise unavailable(exc) from None
    chunks = iq.scan(conn, query, chunk=min(limit or 1000, 1000))
    budget = limit

    def step() -> bytes | None:
        nonlocal budget
        docs = next(chunks, None)
        if docs is None or budget == 0:
            return None
        if budget is not None:
            docs = docs[:budget]
            budget -= len(docs)
        return render(docs)

    async def body() -> AsyncIterator[bytes]:
        try:
            if fmt == "csv":
                yield csv_header()
            while (chunk := await anyio.to_thread.run_sync(step)) is not None:
                yield chunk
        finally:
            conn.close()

    media = f"{CSV}; charset=utf-8; header=present" if fmt == "csv" else NDJSON
    name = "events.csv" if fmt == "csv" else "events.ndjson"
    return StreamingResponse(
        body(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@events.get(
    "/v1/events/{partner_id}/{event_id}",
    response_model=EventItem,
    summary="One event's accepted state",
    responses=problem_responses(401, 404, 503),
)
async def get_event(
    request: Request,
    partner_id: Annotated[str, PathParam(description="the partner's id")],
    event_id: Annotated[str, PathParam(description="the partner's own event id")],
) -> Response:
    if not re.match(PARTNER_ID_PATTERN, partner_id) or not re.match(EVENT_ID_PATTERN, event_id):
        raise Problem(404, f"no event {partner_id}/{event_id}")
    key = f"{partner_id}/{event_id}"
    try:
        doc = await _index(request).read(lambda conn: iq.get(conn, key))
    except IndexUnavailable as exc:
        raise unavailable(exc) from None
    if doc is None:
        raise Problem(404, f"no event {key}")
    return Response(doc, media_type="application/json")


EVENT_FRAME = frame_schema("event", "EventChange")

EVENT_STREAM_DOC = (
    "Server-Sent Events of accepted changes as they arrive: `event: event` with `id: <sequence>` and "
    "`data: EventChange` (`change` is `new`, `corrected` or `cancelled`; `item` the event's new "
    "accepted state). A corrected event matches the filters of what it was and what it is, so a "
    "client sees an event leave its pair or country. `event: hello` on a fresh connection, "
    "`Last-Event-ID` resumes exactly, `event: reset` when the id is older than the replay buffer "
    "(refetch through /v1/events); `: ping` heartbeats. A client that cannot keep up gets the "
    "latest change per event, then is disconnected. `?access_token=` is accepted here."
)


@events.get(
    "/v1/stream/events",
    response_class=EventStreamResponse,
    status_code=200,
    summary="Live accepted events (Server-Sent Events)",
    description=EVENT_STREAM_DOC,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}, "itemSchema": EVENT_FRAME}}},
        **problem_responses(400, 401, 503),
    },
)
async def stream_events(
    request: Request,
    country: Annotated[CountryParam | None, Query(max_length=8, description="host or delegation")] = None,
    pair: Annotated[str | None, Query(max_length=9, pattern=PAIR, description="e.g. CN-US")] = None,
    kind: Annotated[Kind | None, Query()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    access_token: Annotated[str | None, Query(description="bearer token (stream routes only)")] = None,
) -> Response:
    del access_token  # checked by the TokenAuth middleware
    return open_stream(request, _index(request).hub, country, pair, kind, last_event_id)


@events.get(
    "/v1/reconcile",
    response_model=Reconciliation,
    summary="Every pair's aggregate against the same figures recomputed from the event index",
    responses=problem_responses(401, 503),
)
async def reconcile(request: Request) -> Reconciliation:
    try:
        report, caught_up = await request.app.state.reconciler.run()
    except IndexUnavailable as exc:
        raise unavailable(exc) from None
    return reconciliation(report, caught_up)


def reconciliation(report: Report, caught_up: bool) -> Reconciliation:
    return Reconciliation.model_validate(
        {
            "pairs": report.pairs,
            "consistent": report.consistent,
            "differing": [
                {"pair": d.pair, "aggregate": as_json(d.aggregate), "index": as_json(d.index)}
                for d in report.differing
            ],
            "caught_up": caught_up,
        }
    )
