"""The ingest HTTP app: ``create_app(settings, publisher=..., partners=..., view=...)``.

Routes authenticate the partner, read the raw body under a size limit, validate with the
shared models, apply the revision rule against the events view under a per-key lock,
produce, and answer 2xx only once the broker acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handshake.http import (
    LabelCache,
    Problem,
    RequestMetrics,
    install_problem_handlers,
    problem_response,
    problem_responses,
    unexpected_problem,
)
from schemas.events import (
    MAX_REVISION,
    AcceptedEvent,
    EventValidationError,
    ExchangeEvent,
    Status,
    content_hash,
    parse_event,
)
from schemas.records import PartnerRecord, encode_accepted, encode_event, event_key
from services.ingest.batchwork import BatchEncoder, BatchRecords, Encoded, Invalid
from services.ingest.domain import (
    Accept,
    BodyError,
    Conflict,
    Duplicate,
    RateLimiter,
    ViewEntry,
    decide,
    errors_out,
    load_json,
    retry_after_header,
)
from services.ingest.follower import Sink, TopicFollower
from services.ingest.partners import Partners
from services.ingest.producer import Outcome, Publisher, Record
from services.ingest.settings import IngestSettings
from services.ingest.view import EventsView

log = logging.getLogger(__name__)

JSON = "application/json"
NDJSON = "application/x-ndjson"
AUTH_DETAIL = "a valid partner API key is required (Authorization: Bearer hsk_...)"

DESCRIPTION = """
Partners push citizen-diplomacy exchange events. Every `/v1` call needs
`Authorization: Bearer <partner key>`; a missing, malformed, unknown or revoked key gets the
same `401`.

A `2xx` is sent only after Kafka acknowledged the record (`acks=all`, idempotent producer).
When Kafka cannot acknowledge within the bound, the answer is `503` with `Retry-After`:
resend the same event (same `event_id` and `revision`); if the first attempt did land, the
resend is answered `duplicate`.

**Revision rules** (per partner and `event_id`):

| stored | sent | result |
|---|---|---|
| nothing | any revision | `accepted` |
| revision r | revision > r | `accepted` (a correction) |
| revision r | revision r, same content | `duplicate` (`202`, nothing is written) |
| revision r | revision r, other content | `409` conflict |
| revision r | revision < r | `409` stale |

`DELETE /v1/events/{event_id}` writes a copy of the latest stored revision with
`status=cancelled` and `revision + 1`; cancelling twice answers `duplicate`. Record keys are
always `{your partner_id}/{event_id}`: another partner's events cannot be addressed at all
(they are simply not found).

