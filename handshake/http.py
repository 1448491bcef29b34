"""HTTP plumbing shared by ingest and api: RFC 9457 problem+json errors and request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://handshake.example/problems/"

#: RFC 9457 response documentation for OpenAPI (``responses=`` of a route).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "message"],
                "properties": {
                    "pointer": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json bodies for ``statuses``."""
    return {
        s: {"description": _TITLES.get(s, "Error"), "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
        for s in statuses
    }


class Problem(Exception):
    """Raise anywhere in a route: becomes an RFC 9457 problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str | None = None,
        title: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_ or (PROBLEM_BASE + _slug(title or _TITLES.get(status, "error")))
        self.title = title or _TITLES.get(status, "Error")
        self.errors = list(errors) if errors else None
        self.headers = headers or {}
        self.extra = extra or {}


def _slug(text: str) -> str:
    return "-".join(text.lower().split())


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": problem.type, "title": problem.title, "status": problem.status}
    body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    if problem.errors is not None:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


def _pointer(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts[0]
        rest = parts[1:]
        return ("/" + "/".join(rest)) if where == "body" else f"{where}:{'.'.join(rest)}"
    return "/" + "/".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app can produce becomes problem+json; never a stack trace."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        return problem_response(Problem(exc.status_code, detail, headers=headers), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "pointer": _pointer(e.get("loc", ())),
                "message": str(e.get("msg", "invalid")),
                "code": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        where = {p["pointer"].split(":")[0] for p in errors}
        status = 400 if where & {"query", "header"} else 422
        detail = "; ".join(f"{e['pointer']}: {e['message']}" for e in errors[:10])
        return problem_response(Problem(status, detail, errors=errors), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        return unexpected_problem(request.url.path)


def unexpected_problem(path: str) -> JSONResponse:
    """The 500 answer to an unexpected exception (call it in the ``except``): logged, no trace."""
    log.exception("unhandled error", extra={"path": path})
    return problem_response(Problem(500, "an unexpected error occurred; it was logged"), path)


class LabelCache:
    """A labelled metric's children, each looked up once: ``cache(*label_values).inc()``.

    prometheus_client's ``labels()`` validates the values and takes a lock on every call,
    a cost that showed on ingest's hottest route; the label sets seen there are few.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class RequestMetrics:
    """Prometheus request counter and latency histogram by route template and status."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self.requests = Counter(
            f"{prefix}_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def install(self, app: FastAPI, untimed: frozenset[str] = frozenset()) -> None:
        """A pure ASGI middleware (cheaper than ``@app.middleware("http")``, and streaming-safe).

        Routes in ``untimed`` (long-lived streams) are counted but not put in the latency histogram.
        """
        app.add_middleware(_MetricsMiddleware, metrics=self, untimed=untimed)


class _MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics, untimed: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.untimed = untimed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "unmatched"
            )
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status)).inc()
            if template not in self.untimed:
                self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
