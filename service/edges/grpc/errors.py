"""The one table from core errors to gRPC status codes (the HTTP table is service/api/errors.py)."""

from __future__ import annotations

import grpc

from service import errors

CODE_BY_ERROR: dict[type[errors.RnnServeError], grpc.StatusCode] = {
    errors.InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnauthorizedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.SessionConflictError: grpc.StatusCode.ABORTED,
    errors.LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TooManySessionsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RetryLaterError: grpc.StatusCode.UNAVAILABLE,
    errors.NotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
    errors.RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.IdleTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.RepositoryError: grpc.StatusCode.INTERNAL,
    errors.InferenceError: grpc.StatusCode.INTERNAL,
}


def code_for(exc: errors.RnnServeError) -> grpc.StatusCode:
    """Walk the class hierarchy to the nearest mapped class."""
    for cls in type(exc).__mro__:
        if cls in CODE_BY_ERROR:
            return CODE_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def retry_after_metadata(exc: errors.RnnServeError) -> tuple[tuple[str, str], ...]:
    """`retry-after` trailing metadata for errors a client should retry later."""
    if isinstance(exc, errors.RetryLaterError):
        return (("retry-after", str(max(1, round(exc.retry_after_s)))),)
    return ()