Errors are RFC 9457 `application/problem+json`; validation errors list every field problem
as a JSON pointer with a message. Malformed JSON, invalid UTF-8 or JSON nested deeper than
32 levels is `400`. Each partner has a rate (events per second, with a burst); a batch costs
one token per record; over the rate the answer is `429` with `Retry-After` (a batch sent while
the partner is already over its rate is refused before its body is read).
"""


# --- response models (documentation; responses are built directly) ----------------------


class EventResult(BaseModel):
    status: Literal["accepted", "duplicate"]
    key: str = Field(description="the Kafka record key: partner_id/event_id")
    revision: int


class RecordErrorOut(BaseModel):
    pointer: str
    message: str
    code: str


class BatchRecordResult(BaseModel):
    index: int = Field(description="position of the record in the batch, from 0")
    line: int | None = Field(default=None, description="NDJSON line number, from 1")
    status: Literal["accepted", "duplicate", "rejected", "conflict", "unavailable"]
    key: str | None = None
    revision: int | None = None
    errors: list[RecordErrorOut] | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicate: int
    rejected: int = Field(description="records that failed validation")
    conflict: int = Field(description="records refused by the revision rule")
    unavailable: int = Field(description="records Kafka did not acknowledge in time: resend them")
    results: list[BatchRecordResult]


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)


# --- per-key locks ------------------------------------------------------------------------


class KeyLocks:
    """Serialises requests touching the same record key (racing resends, cancels).

    A request takes all its keys at once, or waits until none of them is held: no lock
    order, no deadlock, and a batch of 1,000 fresh keys costs no awaits.
    """

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Future[None]] = {}

    def hold(self, keys: Iterable[str]) -> _Holding:
        """``async with locks.hold(keys):`` (a plain class: the hot path's cheapest context manager)."""
        return _Holding(self._held, keys)

    def __len__(self) -> int:
        return len(self._held)


class _Holding:
    __slots__ = ("held", "released", "wanted")

    def __init__(self, held: dict[str, asyncio.Future[None]], keys: Iterable[str]) -> None:
        self.held = held
        self.wanted = set(keys)
        self.released: asyncio.Future[None] | None = None

    async def __aenter__(self) -> None:
        held, wanted = self.held, self.wanted
        while busy := {held[k] for k in wanted if k in held}:
            await asyncio.wait(busy)
        self.released = released = asyncio.get_running_loop().create_future()
        for key in wanted:
            held[key] = released

    async def __aexit__(self, *exc_info: object) -> None:
        held = self.held
        for key in self.wanted:
            del held[key]
        assert self.released is not None
        self.released.set_result(None)


# --- metrics ------------------------------------------------------------------------------


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "ingest_records_total",
            "records by partner and outcome (accepted, duplicate, rejected, conflict, unavailable)",
            ["partner", "outcome", "reason"],
            registry=registry,
        )
        self._records = LabelCache(self.records)
        self.produce_latency = Histogram(
            "ingest_produce_seconds",
            "time from send to broker acknowledgement, per publish call",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # a plain int read at scrape time: the event loop is its only writer
        self.in_flight_records = 0
        self.in_flight = Gauge(
            "ingest_in_flight_records", "records sent and not yet acknowledged", registry=registry
        )
        self.in_flight.set_function(lambda: self.in_flight_records)
        self.ready = Gauge("ingest_ready", "1 when /readyz answers 200", registry=registry)
        self.batch_workers = Gauge(
            "ingest_batch_workers",
            "processes encoding batch bodies off the event loop (0 until the first big batch starts them)",
            registry=registry,
        )
        self.producer_io_on_loop = Gauge(
            "ingest_producer_io_on_loop",
            "1 while the event loop drives the Kafka producer's network I/O; 0 while the producer's "
            "own thread does (connecting, obtaining its producer id, shutting down)",
            registry=registry,
        )

    def count(self, partner: str, outcome: str, reason: str = "", n: int = 1) -> None:
        if n:
            self._records(partner, outcome, reason).inc(n)


# --- the service (routes call it) ---------------------------------------------------------


@dataclass
class Pending:
    """One record on its way to Kafka."""

    key: str
    entry: ViewEntry
    record: Record
    outcome: Outcome | None = None


@dataclass
class Ingest:
    settings: IngestSettings
    publisher: Publisher
    partners: Partners
    view: EventsView
    metrics: IngestMetrics
    limiter: RateLimiter
    encoder: BatchEncoder
    locks: KeyLocks = field(default_factory=KeyLocks)

    def checks(self) -> dict[str, bool]:
        return {
            "partners": self.partners.ready(),
            "events_view": self.view.ready(),
            "kafka": self.publisher.connected(),
        }

    def require_view(self) -> None:
        if not self.view.ready():
            raise Problem(
                503,
                "ingest is still reading the events topic; retry shortly",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )

    def unavailable(self, detail: str) -> Problem:
        return Problem(503, detail, headers={"Retry-After": str(self.settings.retry_after_s)})

    def rate(self, partner: PartnerRecord, n: int) -> None:
        wait = self.limiter.take(partner.partner_id, partner.rate_per_second, n, time.monotonic())
        if wait > 0:
            self.metrics.count(partner.partner_id, "rejected", "rate_limited", n)
            raise self._over_rate(partner, wait)

    def rate_allows_one(self, partner: PartnerRecord) -> None:
        """429 at once when not even one record would pass: a batch over the rate is refused
        before its body is read and decoded (the work a flood would otherwise cost)."""
        wait = self.limiter.wait(partner.partner_id, partner.rate_per_second, 1, time.monotonic())
        if wait > 0:
            raise self._over_rate(partner, wait)

    def _over_rate(self, partner: PartnerRecord, wait: float) -> Problem:
        return Problem(
            429,
            f"over the rate of {partner.rate_per_second:g} events per second; retry later",
            headers={"Retry-After": retry_after_header(wait)},
        )

    def prepare(
        self, partner_id: str, event: ExchangeEvent, received_at: datetime, overlay: dict[str, ViewEntry]
    ) -> tuple[str, Accept | Duplicate | Conflict, Pending | None]:
        key = event_key(partner_id, event.event_id)
        record, digest = encode_accepted(event, partner_id, received_at)
        decision, pending = self.judge(key, event.revision, event.status.value, digest, record, overlay)
        return key, decision, pending

    def judge(
        self, key: str, revision: int, status: str, digest: str, record: Record, overlay: dict[str, ViewEntry]
    ) -> tuple[Accept | Duplicate | Conflict, Pending | None]:
        """The revision rule against the view and ``overlay`` (this request's earlier records)."""
        decision = decide(overlay.get(key) or self.view.get(key), revision, digest)
        if not isinstance(decision, Accept):
            return decision, None
        entry = ViewEntry(revision, digest, status, record[1])
        overlay[key] = entry
        return decision, Pending(key, entry, record)

    async def send(self, pending: list[Pending]) -> None:
        if not pending:
            return
        self.metrics.in_flight_records += len(pending)
        started = time.perf_counter()
        try:
            outcomes = await self.publisher.publish([p.record for p in pending], self.settings.ack_timeout_s)
        finally:
            self.metrics.in_flight_records -= len(pending)
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        failed = 0
        for p, outcome in zip(pending, outcomes, strict=True):
            p.outcome = outcome
            if outcome.ok:
                self.view.put(p.key, p.entry)
            else:
                failed += 1
        if failed:
            first = next(p for p in pending if p.outcome and not p.outcome.ok)
            log.warning(
                "records not acknowledged",
                extra={
                    "count": failed,
                    "of": len(pending),
                    "first_key": first.key,
                    "error": first.outcome and first.outcome.error,
                },
            )


# --- request helpers ----------------------------------------------------------------------


def media_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    if raw is None:
        return None
    kind, _, params = raw.partition(";")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return None
    return kind.strip().lower()


def require_media(request: Request, allowed: tuple[str, ...]) -> str:
    kind = media_type(request)
    if kind not in allowed:
        raise Problem(
            415,
            f"Content-Type must be {' or '.join(allowed)} (UTF-8)",
            headers={"Accept-Post": ", ".join(allowed)},
        )
    return kind


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Problem(400, "invalid Content-Length header") from None
        if size > limit:
            raise Problem(413, f"the body is larger than {limit} bytes")
    # the ASGI messages themselves (Starlette's request.stream() is an async generator: a
    # measurable cost per request on the hottest route)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise Problem(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)  # one chunk: CPython returns it as is, no copy


def _body_problem(exc: BodyError) -> Problem:
    return Problem(
        exc.status, exc.message, errors=[{"pointer": "", "message": exc.message, "code": exc.code}]
    )


def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


# --- OpenAPI ------------------------------------------------------------------------------


def _event_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    schema = ExchangeEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return schema, defs


_SINGLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/ExchangeEvent"}}},
    }
}


