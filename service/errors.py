"""One exception hierarchy for the service core; `service/api/errors.py` maps it to HTTP."""

from __future__ import annotations

from typing import Any


class RnnServeError(Exception):
    """Base of every error the core raises on purpose. `type` is stable and machine-readable."""

    type = "error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInputError(RnnServeError):
    """The request is well-formed JSON but its tensors or fields make no sense for the model."""

    type = "invalid_input"


class NotStreamableError(InvalidInputError):
    """The model cannot carry state step by step (bidirectional)."""

    type = "not_streamable"


class LimitExceededError(RnnServeError):
    """Body, batch or sequence over the configured limits."""

    type = "limit_exceeded"


class NotFoundError(RnnServeError):
    """Base for unknown things."""

    type = "not_found"


class ModelNotFoundError(NotFoundError):
    """No such model name or version in the repository."""

    type = "model_not_found"


class SessionNotFoundError(NotFoundError):
    """No such session: never existed, expired, deleted, or owned by another key."""

    type = "session_not_found"


class SessionConflictError(RnnServeError):
    """A step arrived out of order, or lost a race for its `seq`."""

    type = "session_conflict"

    def __init__(self, message: str, *, expected_seq: int) -> None:
        super().__init__(message, detail={"expected_seq": expected_seq})
        self.expected_seq = expected_seq


class RetryLaterError(RnnServeError):
    """Base for errors a client should retry after `retry_after_s`."""

    type = "retry_later"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.retry_after_s = retry_after_s


class QueueFullError(RetryLaterError):
    """The model's request queue is full."""

    type = "queue_full"


class TooManySessionsError(RetryLaterError):
    """The live-session cap (global or per key) is reached."""

    type = "too_many_sessions"


class ModelUnavailableError(RetryLaterError):
    """The model exists in the repository but failed to load."""

    type = "model_unavailable"


class StoreUnavailableError(RetryLaterError):
    """The session store cannot be reached right now."""

    type = "store_unavailable"


class NotReadyError(RetryLaterError):
    """The server is starting or shutting down."""

    type = "not_ready"


class NotSupportedError(RnnServeError):
    """A protocol extension or feature rnnserve does not implement (named in the message)."""

    type = "not_supported"


class UnauthorizedError(RnnServeError):
    """Missing or unknown API key."""

    type = "unauthorized"


class InternalError(RnnServeError):
    """Something failed inside the server (logged with its traceback); said in-band on streams
    that outlive one failure."""

    type = "internal_error"


class RepositoryError(RnnServeError):
    """A model directory is broken: bad card, missing or corrupt graph, sha mismatch."""

    type = "repository_error"


class ProviderUnavailableError(RepositoryError):
    """A model cannot run on the execution provider `RNNSERVE_REQUIRE_PROVIDER` demands."""

    type = "provider_unavailable"
