"""Test and benchmark helpers: snapshot factory and a uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import uvicorn

from handshake.settings import KafkaSettings
from schemas.events import AcceptedEvent
from schemas.records import PairStats, encode_event


def make_stats(
    a: str,
    b: str,
    *,
    version: int = 1,
    events: int = 1,
    participants: int | None = None,
    by_kind: Mapping[str, int] | None = None,
    by_status: Mapping[str, int] | None = None,
    by_month: Mapping[str, int] | None = None,
    cancelled: int = 0,
    updated_at: datetime | None = None,
) -> PairStats:
    """A consistent-looking PairStats snapshot for the pair a-b (codes must be canonical)."""
    low, high = sorted((a, b))
    by_kind = dict(by_kind) if by_kind is not None else ({"cultural": events} if events else {})
    by_month = dict(by_month) if by_month is not None else ({"2025-05": events} if events else {})
    by_status = dict(by_status) if by_status is not None else ({"confirmed": events} if events else {})
    if cancelled:
        by_status["cancelled"] = by_status.get("cancelled", 0) + cancelled
    months = sorted(by_month)
    return PairStats(
        pair=f"{low}-{high}",
        countries=(low, high),
        version=version,
        active_events=events,
        participants=participants if participants is not None else 10 * events,
        by_kind=by_kind,
        by_status=by_status,
        by_direction={f"{low}>{high}": events} if events else {},
        by_month=by_month,
        cancelled=cancelled,
        first_date=date.fromisoformat(months[0] + "-01") if months else None,
        last_date=date.fromisoformat(months[-1] + "-28") if months else None,
        checksum=f"{(hash((low, high, version)) % 2**64):016x}",
        updated_at=updated_at or datetime.now(UTC),
    )


class RecordMaker:
    """Kafka records of accepted events, numbered per partition as a topic would number them."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}

    def __call__(
        self,
        event: Mapping[str, Any],
        partner: str = "p1",
        *,
        partition: int = 0,
        received_at: datetime | None = None,
    ) -> tuple[int, int, bytes, bytes, list[tuple[str, bytes]]]:
        accepted = AcceptedEvent.model_validate(
            {**event, "partner_id": partner, "received_at": received_at or datetime.now(UTC)}
        )
        key, value, headers = encode_event(accepted)
        offset = self.next.get(partition, 0)
        self.next[partition] = offset + 1
        return partition, offset, key, value, headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """Run an ASGI app with uvicorn in a background thread (``with ServerThread(app) as url``)."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        config.setdefault("log_level", "warning")
        config.setdefault("timeout_graceful_shutdown", 1)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **config))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EventReader:
    """Read Server-Sent Events from an httpx streaming response, with a deadline per wait."""

    def __init__(self, response: Any) -> None:
        from handshake.cli_subscribe import SSEParser

        self.response = response
        self.parser = SSEParser()
        self.pending: list[Any] = []
        self.raw = ""
        self._chunks = response.aiter_text()

    async def chunk(self) -> str:
        text: str = await anext(self._chunks)
        self.raw += text
        self.pending.extend(self.parser.feed(text))
        return text

    async def next(self, seconds: float = 5.0) -> Any:
        import asyncio

        async with asyncio.timeout(seconds):
            while not self.pending:
                await self.chunk()
        return self.pending.pop(0)

    async def until(self, count: int, event: str = "pair", seconds: float = 5.0) -> list[Any]:
        """The next ``count`` events named ``event`` (others are skipped)."""
        import asyncio

        out: list[Any] = []
        async with asyncio.timeout(seconds):
            while len(out) < count:
                e = await self.next(seconds)
                if e.event == event:
                    out.append(e)
        return out


@contextmanager
def running_api(kafka_settings: KafkaSettings, **overrides: Any) -> Iterator[str]:
    """The production api (real Kafka snapshot source) in a uvicorn thread, once /readyz says ready."""
    import tempfile

    import httpx

    from services.api.main import build
    from services.api.settings import ApiSettings

    scratch = None
    if "api_data_dir" not in overrides:
        scratch = tempfile.TemporaryDirectory(prefix="handshake-api-")
        overrides["api_data_dir"] = scratch.name
    settings = ApiSettings(**{**kafka_settings.model_dump(), **overrides})
    try:
        with ServerThread(build(settings)) as url:
            deadline = time.monotonic() + 30
            while httpx.get(url + "/readyz").status_code != 200:
                assert time.monotonic() < deadline, "api not ready"
                time.sleep(0.05)
            yield url
    finally:
        if scratch is not None:
            scratch.cleanup()
