"""The asyncio client: `AsyncClient`, `AsyncSession`, and `Stream` (one session over a WebSocket).

Many sessions over one socket (`WS /v1/models/{name}/mux`, RNM1 binary frames) are
`rnnserve_client.mux.MuxStream`, opened by `AsyncClient.mux`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rnnserve_client._wire import (
    DEFAULT_URL,
    TRANSIENT,
    Retry,
    auth_headers,
    checked,
    open_body,
    predict_body,
    resend_after,
    version_params,
)
from rnnserve_client.errors import (
    ConnectionLostError,
    RnnServeError,
    SessionConflictError,
    SessionNotFoundError,
    StreamClosedError,
    error_from,
)
from rnnserve_client.mux import MuxStream
from rnnserve_client.types import (
    ModelInfo,
    Prediction,
    SessionInfo,
    SessionState,
    State,
    StepResult,
)

CLOSE_POLICY_VIOLATION = 1008


def ws_protocols(api_key: str | None) -> list[str]:
    """The subprotocols a stream offers: `rnnserve`, and the key when there is one.

    A header works too from Python; the subprotocol is what a browser can send, and both keep
    the key out of URLs (which land in access logs)."""
    if not api_key:
        return ["rnnserve"]
    encoded = base64.urlsafe_b64encode(api_key.encode()).decode().rstrip("=")
    return ["rnnserve", f"rnnserve.key.{encoded}"]


class AsyncClient:
    """rnnserve over HTTP and WebSockets, asyncio. Use `async with` or `await aclose()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retry = retry or Retry()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (sessions stay open on the server until their TTL)."""
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, resend: bool = True
    ) -> Any:
        """One call, resent on transient failures when `resend` (idempotent calls only)."""
        attempts = self.retry.attempts if resend else 1
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.retry.delay_s(attempt - 1, last))
            try:
                return checked(await self._http.request(method, path, json=json, params=params))
            except TRANSIENT as exc:
                last = exc
            except RnnServeError as exc:
                if not (resend and resend_after(exc, attempt)) or attempt == attempts - 1:
                    raise
                last = exc
        raise ConnectionLostError(
            f"{method} {path}: no answer after {attempts} attempts ({last!r})",
            type="connection_lost",
        )

    async def models(self) -> list[ModelInfo]:
        """Every model version the server knows, ready or not."""
        body = await self.request("GET", "/v1/models")
        return [ModelInfo.from_json(m) for m in body["models"]]

    async def model(self, name: str, *, version: int | None = None) -> ModelInfo:
        """One model's default (or pinned) version, with its card."""
        body = await self.request("GET", f"/v1/models/{name}", params=version_params(version))
        return ModelInfo.from_json(body)

    async def predict(
        self,
        name: str,
        inputs: list[Any],
        *,
        version: int | None = None,
        initial_state: list[State] | None = None,
        output: str | None = None,
        return_state: bool = False,
    ) -> Prediction:
        """Run a batch of variable-length sequences, each from its own initial state."""
        body = predict_body(
            inputs, initial_state=initial_state, output=output, return_state=return_state
        )
        answer = await self.request(
            "POST", f"/v1/models/{name}/predict", json=body, params=version_params(version)
        )
        return Prediction.from_json(answer)

    async def open(
        self, name: str, *, version: int | None = None, initial_state: State | None = None
    ) -> AsyncSession:
        """Open a session over REST (version pinned now; not resent, see `Client.open`)."""
        body = await self.request(
            "POST",
            f"/v1/models/{name}/sessions",
            json=open_body(version, initial_state),
            resend=False,
        )
        return AsyncSession(self, SessionInfo.from_json(body))

    async def session(self, session_id: str) -> AsyncSession:
        """Attach to a live session at its current seq."""
        body = await self.request("GET", f"/v1/sessions/{session_id}")
        return AsyncSession(self, SessionInfo.from_json(body))

    async def stream(self, name: str, *, version: int | None = None) -> Stream:
        """Open a new session over a WebSocket (`WS /v1/models/{name}/stream`)."""
        query = "" if version is None else f"?version={version}"
        stream = Stream(self, f"/v1/models/{name}/stream{query}")
        await stream.connect()
        return stream

    async def mux(self, name: str, *, version: int | None = None) -> MuxStream:
        """A connected multiplexed stream of model `name` (many sessions, binary frames)."""
        stream = MuxStream(self, name, version)
        await stream.connect()
        return stream

    async def resume(self, session_id: str) -> Stream:
        """Stream into an existing session (`WS /v1/sessions/{id}/stream`), at its seq."""
        stream = Stream(self, f"/v1/sessions/{session_id}/stream")
        await stream.connect()
        return stream


class AsyncSession:
    """A stateful stream over REST; `step` is exactly-once (it keeps its `seq` on resends)."""

    def __init__(self, client: AsyncClient, info: SessionInfo) -> None:
        self._client = client
        self.info = info
        self.id = info.session_id
        self.seq = info.seq

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def step(self, inputs: list[Any]) -> StepResult:
        """Apply k >= 1 steps at the session's next seq and return their outputs."""
        body = {"seq": self.seq, "inputs": inputs}
        answer = await self._client.request("POST", f"/v1/sessions/{self.id}/steps", json=body)
        result = StepResult.from_json(answer)
        self.seq = result.seq
        return result

    async def refresh(self) -> SessionInfo:
        """The session as the server has it now (its seq becomes this object's)."""
        body = await self._client.request("GET", f"/v1/sessions/{self.id}")
        self.info = SessionInfo.from_json(body)
        self.seq = self.info.seq
        return self.info

    async def state(self) -> SessionState:
        """Export the carried state (usable as `initial_state` elsewhere)."""
        body = await self._client.request("GET", f"/v1/sessions/{self.id}/state")
        return SessionState.from_json(body)

    async def reset(self, initial_state: State | None = None) -> SessionInfo:
        """Back to seq 0 and the initial state (or this one, which becomes the initial)."""
        payload = {} if initial_state is None else {"initial_state": initial_state}
        body = await self._client.request("POST", f"/v1/sessions/{self.id}/reset", json=payload)
        self.info = SessionInfo.from_json(body)
        self.seq = self.info.seq
        return self.info

    async def close(self) -> None:
        """Delete the session; one already gone counts as closed."""
        with contextlib.suppress(SessionNotFoundError):
            await self._client.request("DELETE", f"/v1/sessions/{self.id}")


class Stream:
    """One session over a WebSocket, resumed on a dropped socket without losing or doubling a step.

    `step` sends `{"seq", "inputs"}` and waits for the answer. When the socket drops, the stream
    reconnects to `/v1/sessions/{id}/stream`, reads the greeting (the session's seq) and resends
    the same message: if the step was applied before the drop the server answers it from its
    record, so the step counts once. `steps()` is the async-iterator form; `async with` closes
    the socket (the session itself lives on until its TTL, or `close_session()`).
    """

    def __init__(self, client: AsyncClient, path: str) -> None:
        self._client = client
        self._path = path
        self._socket: ClientConnection | None = None
        self.info: SessionInfo | None = None
        self.session_id = ""
        self.seq = 0
        self.closed = False

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _url(self, path: str) -> str:
        return self._client.base_url.replace("http", "ws", 1) + path

    async def _recv_json(self) -> Any:
        assert self._socket is not None
        try:
            message = await self._socket.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            # 4000 + status: the server refuses (session gone, bad key); 1008: too many bad
            # messages. Anything else (a drop, a restart's 1001/1012) is worth a reconnect.
            if code >= 4000 or code == CLOSE_POLICY_VIOLATION:
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                raise StreamClosedError(
                    f"the server closed the stream ({code} {reason})".strip(),
                    type=reason or "closed",
                    status=code,
                ) from None
            raise
        return json.loads(message)

    async def _open_socket(self, path: str) -> SessionInfo:
        self._socket = await connect(
            self._url(path),
            subprotocols=ws_protocols(self._client.api_key),  # type: ignore[arg-type]
            open_timeout=self._client.timeout_s,
        )
        greeting = await self._recv_json()
        if "error" in greeting:
            await self._socket.close()
            raise error_from(greeting, status=None)
        info = SessionInfo.from_json(greeting)
        self.info, self.session_id = info, info.session_id
        return info

    async def connect(self) -> None:
        """Open the socket on the route given at construction and read the greeting."""
        info = await self._open_socket(self._path)
        self.seq = info.seq

    async def _reconnect(self, attempt: int, error: Exception) -> None:
        await asyncio.sleep(self._client.retry.delay_s(attempt, error))
        with contextlib.suppress(OSError, ConnectionClosed, asyncio.TimeoutError, InvalidStatus):
            await self._open_socket(f"/v1/sessions/{self.session_id}/stream")

    async def step(self, inputs: list[Any]) -> StepResult:
        """Apply k >= 1 steps at the stream's next seq; resent over a new socket on a drop."""
        if self.closed:
            raise StreamClosedError("the stream is closed", type="closed")
        message = json.dumps({"seq": self.seq, "inputs": inputs})
        attempts = self._client.retry.attempts
        for attempt in range(attempts):
            try:
                assert self._socket is not None
                await self._socket.send(message)
                answer = await self._recv_json()
            except (ConnectionClosed, OSError, AssertionError) as exc:
                if attempt == attempts - 1:
                    break
                await self._reconnect(attempt, exc)
                continue
            if "error" in answer:
                error = error_from(answer, status=None)
                if isinstance(error, SessionConflictError) and attempt > 0:
                    continue  # the first copy is being applied; the next resend reads its answer
                raise error
            result = StepResult.from_json(answer)
            self.seq = result.seq
            return result
        raise ConnectionLostError(
            f"stream of session {self.session_id}: no answer after {attempts} attempts",
            type="connection_lost",
        )

    async def steps(
        self, inputs: Iterable[list[Any]] | AsyncIterable[list[Any]]
    ) -> AsyncIterator[StepResult]:
        """Send each item as one step request and yield its answer, in order.

        Breaking out of the loop sends nothing more; the socket stays usable until `aclose()`.
        """
        if isinstance(inputs, AsyncIterable):
            async for item in inputs:
                yield await self.step(item)
        else:
            for item in inputs:
                yield await self.step(item)

    async def aclose(self) -> None:
        """Close the socket cleanly (code 1000); the session stays until its TTL."""
        self.closed = True
        if self._socket is not None:
            await self._socket.close()

    async def close_session(self) -> None:
        """Close the socket and delete the session on the server."""
        await self.aclose()
        with contextlib.suppress(SessionNotFoundError):
            await self._client.request("DELETE", f"/v1/sessions/{self.session_id}")
