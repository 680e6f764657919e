"""The blocking client: `Client` for models and predict, `Session` for exactly-once steps."""

from __future__ import annotations

import contextlib
import time
from types import TracebackType
from typing import Any

import httpx

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
from rnnserve_client.errors import ConnectionLostError, RnnServeError, SessionNotFoundError
from rnnserve_client.types import (
    ModelInfo,
    Prediction,
    SessionInfo,
    SessionState,
    State,
    StepResult,
)


class Client:
    """rnnserve over HTTP, blocking. Use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=base_url,
            headers=auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (sessions stay open on the server until their TTL)."""
        self._http.close()

    def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, resend: bool = True
    ) -> Any:
        """One call, resent on transient failures when `resend` (idempotent calls only)."""
        attempts = self.retry.attempts if resend else 1
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.retry.delay_s(attempt - 1, last))
            try:
                return checked(self._http.request(method, path, json=json, params=params))
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

    def models(self) -> list[ModelInfo]:
        """Every model version the server knows, ready or not."""
        return [ModelInfo.from_json(m) for m in self.request("GET", "/v1/models")["models"]]

    def model(self, name: str, *, version: int | None = None) -> ModelInfo:
        """One model's default (or pinned) version, with its card."""
        body = self.request("GET", f"/v1/models/{name}", params=version_params(version))
        return ModelInfo.from_json(body)

    def predict(
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
        answer = self.request(
            "POST", f"/v1/models/{name}/predict", json=body, params=version_params(version)
        )
        return Prediction.from_json(answer)

    def open(
        self, name: str, *, version: int | None = None, initial_state: State | None = None
    ) -> Session:
        """Open a session (version pinned now). Not resent: a lost answer leaves an orphan
        session that expires with its TTL, rather than two live ones."""
        body = self.request(
            "POST",
            f"/v1/models/{name}/sessions",
            json=open_body(version, initial_state),
            resend=False,
        )
        return Session(self, SessionInfo.from_json(body))

    def session(self, session_id: str) -> Session:
        """Attach to a live session (e.g. one another process opened), at its current seq."""
        return Session(
            self, SessionInfo.from_json(self.request("GET", f"/v1/sessions/{session_id}"))
        )


class Session:
    """A stateful stream over REST. `step` is exactly-once: it keeps its `seq` across resends."""

    def __init__(self, client: Client, info: SessionInfo) -> None:
        self._client = client
        self.info = info
        self.id = info.session_id
        self.seq = info.seq

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def step(self, inputs: list[Any]) -> StepResult:
        """Apply k >= 1 steps at the session's next seq and return their outputs."""
        body = {"seq": self.seq, "inputs": inputs}
        result = StepResult.from_json(
            self._client.request("POST", f"/v1/sessions/{self.id}/steps", json=body)
        )
        self.seq = result.seq
        return result

    def refresh(self) -> SessionInfo:
        """The session as the server has it now (its seq becomes this object's)."""
        self.info = SessionInfo.from_json(self._client.request("GET", f"/v1/sessions/{self.id}"))
        self.seq = self.info.seq
        return self.info

    def state(self) -> SessionState:
        """Export the carried state (usable as `initial_state` elsewhere)."""
        body = self._client.request("GET", f"/v1/sessions/{self.id}/state")
        return SessionState.from_json(body)

    def reset(self, initial_state: State | None = None) -> SessionInfo:
        """Back to seq 0 and the initial state (or this one, which becomes the initial)."""
        payload = {} if initial_state is None else {"initial_state": initial_state}
        body = self._client.request("POST", f"/v1/sessions/{self.id}/reset", json=payload)
        self.info = SessionInfo.from_json(body)
        self.seq = self.info.seq
        return self.info

    def close(self) -> None:
        """Delete the session; one already gone (expired, or a resent delete) counts as closed."""
        with contextlib.suppress(SessionNotFoundError):
            self._client.request("DELETE", f"/v1/sessions/{self.id}")
