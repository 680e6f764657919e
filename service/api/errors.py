"""The one place where core errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service import errors
from service.codecs import dump_json

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499

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
    errors.NotSupportedError: 501,
}


def status_for(exc: errors.RnnServeError) -> int:
    """Walk the class hierarchy to the nearest mapped class."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def is_v2(path: str) -> bool:
    """Open Inference Protocol routes answer errors in the protocol's own shape."""
    return path == "/v2" or path.startswith("/v2/")


def error_response(
    path: str,
    status: int,
    type_: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render `{"error": {...}}` (v1) or `{"error": "..."}` (v2)."""
    if is_v2(path):
        body: dict[str, Any] = {"error": message}
    else:
        body = {"error": {"type": type_, "message": message, "detail": detail}}
    return Response(dump_json(body), status, headers=headers, media_type="application/json")


def response_for(path: str, exc: errors.RnnServeError) -> Response:
    """The HTTP answer to a core error, with Retry-After where the client should come back."""
    headers = None
    if isinstance(exc, errors.RetryLaterError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    if isinstance(exc, errors.UnauthorizedError):
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(path, status_for(exc), exc.type, exc.message, exc.detail, headers)


async def _core_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.RnnServeError)
    return response_for(request.url.path, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return error_response(request.url.path, 422, "validation_error", message, detail)


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
    app.add_exception_handler(errors.RnnServeError, _core_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
