"""Pure ASGI middleware (no BaseHTTPMiddleware, which would buffer and outlive the SSE stream)."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from handshake.http import Problem, problem_response

#: Paths that never need a token: liveness, and the dashboard shell and its static assets
#: (they contain no data; the page asks for a token when the API answers 401).
PUBLIC_PATHS = frozenset({"/healthz", "/"})
PUBLIC_PREFIXES = ("/static/",)
#: The stream routes, the only ones that also accept ``?access_token=`` (EventSource cannot send headers).
QUERY_TOKEN_PATHS = frozenset({"/v1/stream", "/v1/stream/events"})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class TokenAuth:
    """Bearer tokens on every non-public path when tokens are configured."""

    def __init__(self, app: ASGIApp, tokens: tuple[str, ...]) -> None:
        self.app = app
        self.tokens = tuple(t.encode() for t in tokens)

    def _valid(self, token: str) -> bool:
        given = token.encode()
        ok = False
        for t in self.tokens:  # no early exit: constant time over the token list
            ok |= hmac.compare_digest(given, t)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        token: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    token = rest.strip()
                break
        if token is None and scope["path"] in QUERY_TOKEN_PATHS:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token")
            token = values[0] if values else None
        if token is not None and self._valid(token):
            await self.app(scope, receive, send)
            return
        if token is None:
            detail, challenge = (
                "a bearer token is required (Authorization: Bearer <token>)",
                'Bearer realm="handshake"',
            )
        else:
            detail = "the bearer token is not valid"
            challenge = 'Bearer realm="handshake", error="invalid_token"'
        response = problem_response(
            Problem(401, detail, headers={"WWW-Authenticate": challenge}), scope["path"]
        )
        await response(scope, receive, send)
