"""HTTP routes: REST queries, the live stream, health, metrics and the dashboard shell."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import pycountry
from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import WithJsonSchema

from handshake.http import Problem, problem_responses
from schemas.countries import all_countries, normalize_country
from schemas.events import Kind, Status
from services.api.hub import StreamFilter, StreamHub, TooManyClients
from services.api.live import Live
from services.api.models import (
    ActivityPage,
    CountryActivity,
    CountryOut,
    CountryRef,
    Health,
    PairDetail,
    PairItem,
    PairPage,
    Ready,
    Summary,
    Trend,
)
from services.api.settings import ApiSettings
from services.api.sse import EventStreamResponse, frame_schema
from services.api.view import PairQuery, previous_window

STATIC = Path(__file__).parent / "static"
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
PAIR = r"^[A-Za-z]{2,4}[-_/][A-Za-z]{2,4}$"  # two codes in any order and form: CN-US, usa-chn, SUHH/US


def _accepted_codes() -> list[str]:
    """Every country code the api accepts (upper case; lower case is accepted too)."""
    codes = {code for code, _ in all_countries()}
    codes |= {c.alpha_3 for c in pycountry.countries}
    for h in pycountry.historic_countries:
        alpha_3 = getattr(h, "alpha_3", None)
        if alpha_3 and alpha_3 not in codes:
            try:
                normalize_country(alpha_3)
            except ValueError:
                continue
            codes.add(alpha_3)
    return sorted(codes)


CountryParam = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "enum": _accepted_codes(),
            "description": "ISO 3166-1 alpha-2 or alpha-3 (any case), or ISO 3166-3 for former countries",
        }
    ),
]
_PAIR_RE = re.compile(r"^\s*([A-Za-z]{2,4})\s*[-_/]\s*([A-Za-z]{2,4})\s*$")

v1 = APIRouter(tags=["queries"])  # full paths (no prefix): route.path is the public template
ops = APIRouter(tags=["operations"])


def _live(request: Request) -> Live:
    live: Live = request.app.state.live
    return live


def canonical(code: str, *, status: int, where: str) -> str:
    """Canonical country code or a problem naming the parameter."""
    try:
        return normalize_country(code)
    except ValueError as exc:
        raise Problem(
            status,
            f"{where}: {exc} (use ISO 3166-1 alpha-2 or alpha-3 like FR or FRA, or a former country like SUHH)",
            errors=[{"pointer": where, "message": str(exc), "code": "country_code"}],
        ) from None


def _window(month_from: str | None, month_to: str | None, compare: str | None) -> tuple[str, str] | None:
    """The month window of a trend query; ``compare=previous`` needs both ends."""
    if month_from and month_to and month_from > month_to:
        raise Problem(
            400,
            f"from ({month_from}) is after to ({month_to})",
            errors=[{"pointer": "query:from", "message": "after to"}],
        )
    if compare and not (month_from and month_to):
        raise Problem(
            400,
            "compare=previous needs both from and to (YYYY-MM): the previous window has the same length",
            errors=[{"pointer": "query:compare", "message": "needs from and to"}],
        )
    if month_from and month_to:
        return month_from, month_to
    return None


def pair_param(text: str, where: str = "query:pair") -> str:
    """The canonical pair key of a ``pair`` parameter like CN-US, usa-chn or SUHH/US."""
    m = _PAIR_RE.match(text)
    if not m:
        raise Problem(
            400,
            f"{where}: {text!r} is not a pair like CN-US",
            errors=[{"pointer": where, "message": "expected two country codes joined by '-'"}],
        )
    return pair_of(m.group(1), m.group(2), status=400, where=where)


def pair_of(a: str, b: str, *, status: int, where: str) -> str:
    ca = canonical(a, status=status, where=where)
    cb = canonical(b, status=status, where=where)
    if ca == cb:
        raise Problem(
            400,
            f"{where}: a pair needs two different countries, got {ca} twice",
            errors=[{"pointer": where, "message": "the same country twice", "code": "pair_same_country"}],
        )
    return "-".join(sorted((ca, cb)))


@v1.get(
    "/v1/summary",
    response_model=Summary,
    summary="Global totals, by kind, by status and by month",
    responses=problem_responses(400, 401),
)
async def summary(
    request: Request,
    month_from: Annotated[str | None, Query(alias="from", pattern=MONTH, description="YYYY-MM")] = None,
    month_to: Annotated[str | None, Query(alias="to", pattern=MONTH, description="YYYY-MM")] = None,
    compare: Annotated[
        Literal["previous"] | None, Query(description="also the previous window of the same length")
    ] = None,
) -> Summary:
    window = _window(month_from, month_to, compare)
    live = _live(request)
    t = live.view.totals()
    trend = None
    if window is not None:
        now, before = live.view.trend(*window)
        previous = previous_window(*window)
        trend = Trend(
            month_from=window[0],
            month_to=window[1],
            events=now,
            previous_from=previous[0] if compare else None,
            previous_to=previous[1] if compare else None,
            previous_events=before if compare else None,
            change=now - before if compare else None,
        )
    return Summary(
        trend=trend,
        pairs=t.pairs,
        countries=len(live.view.countries()),
        active_events=t.active_events,
        participants=t.participants,
        cancelled=t.cancelled,
        by_kind=t.by_kind,
        by_status=t.by_status,
        by_month=t.by_month,
        updated_at=live.view.last_updated_at,
        sequence=live.hub.sequence,
        ready=live.ready,
    )


@v1.get(
    "/v1/pairs",
    response_model=PairPage,
    summary="Ranked country pairs",
    description=(
        "Pairs ranked by `value`, highest first, ties by pair key. With `sort=participants` the value is "
        "the pair's participants. Otherwise it is the events matching the most specific filter: the month "
        "range `from`..`to` (inclusive, by month of starts_on), else `kind`, else `status`, else all active "
        "events. `kind`, `status` and a month range keep only pairs with at least one matching event; "
        "`country` keeps the pairs that include that country (alpha-2, alpha-3 or former 4-letter code)."
    ),
    responses=problem_responses(400, 401),
)
async def pairs(
    request: Request,
    country: Annotated[
        CountryParam | None, Query(description="ISO code, e.g. FR or FRA", max_length=8)
    ] = None,
    kind: Annotated[Kind | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    month_from: Annotated[str | None, Query(alias="from", pattern=MONTH, description="YYYY-MM")] = None,
    month_to: Annotated[str | None, Query(alias="to", pattern=MONTH, description="YYYY-MM")] = None,
    sort: Annotated[
        Literal["events", "participants", "change", "-change"],
        Query(description="change: rising ties first, -change: falling first (with compare=previous)"),
    ] = "events",
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    compare: Annotated[
        Literal["previous"] | None,
        Query(
            description="each pair also gets previous_events (the window just before, same length) and change"
        ),
    ] = None,
) -> PairPage:
    code = canonical(country, status=400, where="query:country") if country is not None else None
    _window(month_from, month_to, compare)
    if sort in ("change", "-change") and not compare:
        raise Problem(
            400,
            f"sort={sort} ranks by the change against the previous window: add compare=previous, from and to",
            errors=[{"pointer": "query:sort", "message": "needs compare=previous"}],
        )
    query = PairQuery(
        country=code,
        kind=kind.value if kind else None,
        status=status.value if status else None,
        month_from=month_from,
        month_to=month_to,
        sort=sort,
        limit=limit,
        offset=offset,
        compare=compare is not None,
    )
    page = _live(request).view.query(query)
    return PairPage(
        total=page.total, limit=limit, offset=offset, sort=sort, items=[PairItem.of(r) for r in page.items]
    )


@v1.get(
    "/v1/countries",
    response_model=ActivityPage,
    summary="Every country's activity under the filters of /v1/pairs (the dashboard map's shading)",
    description=(
        "For each country, the sum of `value` over its pairs that `/v1/pairs` would list with the same "
        "`kind`, `status`, `from` and `to` (pair-events: an event counts once per partner country)."
    ),
    responses=problem_responses(400, 401),
)
async def countries(
    request: Request,
    kind: Annotated[Kind | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    month_from: Annotated[str | None, Query(alias="from", pattern=MONTH, description="YYYY-MM")] = None,
    month_to: Annotated[str | None, Query(alias="to", pattern=MONTH, description="YYYY-MM")] = None,
) -> ActivityPage:
    _window(month_from, month_to, None)
    query = PairQuery(
        kind=kind.value if kind else None,
        status=status.value if status else None,
        month_from=month_from,
        month_to=month_to,
    )
    rows = _live(request).view.activity(query)
    items = [CountryActivity(country=CountryRef.of(r.code), value=r.value, pairs=r.pairs) for r in rows]
    return ActivityPage(total=len(items), items=items)


@v1.get(
    "/v1/pairs/{a}/{b}",
    response_model=PairDetail,
    summary="One pair's full aggregate (either order; alpha-2, alpha-3, any case)",
    responses=problem_responses(400, 401, 404),
)
async def pair_detail(
    request: Request,
    a: Annotated[str, PathParam(description="a country code, e.g. CN or CHN")],
    b: Annotated[str, PathParam(description="the other country code, e.g. us")],
) -> PairDetail:
    key = pair_of(a, b, status=404, where="path")
    stats = _live(request).view.get(key)
    if stats is None:
        raise Problem(404, f"no data for the pair {key}")
    return PairDetail.of(stats)


@v1.get(
    "/v1/countries/{code}",
    response_model=CountryOut,
    summary="A country's partners ranked, totals and by kind",
    responses=problem_responses(401, 404),
)
async def country_detail(
    request: Request, code: Annotated[str, PathParam(description="e.g. FR, FRA or SUHH")]
) -> CountryOut:
    canon = canonical(code, status=404, where="path:code")
    detail = _live(request).view.country(canon)
    if detail is None:
        raise Problem(404, f"no data for the country {canon}")
    return CountryOut.of(detail)


PAIR_FRAME = frame_schema("pair", "PairStats")

STREAM_DOC = (
    "Server-Sent Events: `event: pair` with `id: <sequence>` and `data: <PairStats JSON>` for each applied "
    "update matching the filters; `event: hello` (id = current sequence) on a fresh connection; with "
    "`Last-Event-ID` exactly the matching updates after that id, or `event: reset` when it is older than "
    "the replay buffer (refetch through REST); `: ping` comments as heartbeats. A client that cannot keep "
    "up gets only the latest snapshot per pair, then is disconnected. When tokens are required, "
    "`?access_token=` is accepted here (EventSource cannot send headers)."
)


@v1.get(
    "/v1/stream",
    response_class=EventStreamResponse,
    status_code=200,
    summary="Live pair snapshots (Server-Sent Events)",
    description=STREAM_DOC,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}, "itemSchema": PAIR_FRAME}}},
        **problem_responses(400, 401, 503),
    },
)
async def stream(
    request: Request,
    country: Annotated[
        CountryParam | None, Query(max_length=8, description="only pairs with this country")
    ] = None,
    pair: Annotated[
        str | None, Query(max_length=9, pattern=PAIR, description="one pair, e.g. CN-US or usa-chn")
    ] = None,
    kind: Annotated[Kind | None, Query(description="only pairs with (or that just lost) this kind")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    access_token: Annotated[str | None, Query(description="bearer token (this route only)")] = None,
) -> Response:
    del access_token  # checked by the TokenAuth middleware
    return open_stream(request, _live(request).hub, country, pair, kind, last_event_id)


def open_stream(
    request: Request,
    hub: StreamHub,
    country: str | None,
    pair: str | None,
    kind: Kind | None,
    last_event_id: str | None,
) -> Response:
    """Subscribe a client to ``hub`` with its filters and resume point (both stream routes)."""
    code = canonical(country, status=400, where="query:country") if country is not None else None
    pair_key = pair_param(pair) if pair is not None else None
    last: int | None = None
    if last_event_id is not None and last_event_id.strip():
        try:
            last = int(last_event_id.strip())
        except ValueError:
            raise Problem(400, f"header:Last-Event-ID: {last_event_id!r} is not an event id") from None
    settings: ApiSettings = request.app.state.settings
    try:
        sub, initial = hub.subscribe(
            StreamFilter(country=code, pair=pair_key, kind=kind.value if kind else None), last
        )
    except TooManyClients as exc:
        raise Problem(503, str(exc), headers={"Retry-After": "5"}) from None
    return EventStreamResponse(hub, sub, initial, settings.sse_heartbeat_seconds)


@ops.get("/healthz", response_model=Health, summary="Liveness (always 200 when the process answers)")
async def healthz() -> Health:
    return Health(status="ok")


@ops.get(
    "/readyz",
    response_model=Ready,
    summary="Readiness: 200 once the view and the event index caught up with their topics",
    responses=problem_responses(401, 503),
)
async def readyz(request: Request) -> Ready:
    live = _live(request)
    index = request.app.state.index
    if not live.ready:
        raise Problem(503, "the view is still reading the pair-stats topic", headers={"Retry-After": "1"})
    if not index.ready:
        behind = "" if index.lag is None else f" ({index.lag} records behind)"
        raise Problem(
            503, f"the event index is still reading the events topic{behind}", headers={"Retry-After": "1"}
        )
    return Ready(status="ready", pairs=len(live.view), index_lag=index.lag)


@ops.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **problem_responses(401),
    },
)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@ops.get("/", include_in_schema=False)
async def dashboard(request: Request) -> Response:
    """The dashboard's page; it says whether the api wants a token, so the page asks before its
    first request instead of collecting 401s (each one a console error in the browser)."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if request.app.state.settings.tokens():
        page = page.replace(
            '<meta name="handshake-auth" content="open">', '<meta name="handshake-auth" content="bearer">'
        )
    return Response(page, media_type="text/html", headers={"Cache-Control": "no-cache"})
