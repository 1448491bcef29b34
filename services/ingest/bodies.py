"""Request bodies and connection hygiene: media types, reading under a size limit, closing a
connection whose body was not read, JSON answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handshake.http import Problem
from services.ingest.domain import BodyError

JSON = "application/json"
NDJSON = "application/x-ndjson"


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


def body_problem(exc: BodyError) -> Problem:
    return Problem(
        exc.status, exc.message, errors=[{"pointer": "", "message": exc.message, "code": exc.code}]
    )


def json_response(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


# nginx's lingering close (lingering_time 30 s, lingering_timeout 5 s), scaled to one request
LINGER_SECONDS = 5.0  # at most this long spent discarding after the answer
LINGER_IDLE_SECONDS = 1.0  # and give up as soon as nothing arrives for this long


class BodyTracker:
    """Whether a request's body has been read whole, and how much of it arrived: ``receive`` wrapped."""

    __slots__ = ("_receive", "read", "received")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        headers = dict(scope.get("headers") or ())
        # no body declared: nothing is left to read before answering
        self.read = (
            b"transfer-encoding" not in headers and headers.get(b"content-length", b"0").strip() == b"0"
        )
        self.received = 0
        self._receive = receive

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self.read = True
        else:
            self.received += len(message.get("body", b""))
        return message


async def linger(body: BodyTracker, budget: int) -> None:
    """Read and discard what is left of a request body after the answer was sent.

    A client that writes its whole body before reading (Python's urllib, many partner scripts)
    would otherwise meet a closed socket while still writing: the kernel answers with a reset
    and the client never reads the 413 waiting for it. Discarding costs no memory; it stops at
    ``budget`` bytes of body in all, after :data:`LINGER_SECONDS`, or after
    :data:`LINGER_IDLE_SECONDS` without data, so an endless upload still cannot hold the
    connection.
    """
    deadline = time.monotonic() + LINGER_SECONDS
    while not body.read and body.received < budget:
        wait = min(deadline - time.monotonic(), LINGER_IDLE_SECONDS)
        if wait <= 0:
            return
        try:
            await asyncio.wait_for(body.receive(), wait)
        except TimeoutError:
            return


def closing_send(send: Send, body: BodyTracker, linger_bytes: int) -> Send:
    """``send`` for an answer that may come before the body was read whole: such an answer says
    ``Connection: close``, and the connection closes only after :func:`linger`."""
    lingering = False

    async def send_closing(message: Message) -> None:
        nonlocal lingering
        if message["type"] == "http.response.start" and not body.read:
            lingering = True
            kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            message = {**message, "headers": [*kept, (b"connection", b"close")]}
        elif message["type"] == "http.response.body" and lingering and not message.get("more_body", False):
            # the whole answer goes out now; the server closes the connection when it completes
            await send({**message, "more_body": True})
            await linger(body, linger_bytes)
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_closing


class CloseUnreadBody:
    """Answers sent before the request body was read whole (401, 413, 415, 429 ...) close the connection.

    Otherwise the server, having answered, keeps reading and discarding the rest of the
    upload to reuse the connection: a client could stream an endless chunked body (even
    with no valid key) and hold the connection and bandwidth for as long as it likes. Before
    closing, up to ``linger_bytes`` of body in all are read and discarded (:func:`linger`), so
    a client that writes everything first still reads the answer.
    """

    def __init__(self, app: ASGIApp, linger_bytes: int) -> None:
        self.app = app
        self.linger_bytes = linger_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = BodyTracker(scope, receive)
        await self.app(scope, body.receive, closing_send(send, body, self.linger_bytes))
