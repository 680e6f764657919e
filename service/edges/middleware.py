"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware): request ids, metrics, logs, keys."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.edges.errors import error_frame, response_for
from service.edges.keys import identify_key
from service.edges.ws_auth import CLOSE_UNAUTHORIZED, chosen_protocol, key_from_protocols
from service.errors import UnauthorizedError
from service.logs import request_id_var
from service.metrics import Metrics

access_log = logging.getLogger("rnnserve.access")

OPEN_PREFIXES = ("/health/", "/v2/health/", "/ui/static/", "/docs/assets/")
# pages and the schema hold no data; the page and Swagger UI send the key typed into them
OPEN_PATHS = frozenset({"/ui", "/docs", "/openapi.json"})


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is None:
        # FastAPI records only its own routes; its /openapi.json and /docs are plain ones
        routes = getattr(scope.get("app"), "routes", ())
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    return str(getattr(route, "path", "unmatched"))


class RequestContextMiddleware:
    """Give every request an id (echoed in X-Request-ID), time it, count it, log it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, access_log_enabled: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log_enabled = access_log_enabled
        # ids only need to be unique, not secret: a random per-process prefix and a counter
        # cost far less than a fresh random token per request (2% of CPU in the benchmark)
        self._id_prefix = os.urandom(4).hex() + "-"
        self._ids = itertools.count(1)
        # prometheus-client's labels() costs microseconds per call; the label sets are few
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(route, method, str(status)),
                self.metrics.request_seconds.labels(route, method),
            )
        children[0].inc()
        children[1].observe(elapsed_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        request_id = (
            incoming
            if 0 < len(incoming) <= 128 and incoming.isprintable()
            else f"{self._id_prefix}{next(self._ids):x}"
        )
        token = request_id_var.set(request_id)
        # the 500 handler runs outside this middleware, after the context variable is reset
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            # a socket's messages have no status or headers: they skip the wrapper (one
            # coroutine call per message saved on the streaming path)
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
        finally:
            elapsed = time.perf_counter() - started
            if scope["type"] == "http":
                route, method = _route_template(scope), scope["method"]
                self._observe(route, method, status, elapsed)
                if self.access_log_enabled:
                    access_log.info(
                        "%s %s %d",
                        method,
                        scope["path"],
                        status,
                        extra={"status": status, "duration_ms": round(elapsed * 1000, 3)},
                    )
            request_id_var.reset(token)


class ApiKeyMiddleware:
    """When keys are configured, every route but health needs `Bearer <key>` or `X-API-Key`."""

    def __init__(self, app: ASGIApp, *, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _identify(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        owner = identify_key(headers.get("authorization"), headers.get("x-api-key"), self.keys)
        if owner is None and scope["type"] == "websocket":
            # browsers cannot set headers on a socket: the key comes as a subprotocol
            owner = identify_key(None, key_from_protocols(scope), self.keys)
        return owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] in ("http", "websocket") else ""
        if not path or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        owner = self._identify(scope)
        if owner is None:
            error = UnauthorizedError("a valid API key is required (Authorization: Bearer <key>)")
            if scope["type"] == "websocket":
                await _refuse_socket(scope, receive, send, error)
                return
            await response_for(path, error)(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)


async def _refuse_socket(
    scope: Scope, receive: Receive, send: Send, error: UnauthorizedError
) -> None:
    """Accept, say why in-band, close 4401: closing before accepting reads as a bare 403."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": chosen_protocol(scope)})
    await send({"type": "websocket.send", "text": error_frame(error)})
    await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": error.type})
