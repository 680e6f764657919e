"""What the sync and async clients share: retry policy, request bodies, answer checking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from rnnserve_client.errors import (
    RetryLaterError,
    RnnServeError,
    SessionConflictError,
    error_from,
)

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently idempotent calls are resent.

    Resent: timeouts and connection errors (a step keeps its `seq`, so the server answers a
    resent step from its record instead of applying it twice), and 429/503 answers, after
    their Retry-After (capped at `max_backoff_s`).
    """

    attempts: int = 5
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def delay_s(self, attempt: int, error: Exception | None = None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (0-based `attempt`)."""
        if isinstance(error, RetryLaterError) and error.retry_after_s is not None:
            return min(error.retry_after_s, self.max_backoff_s)
        return float(min(self.backoff_s * 2**attempt, self.max_backoff_s))


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The key as the server reads it over HTTP."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def checked(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer (None for 204), or the typed error the server sent."""
    if response.is_success:
        return None if response.status_code == 204 or not response.content else response.json()
    try:
        body: Any = response.json()
    except ValueError:
        body = {"error": {"type": "http_error", "message": response.text}}
    retry_after = response.headers.get("retry-after")
    raise error_from(
        body,
        status=response.status_code,
        retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
        request_id=response.headers.get("x-request-id"),
    )


def resend_after(error: RnnServeError, attempt: int) -> bool:
    """Whether an error answer means: send the same request again.

    429/503 always (nothing was applied). A 409 only on a resend: the first copy of the step
    may still be in flight or may have just been applied, and the next resend gets the
    recorded answer; a 409 to the first copy is a real conflict.
    """
    if isinstance(error, RetryLaterError):
        return True
    return isinstance(error, SessionConflictError) and attempt > 0


TRANSIENT = (httpx.TimeoutException, httpx.TransportError)


def predict_body(
    inputs: list[Any],
    *,
    initial_state: list[dict[str, Any]] | None,
    output: str | None,
    return_state: bool,
) -> dict[str, Any]:
    """The predict request, leaving out what the server defaults."""
    body: dict[str, Any] = {"inputs": inputs}
    if initial_state is not None:
        body["initial_state"] = initial_state
    if output is not None:
        body["output"] = output
    if return_state:
        body["return_state"] = True
    return body


def open_body(version: int | None, initial_state: dict[str, Any] | None) -> dict[str, Any]:
    """The session-open request."""
    body: dict[str, Any] = {}
    if version is not None:
        body["version"] = version
    if initial_state is not None:
        body["initial_state"] = initial_state
    return body


def version_params(version: int | None) -> dict[str, int]:
    """`?version=N` when pinned."""
    return {} if version is None else {"version": version}
