"""The ASGI response of ``GET /v1/stream``: writes hub frames to one client.

A plain ASGI response (not BaseHTTPMiddleware-wrapped, not StreamingResponse) so it can stop in
every case: the client disconnects (``http.disconnect``) or the hub drops it (its queue overflowed;
cancelling a write blocked on a full socket closes the connection). The
subscription is always removed on exit.
"""

from __future__ import annotations

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.api.hub import HEARTBEAT, StreamHub, Subscription


def frame_schema(event: str, item: str) -> dict[str, object]:
    """One Server-Sent Event of a stream (OpenAPI 3.2 ``itemSchema``): ``event: <event>`` carries
    the component ``item``; ``hello`` and ``reset`` carry the current sequence number (and a reason)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["hello", "reset", event]},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "oneOf": [
                        {"$ref": f"#/components/schemas/{item}"},
                        {
                            "type": "object",
                            "required": ["sequence"],
                            "properties": {"sequence": {"type": "integer"}, "reason": {"type": "string"}},
                        },
                    ]
                },
            },
        },
    }


RETRY = b"retry: 2000\n\n"


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        hub: StreamHub,
        sub: Subscription,
        initial: list[bytes],
        heartbeat: float,
    ) -> None:
        super().__init__(status_code=200, media_type=self.media_type)
        self.hub = hub
        self.sub = sub
        self.initial = initial
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as tg:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                async def until_dropped() -> None:
                    # also when a write is blocked on a client that stopped reading
                    await self.sub.gone.wait()
                    await anyio.sleep(0.05)  # let a non-blocked writer finish the response
                    tg.cancel_scope.cancel()

                tg.start_soon(until_disconnect)
                tg.start_soon(until_dropped)
                await self._write(send)
                tg.cancel_scope.cancel()
        finally:
            self.hub.unsubscribe(self.sub)

    async def _write(self, send: Send) -> None:
        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await emit(RETRY + b"".join(self.initial))
        self.initial = []
        while True:
            if not await self.sub.wait(self.heartbeat):
                await emit(HEARTBEAT)
                continue
            if self.sub.dropped:
                # queue overflowed: close; the client reconnects with Last-Event-ID
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            items = self.sub.take()
            if items:
                await emit(b"".join(e.frame for e in items))
