"""The WebSocket limits, in one place: every route that reads client messages reads them here.

`WebSocketGuard.receive()` stands in for `websocket.receive()`, inside
`async with WebSocketGuard.for_socket(websocket, owner) as guard:`. It returns the next data
message, or None once the client left or a limit closed the socket. A message over
`ws_max_message_bytes`, a connection over `ws_max_messages_per_s`, an API key (all its
sockets together) over `ws_max_messages_per_s_per_key`, or a socket silent for
`ws_idle_timeout_s` gets an in-band error frame (the v1 error shape) and then a clean close
with 4000 + the HTTP status: 4413, 4429, 4408. Each refusal is counted in
`rnnserve_limit_rejections_total{limit=...}`.

uvicorn's own frame limit is set to `PROTOCOL_SIZE_FACTOR` times the message limit (see
`protocol_max_size`): a message up to that size is read and answered in-band; a larger one is
refused by the protocol layer with close code 1009 before it is buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.edges.errors import close_code_for, count_rejection, error_frame
from service.errors import IdleTimeoutError, LimitExceededError, RateLimitedError, RnnServeError
from service.metrics import Metrics
from service.settings import Settings

PROTOCOL_SIZE_FACTOR = 4
KEY_RATES_STATE = "ws_key_rates"


def protocol_max_size(settings: Settings) -> int:
    """uvicorn's `ws_max_size`: the largest frame the protocol layer buffers at all."""
    return settings.ws_max_message_bytes * PROTOCOL_SIZE_FACTOR


@dataclass(frozen=True, slots=True)
class WebSocketLimits:
    """The per-message limits, from the settings."""

    max_message_bytes: int
    max_messages_per_s: float
    max_messages_per_s_per_key: float
    idle_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WebSocketLimits:
        """The `ws_*` settings."""
        return cls(
            max_message_bytes=settings.ws_max_message_bytes,
            max_messages_per_s=settings.ws_max_messages_per_s,
            max_messages_per_s_per_key=settings.ws_max_messages_per_s_per_key,
            idle_timeout_s=settings.ws_idle_timeout_s,
        )


class TokenBucket:
    """`rate` tokens a second, holding at most one second's worth (the allowed burst)."""

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be."""
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class KeyRates:
    """One bucket per API key fingerprint, app-wide; keyless clients (keys off) have none.

    Owners are fingerprints of configured keys (unknown keys never get this far), so the dict
    holds at most one bucket per configured key. Without keys every client would share one
    budget, and the server's whole streaming capacity would hang on one setting: keyless
    deployments get the per-connection limit only."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str | None, TokenBucket] = {}

    def take(self, owner: str | None) -> float:
        """`TokenBucket.take` on the owner's bucket (0.0 for a keyless client)."""
        if owner is None:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(owner)
        if bucket is None:
            bucket = self._buckets[owner] = TokenBucket(self._rate, now)
        return bucket.take(now)


def message_bytes(message: Message) -> int:
    """The payload size of a received text or binary message."""
    text = message.get("text")
    if text is not None:
        # characters <= UTF-8 bytes <= 4 x characters: encode only when it can matter
        return len(text) if text.isascii() else len(text.encode())
    return len(message.get("bytes") or b"")


class WebSocketGuard:
    """Applies the limits to one accepted socket's received messages."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        limits: WebSocketLimits,
        key_rates: KeyRates,
        metrics: Metrics,
        owner: str | None,
        render: Callable[[RnnServeError], str] = error_frame,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._websocket = websocket
        self._render = render
        self._limits = limits
        self._key_rates = key_rates
        self._metrics = metrics
        self._owner = owner
        self._clock = clock
        self._bucket = TokenBucket(limits.max_messages_per_s, clock())
        # idle: one timer per socket that re-arms itself, checked against the last message's
        # time (a timeout around every receive costs ~20 us a message, a step's tenth)
        self._last_message_at = clock()
        self._waiting = False
        self._closed = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_refusal: asyncio.Task[None] | None = None

    @classmethod
    def for_socket(
        cls,
        websocket: WebSocket,
        owner: str | None,
        render: Callable[[RnnServeError], str] = error_frame,
    ) -> WebSocketGuard:
        """A guard with the app's settings, metrics and per-key buckets; `render` writes the
        in-band error in the route's own message shape (default: the v1 error body)."""
        state = websocket.app.state
        engine = state.engine
        return cls(
            websocket,
            limits=WebSocketLimits.from_settings(engine.settings),
            key_rates=getattr(state, KEY_RATES_STATE),
            metrics=engine.metrics,
            owner=owner,
            render=render,
        )

    async def receive(self) -> Message | None:
        """The next message within the limits; None when the client left or a limit closed
        the socket (its error frame already sent)."""
        if self._idle_timer is None and not self._closed:
            self._arm_idle(self._limits.idle_timeout_s)
        self._waiting = True
        try:
            message = await self._websocket.receive()
        except WebSocketDisconnect:
            message = {"type": "websocket.disconnect"}
        finally:
            self._waiting = False
        if message["type"] == "websocket.disconnect" or self._closed:
            self._stop_idle()
            return None
        error = self._check(message)
        if error is not None:
            await self.refuse(error)
            return None
        return message

    async def __aenter__(self) -> WebSocketGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """The route is done with the socket: no idle timer outlives it."""
        self._stop_idle()

    def _arm_idle(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(delay_s, self._idle_check)

    def _stop_idle(self) -> None:
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_check(self) -> None:
        silent_s = self._clock() - self._last_message_at
        idle_s = self._limits.idle_timeout_s
        gone = WebSocketState.DISCONNECTED
        ws = self._websocket
        if self._closed or gone in (ws.client_state, ws.application_state):
            return
        if not self._waiting or silent_s < idle_s:
            # a message came meanwhile, or the route is still answering one
            self._arm_idle(max(idle_s - silent_s, 0.01) if self._waiting else idle_s)
            return
        self._idle_timer = None
        error = IdleTimeoutError(f"no message for {idle_s:g} s: closing", limit="ws_idle_timeout")
        self._idle_refusal = asyncio.get_running_loop().create_task(self.refuse(error))

    def _check(self, message: Message) -> RnnServeError | None:
        size = message_bytes(message)
        limits = self._limits
        if size > limits.max_message_bytes:
            return LimitExceededError(
                f"message of {size} bytes, the limit is {limits.max_message_bytes}",
                limit="ws_message_bytes",
                detail={"limit": limits.max_message_bytes},
            )
        now = self._last_message_at = self._clock()
        wait_s = self._bucket.take(now)
        if wait_s > 0:
            return RateLimitedError(
                f"over {limits.max_messages_per_s:g} messages a second on this connection",
                limit="ws_rate",
                retry_after_s=wait_s,
            )
        wait_s = self._key_rates.take(self._owner)
        if wait_s > 0:
            return RateLimitedError(
                f"over {limits.max_messages_per_s_per_key:g} messages a second for this API key",
                limit="ws_key_rate",
                retry_after_s=wait_s,
            )
        return None

    async def refuse(self, error: RnnServeError) -> None:
        """Say why in-band, count it, close with 4000 + its HTTP status."""
        self._stop_idle()
        count_rejection(self._metrics, error)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self._websocket.send_text(self._render(error))
            await self._websocket.close(code=close_code_for(error), reason=error.type)
