"""Entry point of ``handshake serve api``: the composition root with the real Kafka source."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from handshake.logs import setup_logging
from handshake.topics import ensure_or_fail
from services.api.app import create_app, index_path, make_hub
from services.api.consumer import KafkaSnapshotSource
from services.api.index.service import EventIndex
from services.api.index.source import KafkaEventSource
from services.api.settings import ApiSettings


def build(settings: ApiSettings | None = None) -> FastAPI:
    """The production app: the live view fed by the pair-stats topic, the event index under
    ``HANDSHAKE_API_DATA_DIR`` fed by the events topic."""
    settings = settings or ApiSettings()
    index = EventIndex(index_path(settings), settings.events_topic, make_hub(settings))
    return create_app(
        settings,
        source=KafkaSnapshotSource(settings),
        index=index,
        events_source=KafkaEventSource(settings, index),
    )


def serve() -> None:
    settings = ApiSettings()
    setup_logging("api", settings.log_level)
    ensure_or_fail(
        settings.kafka_bootstrap,
        settings.topic_specs(),
        settings.replication_factor,
        settings.kafka_python_config(),
    )
    config = uvicorn.Config(
        build(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    uvicorn.Server(config).run()
