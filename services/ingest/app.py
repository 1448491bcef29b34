"""The ingest HTTP app: ``create_app(settings, publisher=..., partners=..., view=...)`` wires the
adapters, the service, the routes and the middleware; each concern lives in its own module:

- ``routes``: the handlers; ``service``: locks, the revision rule, rate limits, sending, batches;
- ``bodies``: media types, body limits, connection hygiene; ``fastpath``: the hottest route;
- ``openapi``: the document; ``models``: response shapes; ``metrics``: Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from handshake.http import RequestMetrics, install_problem_handlers
from services.ingest.batchwork import BatchEncoder
from services.ingest.bodies import CloseUnreadBody
from services.ingest.domain import RateLimiter
from services.ingest.fastpath import serve_first
from services.ingest.follower import Sink, TopicFollower
from services.ingest.metrics import IngestMetrics
from services.ingest.openapi import DESCRIPTION, install_openapi
from services.ingest.partners import Partners
from services.ingest.producer import Publisher
from services.ingest.routes import bearer, bearer_key, build_routes
from services.ingest.service import Ingest, KeyLocks, uses_kafka
from services.ingest.settings import IngestSettings
from services.ingest.view import EventsView

__all__ = ["KeyLocks", "bearer", "bearer_key", "create_app"]

log = logging.getLogger(__name__)

_NO_OTEL: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


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
            follower = TopicFollower(
                settings.kafka_bootstrap,
                followed,
                poll_ms=settings.view_poll_ms,
                security=settings.aiokafka_config(),
            )

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
        if settings.create_topics and uses_kafka(svc):
            from handshake.topics import ensure_or_fail

            await asyncio.to_thread(
                ensure_or_fail,
                settings.kafka_bootstrap,
                settings.topic_specs(),
                settings.replication_factor,
                settings.kafka_python_config(),
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
    # answers before the body was read close the connection after a lingering read of at most twice
    # the body limit (bodies.linger): clients that write everything first still read the answer
    app.add_middleware(CloseUnreadBody, linger_bytes=2 * settings.max_body_bytes)
    install_openapi(app)

    router, push_event = build_routes(svc, registry)
    app.include_router(router)
    # the hottest route is served ahead of the middleware stack and of FastAPI's per-request
    # parameter machinery (together about a fifth of its loop time, profiled); the FastAPI
    # route documents it in the OpenAPI
    serve_first(app, "/v1/events", "POST", push_event, request_metrics, 2 * settings.max_body_bytes)
    return app
