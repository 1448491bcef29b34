"""The hottest route served ahead of the middleware stack, with the stack's behaviour inline."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from handshake.http import LabelCache, Problem, RequestMetrics, problem_response, unexpected_problem
from services.ingest.bodies import BodyTracker, closing_send


class FastPath:
    """Serves one hot route ahead of the whole middleware stack, with the stack's behaviour.

    ``POST /v1/events`` passed seven ASGI layers per request (server errors, FastAPI's telemetry
    and body limit, request metrics, connection hygiene, exception handlers, routing), each a
    coroutine and a ``send`` wrapper. Here the same handler runs with what those layers do for
    it, inline: a :class:`Problem` becomes problem+json, anything else a logged 500 problem,
    an answer sent before the body was read whole closes the connection (see
    :class:`CloseUnreadBody`), and the request is counted and timed under its route template.
    Every other request goes down the stack unchanged.
    """

    def __init__(
        self, app: ASGIApp, path: str, method: str, handler: Any, metrics: RequestMetrics, linger_bytes: int
    ) -> None:
        self.app = app
        self.linger_bytes = linger_bytes
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
        # answered before the body was read whole: close, after a lingering read (bodies.linger)
        answer = send if body.read else closing_send(send, body, self.linger_bytes)
        try:
            await response(scope, receive, answer)
        finally:
            self.requests(self.method, self.path, str(response.status_code)).inc()
            self.latency.observe(time.perf_counter() - started)


def serve_first(
    app: FastAPI, path: str, method: str, handler: Any, metrics: RequestMetrics, linger_bytes: int
) -> None:
    """Put a :class:`FastPath` for ``handler`` at the top of ``app``'s middleware stack."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return FastPath(build(), path, method, handler, metrics, linger_bytes)

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]