def _batch_body(max_records: int) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": f"a JSON array, or NDJSON (one event per line); at most {max_records} records",
            "content": {
                JSON: {
                    "schema": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_records,
                        "items": {"$ref": "#/components/schemas/ExchangeEvent"},
                    }
                },
                NDJSON: {"schema": {"type": "string", "description": "one ExchangeEvent JSON per line"}},
            },
        }
    }


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        event, defs = _event_schema()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs)
        components["ExchangeEvent"] = event
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- connection hygiene -------------------------------------------------------------------


class CloseUnreadBody:
    """Answers sent before the request body was read whole (401, 413, 415, 429 ...) close the connection.

    Otherwise the server, having answered, keeps reading and discarding the rest of the
    upload to reuse the connection: a client could stream an endless chunked body (even
    with no valid key) and hold the connection and bandwidth for as long as it likes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = BodyTracker(scope, receive)

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.read:
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, body.receive, send_closing)


class BodyTracker:
    """Whether a request's body has been read whole: ``receive`` wrapped, ``read`` the answer."""

    __slots__ = ("_receive", "read")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        headers = dict(scope.get("headers") or ())
        # no body declared: nothing is left to read before answering
        self.read = (
            b"transfer-encoding" not in headers and headers.get(b"content-length", b"0").strip() == b"0"
        )
        self._receive = receive

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self.read = True
        return message


# --- the app ------------------------------------------------------------------------------


