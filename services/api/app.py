"""The app factory: wires settings, the live view, a snapshot source, routes and middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handshake.http import RequestMetrics, install_problem_handlers
from services.api.hub import StreamHub
from services.api.live import Live, SnapshotSource
from services.api.middleware import TokenAuth, is_public
from services.api.routes import STATIC, ops, v1
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)


class LiveCollector(Collector):
    """View, stream and consumer figures, read at scrape time."""

    def __init__(self, live: Live) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        live, hub = self.live, self.live.hub
        yield GaugeMetricFamily("handshake_api_view_pairs", "pairs in the live view", value=len(live.view))
        yield GaugeMetricFamily("handshake_api_ready", "1 once the view caught up", value=int(live.ready))
        yield GaugeMetricFamily(
            "handshake_api_view_staleness_seconds",
            "now minus updated_at of the newest applied snapshot",
            value=live.staleness_seconds(),
        )
        yield GaugeMetricFamily(
            "handshake_api_view_last_apply_age_seconds",
            "seconds since the last applied snapshot (or since start)",
            value=live.seconds_since_last_apply(),
        )
        records = CounterMetricFamily(
            "handshake_api_records", "pair-stats records by outcome", labels=["result"]
        )
        records.add_metric(["applied"], live.applied)
        records.add_metric(["stale"], live.stale)
        records.add_metric(["invalid"], live.invalid)
        yield records
        yield GaugeMetricFamily("handshake_api_stream_clients", "connected stream clients", value=hub.clients)
        yield GaugeMetricFamily("handshake_api_stream_sequence", "latest stream event id", value=hub.sequence)
        yield CounterMetricFamily(
            "handshake_api_stream_updates", "updates published to the stream", value=hub.published
        )
        yield CounterMetricFamily(
            "handshake_api_stream_fanout", "update deliveries queued to clients", value=hub.delivered
        )
        yield CounterMetricFamily(
            "handshake_api_stream_clients_dropped",
            "clients disconnected for being too slow",
            value=hub.dropped,
        )
        yield CounterMetricFamily(
            "handshake_api_stream_resets", "resumptions answered with event: reset", value=hub.resets
        )
        yield GaugeMetricFamily(
            "handshake_api_stream_coalesced",
            "updates coalesced for connected slow clients",
            value=hub.coalesced,
        )


def create_app(
    settings: ApiSettings | None = None,
    source: SnapshotSource | None = None,
    *,
    live: Live | None = None,
) -> FastAPI:
    """Build the api. ``source=None``: no Kafka, the view is ready at once and tests push
    snapshots with ``app.state.live.apply(stats)``; production passes a KafkaSnapshotSource."""
    settings = settings or ApiSettings()
    live = live or Live(
        StreamHub(
            replay_size=settings.sse_replay_buffer,
            client_queue=settings.sse_client_queue,
            max_clients=settings.sse_max_clients,
        ),
        fanout_batch=settings.fanout_batch,
        freeze_gc=source is not None,  # production: freeze the bootstrap objects once caught up
    )
    tokens = settings.tokens()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.bind(asyncio.get_running_loop())
        if tokens:
            log.info("api access requires a bearer token", extra={"tokens": len(tokens)})
        else:
            log.warning("HANDSHAKE_API_TOKENS is unset: the api is open to anyone who can reach it")
        if source is None:
            live.mark_ready()
        else:
            source.start(live)
        try:
            yield
        finally:
            if source is not None:
                source.stop()

    app = FastAPI(
        title="Handshake api",
        version="1.0.0",
        summary="Country-pair aggregates of citizen-diplomacy events: queries, live stream, dashboard.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.live = live
    registry = CollectorRegistry()
    registry.register(LiveCollector(live))
    app.state.registry = registry
    install_problem_handlers(app)
    app.include_router(v1)
    app.include_router(ops)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(TokenAuth, tokens=tokens)
    RequestMetrics(registry, "handshake_api").install(app, untimed=frozenset({"/v1/stream"}))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            if tokens:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                for path, operations in schema["paths"].items():
                    if not is_public(path):
                        for op in operations.values():
                            op["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
