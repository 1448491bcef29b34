"""The app factory: wires settings, the live view, a snapshot source, routes and middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handshake.http import RequestMetrics, install_problem_handlers
from schemas.records import PairStats
from services.api.hub import StreamHub
from services.api.index.service import EventIndex
from services.api.live import Live, SnapshotSource
from services.api.middleware import TokenAuth, is_public
from services.api.models_events import EventChange
from services.api.reconciler import Reconciler
from services.api.routes import STATIC, ops, v1
from services.api.routes_events import events
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)


class EventsSource(Protocol):
    """Feeds the event index (Kafka in production); owns the index's writer thread."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def make_hub(settings: ApiSettings) -> StreamHub:
    return StreamHub(
        replay_size=settings.sse_replay_buffer,
        client_queue=settings.sse_client_queue,
        max_clients=settings.sse_max_clients,
    )


def index_path(settings: ApiSettings) -> Path:
    return settings.api_data_dir / "events.sqlite3"


class IndexCollector(Collector):
    """Event index, event stream and reconciliation figures, read at scrape time."""

    def __init__(self, index: EventIndex, reconciler: Reconciler) -> None:
        self.index = index
        self.reconciler = reconciler

    def collect(self) -> Iterator[Metric]:
        index, hub, rec = self.index, self.index.hub, self.reconciler
        yield GaugeMetricFamily(
            "handshake_api_index_ready", "1 once the event index caught up", value=int(index.ready)
        )
        yield GaugeMetricFamily(
            "handshake_api_index_lag",
            "records the event index is behind the events topic",
            value=index.lag or 0,
        )
        records = CounterMetricFamily(
            "handshake_api_index_records", "events-topic records by verdict since start", labels=["result"]
        )
        for name, n in index.counts.items():
            records.add_metric([name], n)
        yield records
        yield CounterMetricFamily(
            "handshake_api_index_read_records",
            "records read from the events topic since start (a restart reads only what is new)",
            value=index.read_records,
        )
        yield CounterMetricFamily(
            "handshake_api_index_consumer_stalls",
            "times the index's consumer stayed behind without progress and was recreated",
            value=index.consumer_stalls,
        )
        yield GaugeMetricFamily(
            "handshake_api_index_last_apply_age_seconds",
            "seconds since the index last applied a batch (-1: never since start)",
            value=-1 if index.last_apply_monotonic is None else time.monotonic() - index.last_apply_monotonic,
        )
        yield GaugeMetricFamily(
            "handshake_api_event_stream_clients", "connected event stream clients", value=hub.clients
        )
        yield CounterMetricFamily(
            "handshake_api_event_stream_updates", "event changes published", value=hub.published
        )
        yield GaugeMetricFamily(
            "handshake_api_reconcile_differing_pairs",
            "pairs whose aggregate and index figures disagreed in two runs in a row, both readers caught up",
            value=len(rec.settled),
        )
        yield GaugeMetricFamily(
            "handshake_api_reconcile_last_run_timestamp_seconds",
            "unix time of the last reconciliation (0: none yet)",
            value=rec.last_run_unixtime,
        )


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
        records.add_metric(["failed"], live.failed)
        yield records
        yield CounterMetricFamily(
            "handshake_api_view_consumer_stalls",
            "times the pair-stats consumer stayed behind without progress and was recreated",
            value=live.consumer_stalls,
        )
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
    index: EventIndex | None = None,
    events_source: EventsSource | None = None,
) -> FastAPI:
    """Build the api. ``source=None``: no Kafka, the view is ready at once and tests push
    snapshots with ``app.state.live.apply(stats)``; production passes a KafkaSnapshotSource.

    ``events_source=None``: the event index is fed by the caller (``index.apply(records)`` from a
    test's thread) and is ready at once; without ``index`` it lives in a temporary directory.
    Production passes the index under ``HANDSHAKE_API_DATA_DIR`` and a KafkaEventSource.
    """
    settings = settings or ApiSettings()
    live = live or Live(
        make_hub(settings),
        fanout_batch=settings.fanout_batch,
        freeze_gc=source is not None,  # production: freeze the bootstrap objects once caught up
    )
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if index is None:
        scratch = tempfile.TemporaryDirectory(prefix="handshake-index-")
        index = EventIndex(Path(scratch.name) / "events.sqlite3", settings.events_topic, make_hub(settings))
    event_index = index
    reconciler = Reconciler(live, event_index)
    tokens = settings.tokens()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.bind(asyncio.get_running_loop())
        event_index.bind(asyncio.get_running_loop())
        if tokens:
            log.info("api access requires a bearer token", extra={"tokens": len(tokens)})
        else:
            log.warning("HANDSHAKE_API_TOKENS is unset: the api is open to anyone who can reach it")
        if source is None:
            live.mark_ready()
        else:
            source.start(live)
        if events_source is None:
            await anyio.to_thread.run_sync(event_index.open)
            event_index.lag = 0
            event_index.mark_caught_up()
        else:
            events_source.start()
        periodic = asyncio.create_task(reconciler.every(settings.reconcile_interval_seconds))
        try:
            yield
        finally:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic
            if source is not None:
                source.stop()
            if events_source is not None:
                events_source.stop()
            else:
                event_index.close()
            if scratch is not None:
                scratch.cleanup()

    app = FastAPI(
        title="Handshake api",
        version="1.0.0",
        summary="Country-pair aggregates of citizen-diplomacy events: queries, live stream, dashboard.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.live = live
    app.state.index = event_index
    app.state.reconciler = reconciler
    registry = CollectorRegistry()
    registry.register(LiveCollector(live))
    registry.register(IndexCollector(event_index, reconciler))
    app.state.registry = registry
    install_problem_handlers(app)
    app.include_router(v1)
    app.include_router(events)
    app.include_router(ops)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(TokenAuth, tokens=tokens)
    RequestMetrics(registry, "handshake_api").install(
        app, untimed=frozenset({"/v1/stream", "/v1/stream/events"})
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (EventChange, PairStats):  # the streams' frames (itemSchema) refer to them
                extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in extra.pop("$defs", {}).items():
                    components.setdefault(name, definition)
                components.setdefault(model.__name__, extra)
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
