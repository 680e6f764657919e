"""Connection deadlines uvicorn lacks: slowloris and silent sockets are cut off.

uvicorn arms its keep-alive timer only after a response: a socket that connects and never
speaks, or one that trickles a request a byte at a time, holds its connection (and a file
descriptor) for ever. `guarded_http_protocol` returns uvicorn's httptools protocol with two
deadlines added:

- `idle_timeout_s` from the connection's start until the first byte of a request;
- `request_timeout_s` from a request's first byte until its headers and body are all in.

A request still receiving its headers at the deadline gets `408 Request Timeout` and the
connection closes; one whose body is late has its connection closed (the route sees the
client leave, as with any disconnect). Either is counted in
`rnnserve_limit_rejections_total{limit="idle_timeout"|"request_timeout"}`. After a request,
uvicorn's own keep-alive timeout (`timeout_keep_alive`, set to `idle_timeout_s` too) applies.
WebSocket upgrades drop the deadlines: the socket's limits are in ws_guard.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.metrics import Metrics

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 28\r\nconnection: close\r\n\r\nrequest not received in time"
)


class DeadlineHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with an idle and a request deadline (class attributes)."""

    idle_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    metrics: Metrics | None = None

    _deadline: TimerHandle | None = None
    _receiving_headers = False

    def _arm(self, seconds: float, limit: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, limit)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, limit: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.metrics is not None:
            self.metrics.reject(limit)
        if self._receiving_headers or limit == "idle_timeout":
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the idle deadline with the connection."""
        super().connection_made(transport)
        self._arm(self.idle_timeout_s, "idle_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline outlives its connection."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request's first byte: its whole request must arrive by the request deadline."""
        super().on_message_begin()
        self._receiving_headers = True
        self._arm(self.request_timeout_s, "request_timeout")

    def on_headers_complete(self) -> None:
        """Headers in; the body still has the rest of the request deadline."""
        self._receiving_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is in: the app answers in its own time (keep-alive follows)."""
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket protocol takes the transport over, with its own limits."""
        self._disarm()
        super().handle_websocket_upgrade()


def guarded_http_protocol(
    *, idle_timeout_s: float, request_timeout_s: float, metrics: Metrics
) -> type[DeadlineHttpProtocol]:
    """The protocol class for uvicorn's `http=` with these deadlines and this app's metrics."""
    return type(
        "GuardedHttpProtocol",
        (DeadlineHttpProtocol,),
        {
            "idle_timeout_s": idle_timeout_s,
            "request_timeout_s": request_timeout_s,
            "metrics": metrics,
        },
    )
