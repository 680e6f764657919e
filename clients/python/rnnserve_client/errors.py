"""Typed errors: every server error body `{"error": {"type", "message", "detail"}}` becomes one.

The class follows the server's `type` (stable, machine-readable), falling back on the HTTP
status for types this client does not know; `type`, `message` and `detail` are kept as sent.
"""

from __future__ import annotations

from typing import Any


class RnnServeError(Exception):
    """An error answered by the server (or, for the subclasses below, met on the way)."""

    def __init__(
        self,
        message: str,
        *,
        type: str = "error",
        status: int | None = None,
        detail: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status
        self.detail = detail
        self.request_id = request_id

    def __str__(self) -> str:
        status = f"{self.status} " if self.status else ""
        return f"[{status}{self.type}] {self.message}"


class InvalidInputError(RnnServeError):
    """400: a malformed tensor, shape or field."""


class NotStreamableError(InvalidInputError):
    """400: the model cannot run step by step (e.g. bidirectional)."""


class UnauthorizedError(RnnServeError):
    """401 (4401 on a WebSocket): a missing or wrong API key."""


class NotFoundError(RnnServeError):
    """404: an unknown model, version or session."""


class ModelNotFoundError(NotFoundError):
    """404: no such model or version."""


class SessionNotFoundError(NotFoundError):
    """404: the session expired, was deleted, or belongs to another key."""


class SessionConflictError(RnnServeError):
    """409: a step out of order; `expected_seq` is the seq the session expects next."""

    @property
    def expected_seq(self) -> int | None:
        """The server's next expected seq, from `detail.expected_seq`."""
        if isinstance(self.detail, dict) and isinstance(self.detail.get("expected_seq"), int):
            seq: int = self.detail["expected_seq"]
            return seq
        return None


class LimitExceededError(RnnServeError):
    """413: body, batch or steps over the server's limits."""


class RequestValidationError(RnnServeError):
    """422: the request does not match the route's schema."""


class RetryLaterError(RnnServeError):
    """429: queue or session cap full; come back after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class UnavailableError(RetryLaterError):
    """503: model unavailable, server not ready, or the session store down."""


class ServerError(RnnServeError):
    """5xx other than 503: the server failed (its log has the request id)."""


class ConnectionLostError(RnnServeError):
    """No answer after every retry: timeouts or dropped connections."""


class StreamClosedError(RnnServeError):
    """The WebSocket was closed by the server; `status` is the close code."""


BY_TYPE: dict[str, type[RnnServeError]] = {
    "invalid_input": InvalidInputError,
    "not_streamable": NotStreamableError,
    "unauthorized": UnauthorizedError,
    "not_found": NotFoundError,
    "model_not_found": ModelNotFoundError,
    "session_not_found": SessionNotFoundError,
    "session_conflict": SessionConflictError,
    "limit_exceeded": LimitExceededError,
    "validation_error": RequestValidationError,
    "retry_later": RetryLaterError,
    "queue_full": RetryLaterError,
    "too_many_sessions": RetryLaterError,
    "model_unavailable": UnavailableError,
    "store_unavailable": UnavailableError,
    "not_ready": UnavailableError,
}
BY_STATUS: dict[int, type[RnnServeError]] = {
    400: InvalidInputError,
    401: UnauthorizedError,
    404: NotFoundError,
    409: SessionConflictError,
    413: LimitExceededError,
    422: RequestValidationError,
    429: RetryLaterError,
    503: UnavailableError,
}


def error_from(
    body: Any,
    *,
    status: int | None,
    retry_after_s: float | None = None,
    request_id: str | None = None,
) -> RnnServeError:
    """The typed error for a v1 error body (HTTP answer or in-band WebSocket frame)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        type_ = str(error.get("type", "error"))
        message = str(error.get("message", ""))
        detail = error.get("detail")
        if retry_after_s is None and isinstance(error.get("retry_after_s"), int | float):
            retry_after_s = float(error["retry_after_s"])
    else:
        type_, message, detail = "error", str(error if error is not None else body), None
    cls = BY_TYPE.get(type_) or BY_STATUS.get(status or 0)
    if cls is None:
        cls = ServerError if status and status >= 500 else RnnServeError
    if issubclass(cls, RetryLaterError):
        return cls(
            message,
            type=type_,
            status=status,
            detail=detail,
            request_id=request_id,
            retry_after_s=retry_after_s,
        )
    return cls(message, type=type_, status=status, detail=detail, request_id=request_id)
