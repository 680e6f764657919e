"""The one place where domain errors become wire errors: v1 JSON, V2 JSON, WebSocket frames.

One table maps error classes to statuses (walking the class hierarchy); each edge renders the
same error in its own shape. Anything unexpected is logged with its traceback and answered with
a generic 500 carrying the request id: internals never leak.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service import errors
from service.edges.mux_wire import MuxStatus

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
WS_CLOSE_BASE = 4000  # a WebSocket closed for an error closes with 4000 + its HTTP status

STATUS_BY_ERROR: dict[type[errors.RnnServeError], int] = {
    errors.InvalidInputError: 400,
    errors.UnauthorizedError: 401,
    errors.NotFoundError: 404,
    errors.SessionConflictError: 409,
    errors.LimitExceededError: 413,
    errors.RetryLaterError: 429,
    errors.ModelUnavailableError: 503,
    errors.StoreUnavailableError: 503,
    errors.NotReadyError: 503,
    errors.RepositoryError: 500,
    errors.InternalError: 500,
    errors.NotSupportedError: 501,
}


T = TypeVar("T")

# a record of a mux step frame answers a status instead of an HTTP error
MUX_STATUS_BY_ERROR: dict[type[errors.RnnServeError], MuxStatus] = {
    errors.SessionConflictError: MuxStatus.CONFLICT,
    errors.NotFoundError: MuxStatus.GONE,
    errors.InvalidInputError: MuxStatus.INVALID,
    errors.LimitExceededError: MuxStatus.OVER_LIMIT,
    errors.QueueFullError: MuxStatus.OVER_LIMIT,
    errors.TooManySessionsError: MuxStatus.OVER_LIMIT,
    errors.RetryLaterError: MuxStatus.UNAVAILABLE,
}


def _nearest(exc: errors.RnnServeError, table: dict[type[errors.RnnServeError], T]) -> T | None:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return None


def status_for(exc: errors.RnnServeError) -> int:
    """Walk the class hierarchy to the nearest mapped class."""
    status = _nearest(exc, STATUS_BY_ERROR)
    return 500 if status is None else status


def mux_status_for(exc: errors.RnnServeError) -> MuxStatus:
    """The status of a mux record that failed with `exc` (retry later when unmapped)."""
    status = _nearest(exc, MUX_STATUS_BY_ERROR)
    return MuxStatus.UNAVAILABLE if status is None else status


def is_v2(path: str) -> bool:
    """Open Inference Protocol routes answer errors in the protocol's own shape."""
    return path == "/v2" or path.startswith("/v2/")


def v1_error(type_: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The v1 error object (HTTP bodies and WebSocket frames)."""
    return {"error": {"type": type_, "message": message, "detail": detail}}


def error_response(
    path: str,
    status: int,
    type_: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render `{"error": {...}}` (v1) or `{"error": "..."}` (v2)."""
    body = {"error": message} if is_v2(path) else v1_error(type_, message, detail)
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def response_for(path: str, exc: errors.RnnServeError) -> Response:
    """The HTTP answer to a domain error, with Retry-After where the client should come back."""
    headers = None
    if isinstance(exc, errors.RetryLaterError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    if isinstance(exc, errors.UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(path, status_for(exc), exc.type, exc.message, exc.detail, headers)


def error_frame(exc: errors.RnnServeError) -> str:
    """The in-band WebSocket error message, shaped like the v1 HTTP error body."""
    body = v1_error(exc.type, exc.message, exc.detail)
    if isinstance(exc, errors.RetryLaterError):
        body["error"]["retry_after_s"] = exc.retry_after_s
    return orjson.dumps(body).decode()


def close_code_for(exc: errors.RnnServeError) -> int:
    """The WebSocket close code for an error that ends a stream: 4000 + the HTTP status."""
    return WS_CLOSE_BASE + status_for(exc)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.RnnServeError)
    return response_for(request.url.path, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    # routes parse their own inputs; this only catches what FastAPI itself validates
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return error_response(request.url.path, 400, errors.InvalidInputError.type, message, detail)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(
        request.url.path, exc.status_code, type_, str(exc.detail), None, dict(exc.headers or {})
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    # nobody reads this answer; 499 (nginx's "client closed request") keeps it out of the 5xx
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.exception(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        extra={"request_id": request_id},
    )
    return error_response(
        request.url.path,
        500,
        "internal_error",
        f"internal error (request id {request_id})",
        headers={"X-Request-ID": request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on an app."""
    app.add_exception_handler(errors.RnnServeError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
