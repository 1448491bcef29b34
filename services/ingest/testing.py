"""Test helpers: the real ingest app (real Kafka adapters) in-process, and reading a topic back.

Shared by the integration and security suites (``tests/integration``, ``tests/security``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from handshake.settings import KafkaSettings
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings


def ingest_settings(kafka: KafkaSettings, **overrides: Any) -> IngestSettings:
    """IngestSettings on ``kafka``'s topics, with fast followers (tests see revocations quickly)."""
    return IngestSettings(**{**kafka.model_dump(), "view_poll_ms": 50, **overrides})


@contextlib.asynccontextmanager
async def running_ingest(
    settings: IngestSettings, key: str | None = None, *, batch_workers_up: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with real adapters, lifespan run, once /readyz says ready (and, when asked,
    once its batch worker processes are up, which otherwise start on the first big batch)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if batch_workers_up:
            assert await asyncio.to_thread(app.state.ingest.encoder.warm, 60), "batch workers did not start"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ingest", headers=headers
        ) as client:
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, (await client.get("/readyz")).text
                await asyncio.sleep(0.05)
            yield client


def records_of(
    consumer_factory: Callable[..., Any], topic: str, expected: int, timeout_ms: int = 5000
) -> list[Any]:
    """Up to ``expected`` records of ``topic`` from the beginning; stops after ``timeout_ms`` idle."""
    consumer = consumer_factory(topic, consumer_timeout_ms=timeout_ms)
    out = []
    for record in consumer:
        out.append(record)
        if len(out) >= expected:
            break
    return out
