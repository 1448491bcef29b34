"""ingest's routes: authenticate the partner, read the body under its limit, validate with the
contract, apply the revision rule under a per-key lock, produce, answer once Kafka acknowledged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from handshake.http import Problem, problem_responses
from schemas.events import (
    MAX_REVISION,
    AcceptedEvent,
    EventValidationError,
    Status,
    content_hash,
    parse_event,
)
from schemas.records import PartnerRecord, encode_event, event_key
from services.ingest.bodies import JSON, NDJSON, body_problem, json_response, read_body, require_media
from services.ingest.domain import BodyError, Conflict, Duplicate, ViewEntry, errors_out, load_json
from services.ingest.models import BatchResult, EventResult, Health
from services.ingest.openapi import SINGLE_BODY, batch_body
from services.ingest.service import Ingest, Pending, process_batch

AUTH_DETAIL = "a valid partner API key is required (Authorization: Bearer hsk_...)"

bearer = HTTPBearer(auto_error=False, description="the partner API key: hsk_{partner_id}_{secret}")


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, as :data:`bearer` reads it; else None."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def build_routes(
    svc: Ingest, registry: CollectorRegistry
) -> tuple[APIRouter, Callable[[Request], Awaitable[Response]]]:
    """The router, and the single-event handler (served ahead of the middleware stack too)."""
    router = APIRouter()

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

    @router.post(
        "/v1/events",
        status_code=202,
        response_model=EventResult,
        summary="Push one event",
        responses=problem_responses(400, *auth_problems, 409, 413, 415, 422),
        openapi_extra={**SINGLE_BODY, "security": [{"HTTPBearer": []}]},
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
        raw = await read_body(request, svc.settings.max_body_bytes)
        try:
            event = parse_event(load_json(raw, svc.settings.max_json_depth))
        except BodyError as exc:
            svc.metrics.count(partner.partner_id, "rejected", exc.code)
            raise body_problem(exc) from None
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
                return json_response({"status": "duplicate", "key": key, "revision": event.revision}, 202)
            assert pending is not None
            await svc.send([pending])
        assert pending.outcome is not None
        if not pending.outcome.ok:
            svc.metrics.count(partner.partner_id, "unavailable", "not_acknowledged")
            raise svc.unavailable("Kafka did not acknowledge the event in time; resend it (same event_id)")
        svc.metrics.count(partner.partner_id, "accepted")
        return json_response({"status": "accepted", "key": key, "revision": event.revision}, 202)

    @router.post(
        "/v1/events/batch",
        status_code=200,
        response_model=BatchResult,
        summary="Push up to 1,000 events (JSON array or NDJSON)",
        responses=problem_responses(400, *auth_problems, 413, 415, 422),
        openapi_extra=batch_body(svc.settings.max_batch_records),
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
        raw = await read_body(request, svc.settings.max_body_bytes)
        try:
            records = await svc.encoder.encode(
                raw,
                kind == NDJSON,
                svc.settings.max_batch_records,
                svc.settings.max_json_depth,
                partner.partner_id,
                datetime.now(UTC),
            )
        except BodyError as exc:
            raise body_problem(exc) from None
        svc.rate(partner, len(records))
        return await process_batch(svc, partner, records)

    @router.delete(
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
                return json_response({"status": "duplicate", "key": key, "revision": entry.revision}, 202)
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
        return json_response({"status": "accepted", "key": key, "revision": cancelled.revision}, 202)

    @router.get("/healthz", response_model=Health, tags=["operations"], summary="The process runs")
    async def healthz() -> Response:
        return json_response({"status": "ok"}, 200)

    @router.get(
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
                headers={"Retry-After": str(svc.settings.retry_after_s)},
                extra={"checks": checks},
            )
        return json_response({"status": "ready", "checks": checks}, 200)

    @router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router, push_event