class _FastPath:
    """Serves one hot route ahead of the whole middleware stack, with the stack's behaviour.

    ``POST /v1/events`` passed seven ASGI layers per request (server errors, FastAPI's telemetry
    and body limit, request metrics, connection hygiene, exception handlers, routing), each a
    coroutine and a ``send`` wrapper. Here the same handler runs with what those layers do for
    it, inline: a :class:`Problem` becomes problem+json, anything else a logged 500 problem,
    an answer sent before the body was read whole closes the connection (see
    :class:`CloseUnreadBody`), and the request is counted and timed under its route template.
    Every other request goes down the stack unchanged.
    """

    def __init__(self, app: ASGIApp, path: str, method: str, handler: Any, metrics: RequestMetrics) -> None:
        self.app = app
        self.path = path
        self.method = method
        self.handler = handler
        self.requests = LabelCache(metrics.requests)
        self.latency = metrics.latency.labels(method, path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body = BodyTracker(scope, receive)
        try:
            response = await self.handler(Request(scope, body.receive))
        except Problem as exc:
            response = problem_response(exc, self.path)
        except Exception:
            response = unexpected_problem(self.path)
        if not body.read:
            response.headers["connection"] = "close"
        try:
            await response(scope, receive, send)
        finally:
            self.requests(self.method, self.path, str(response.status_code)).inc()
            self.latency.observe(time.perf_counter() - started)


def _serve_first(app: FastAPI, path: str, method: str, handler: Any, metrics: RequestMetrics) -> None:
    """Put a :class:`_FastPath` for ``handler`` at the top of ``app``'s middleware stack."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return _FastPath(build(), path, method, handler, metrics)

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]


_NO_OTEL: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}

bearer = HTTPBearer(auto_error=False, description="the partner API key: hsk_{partner_id}_{secret}")


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, as :data:`bearer` reads it; else None."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def create_app(
    settings: IngestSettings | None = None,
    *,
    publisher: Publisher | None = None,
    partners: Partners | None = None,
    view: EventsView | None = None,
) -> FastAPI:
    """Build the ingest app; adapters not given are the real Kafka ones, started in the lifespan."""
    settings = settings or IngestSettings()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)

    follower: TopicFollower | None = None
    if publisher is None or partners is None or view is None:
        from services.ingest.partners import KafkaPartners
        from services.ingest.producer import KafkaPublisher
        from services.ingest.view import KafkaEventsView

        publisher = publisher or KafkaPublisher(settings)
        followed: dict[str, Sink] = {}
        if partners is None:
            partners = followed[settings.partners_topic] = KafkaPartners()
        if view is None:
            view = followed[settings.events_topic] = KafkaEventsView()
        if followed:
            follower = TopicFollower(settings.kafka_bootstrap, followed, poll_ms=settings.view_poll_ms)

    svc = Ingest(
        settings,
        publisher,
        partners,
        view,
        metrics,
        RateLimiter(settings.burst_seconds),
        BatchEncoder(settings.batch_workers),
    )
    metrics.batch_workers.set_function(lambda: svc.encoder.workers if svc.encoder.pooled() else 0)
    metrics.producer_io_on_loop.set_function(lambda: 1 if svc.publisher.io_on_loop() else 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.create_topics and _uses_kafka(svc):
            from handshake.topics import ensure_or_fail

            await asyncio.to_thread(
                ensure_or_fail, settings.kafka_bootstrap, settings.topic_specs(), settings.replication_factor
            )
        started: list[Any] = []
        try:
            for component in (svc.publisher, svc.partners, svc.view, svc.encoder):
                await asyncio.to_thread(component.start)
                started.append(component)
            if follower is not None:
                await follower.start()
            log.info("ingest started", extra={"events_topic": settings.events_topic})
            yield
        finally:
            if follower is not None:
                await follower.stop()
            for component in reversed(started):
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(component.close)

    app = FastAPI(
        title="Handshake ingest",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # FastAPI's own OpenTelemetry checks its providers on every request (~3% of the single-
        # event route under load); /metrics (Prometheus) is ingest's telemetry unless asked for
        telemetry=None if settings.opentelemetry else _NO_OTEL,
    )
    app.state.ingest = svc
    app.state.registry = registry
    install_problem_handlers(app)
    request_metrics = RequestMetrics(registry, "ingest")
    request_metrics.install(app)
    app.add_middleware(CloseUnreadBody)
    _install_openapi(app)

    def partner_for(key: str | None) -> PartnerRecord:
        if not svc.partners.ready():
            raise svc.unavailable("ingest is still reading the partners topic; retry shortly")
        partner = svc.partners.authenticate(key)
        if partner is None:
            raise Problem(401, AUTH_DETAIL, headers={"WWW-Authenticate": 'Bearer realm="handshake"'})
        return partner

    async def authenticate(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> PartnerRecord:
        return partner_for(
            credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
        )

    auth_problems = (401, 429, 503)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=EventResult,
        summary="Push one event",
        responses=problem_responses(400, *auth_problems, 409, 413, 415, 422),
        openapi_extra={**_SINGLE_BODY, "security": [{"HTTPBearer": []}]},
        tags=["events"],
    )
    async def push_event(request: Request) -> Response:
        """Validate, apply the revision rule and produce one event; 202 once Kafka acknowledged."""
        # the bearer key read here, not through a FastAPI dependency: the hottest route, and
        # dependency resolution cost about a tenth of its time (profiled); same rules as HTTPBearer
        partner = partner_for(bearer_key(request.headers.get("authorization")))
        require_media(request, (JSON,))
        svc.require_view()
        svc.rate(partner, 1)
        raw = await read_body(request, settings.max_body_bytes)
        try:
            event = parse_event(load_json(raw, settings.max_json_depth))
        except BodyError as exc:
            svc.metrics.count(partner.partner_id, "rejected", exc.code)
            raise _body_problem(exc) from None
        except EventValidationError as exc:
            svc.metrics.count(partner.partner_id, "rejected", "invalid")
            detail = "; ".join(e.message for e in exc.errors[:10]) or "invalid event"
            raise Problem(422, detail, errors=errors_out(exc.errors)) from None
        now = datetime.now(UTC)
        async with svc.locks.hold([event_key(partner.partner_id, event.event_id)]):
            key, decision, pending = svc.prepare(partner.partner_id, event, now, {})
            if isinstance(decision, Conflict):
                svc.metrics.count(partner.partner_id, "conflict", "revision")
                raise Problem(
                    409, decision.reason, extra={"key": key, "stored_revision": decision.stored_revision}
                )
            if isinstance(decision, Duplicate):
                svc.metrics.count(partner.partner_id, "duplicate")
                return _json({"status": "duplicate", "key": key, "revision": event.revision}, 202)
            assert pending is not None
            await svc.send([pending])
        assert pending.outcome is not None
        if not pending.outcome.ok:
            svc.metrics.count(partner.partner_id, "unavailable", "not_acknowledged")
            raise svc.unavailable("Kafka did not acknowledge the event in time; resend it (same event_id)")
        svc.metrics.count(partner.partner_id, "accepted")
        return _json({"status": "accepted", "key": key, "revision": event.revision}, 202)

    # the hottest route is served ahead of the middleware stack and of FastAPI's per-request
    # parameter machinery (together about a fifth of its loop time, profiled); the FastAPI
    # route above documents it in the OpenAPI
    _serve_first(app, "/v1/events", "POST", push_event, request_metrics)

    @app.post(
        "/v1/events/batch",
        status_code=200,
        response_model=BatchResult,
        summary="Push up to 1,000 events (JSON array or NDJSON)",
        responses=problem_responses(400, *auth_problems, 413, 415, 422),
        openapi_extra=_batch_body(settings.max_batch_records),
        tags=["events"],
    )
    async def push_batch(request: Request, partner: PartnerRecord = Depends(authenticate)) -> Response:
        """One result per record; bad records never block good ones.

        Records repeating an `event_id` of the same batch are judged against the earlier one.
        When no record could be acknowledged by Kafka the whole batch answers `503`.
        """
        kind = require_media(request, (JSON, NDJSON))
        svc.require_view()
        svc.rate_allows_one(partner)
        raw = await read_body(request, settings.max_body_bytes)
        try:
            records = await svc.encoder.encode(
                raw,
                kind == NDJSON,
                settings.max_batch_records,
                settings.max_json_depth,
                partner.partner_id,
                datetime.now(UTC),
            )
        except BodyError as exc:
            raise _body_problem(exc) from None
        svc.rate(partner, len(records))
        return await _process_batch(svc, partner, records)

    @app.delete(
        "/v1/events/{event_id}",
        status_code=202,
        response_model=EventResult,
        summary="Cancel one of your events",
        responses=problem_responses(*auth_problems, 404, 409),
        tags=["events"],
    )
    async def cancel_event(event_id: str, partner: PartnerRecord = Depends(authenticate)) -> Response:
        """Writes the latest stored revision again with `status=cancelled` and `revision + 1`."""
        svc.require_view()
        svc.rate(partner, 1)
        key = event_key(partner.partner_id, event_id)
        async with svc.locks.hold([key]):
            entry = svc.view.get(key)
            if entry is None:
                raise Problem(404, f"you have no event {event_id!r}")
            if entry.status == Status.cancelled.value:
                svc.metrics.count(partner.partner_id, "duplicate", "already_cancelled")
                return _json({"status": "duplicate", "key": key, "revision": entry.revision}, 202)
            stored = AcceptedEvent.model_validate_json(entry.value)
            if stored.revision >= MAX_REVISION:
                raise Problem(
                    409, f"event {event_id!r} is at the highest revision {MAX_REVISION}; it cannot change"
                )
            cancelled = stored.model_copy(
                update={
                    "status": Status.cancelled,
                    "revision": stored.revision + 1,
                    "received_at": datetime.now(UTC),
                }
            )
            record = encode_event(cancelled)
            new_entry = ViewEntry(
                cancelled.revision, content_hash(cancelled), Status.cancelled.value, record[1]
            )
            pending = Pending(key, new_entry, record)
            await svc.send([pending])
        assert pending.outcome is not None
        if not pending.outcome.ok:
            svc.metrics.count(partner.partner_id, "unavailable", "not_acknowledged")
            raise svc.unavailable("Kafka did not acknowledge the cancellation in time; retry")
        svc.metrics.count(partner.partner_id, "accepted", "cancel")
        return _json({"status": "accepted", "key": key, "revision": cancelled.revision}, 202)

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="The process runs")
    async def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.get(
        "/readyz",
        response_model=Health,
        responses=problem_responses(503),
        tags=["operations"],
        summary="Ready: partners and events caught up, Kafka reachable",
    )
    async def readyz() -> Response:
        checks = svc.checks()
        ready = all(checks.values())
        svc.metrics.ready.set(1 if ready else 0)
        if not ready:
            failing = ", ".join(name for name, ok in checks.items() if not ok)
            raise Problem(
                503,
                f"not ready: {failing}",
                headers={"Retry-After": str(settings.retry_after_s)},
                extra={"checks": checks},
            )
        return _json({"status": "ready", "checks": checks}, 200)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _uses_kafka(svc: Ingest) -> bool:
    from services.ingest.producer import KafkaPublisher

    return isinstance(svc.publisher, KafkaPublisher)


async def _process_batch(svc: Ingest, partner: PartnerRecord, records: BatchRecords) -> Response:
    pid = partner.partner_id
    results: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Pending]] = []
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "conflict": 0, "unavailable": 0}
    async with svc.locks.hold(r.key for r in records if type(r) is Encoded):
        overlay: dict[str, ViewEntry] = {}
        for r in records:
            result: dict[str, Any] = {"index": r.position}
            if r.line is not None:
                result["line"] = r.line
            results.append(result)
            if type(r) is Invalid:
                result["status"] = "rejected"
                result["errors"] = r.errors
                continue
            assert type(r) is Encoded
            decision, p = svc.judge(r.key, r.revision, r.status, r.digest, r.record, overlay)
            result["key"] = r.key
            result["revision"] = r.revision
            if isinstance(decision, Duplicate):
                result["status"] = "duplicate"
            elif isinstance(decision, Conflict):
                result["status"] = "conflict"
                result["errors"] = [
                    {"pointer": "/revision", "message": decision.reason, "code": "revision_conflict"}
                ]
            else:
                assert p is not None
                pending.append((result, p))
        await svc.send([p for _, p in pending])
    for result, p in pending:
        assert p.outcome is not None
        if p.outcome.ok:
            result["status"] = "accepted"
        else:
            result["status"] = "unavailable"
            result["errors"] = [
                {
                    "pointer": "",
                    "message": "Kafka did not acknowledge this record in time; resend it",
                    "code": "unavailable",
                }
            ]
    for result in results:
        counts[result["status"]] += 1
    svc.metrics.count(pid, "accepted", "", counts["accepted"])
    svc.metrics.count(pid, "duplicate", "", counts["duplicate"])
    svc.metrics.count(pid, "rejected", "invalid", counts["rejected"])
    svc.metrics.count(pid, "conflict", "revision", counts["conflict"])
    svc.metrics.count(pid, "unavailable", "not_acknowledged", counts["unavailable"])
    if pending and counts["unavailable"] == len(pending):
        raise svc.unavailable(
            "Kafka did not acknowledge the batch in time; resend it (duplicates are detected)"
        )
    return _json({**counts, "results": results}, 200)
