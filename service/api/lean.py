"""Hot routes (predict, streaming steps, V2 infer) without FastAPI's per-request machinery.

FastAPI solves dependencies and validates declared parameters on every request; for a
streaming step that cost about as much as everything rnnserve does itself (measured in
process on one core: 155 us of CPU per step through a regular route, 110 us through a
LeanRoute). A `LeanRoute` keeps the route in the app and in the OpenAPI document, but calls
its endpoint with the Request alone; the endpoint reads its path and query parameters
itself, and the parameters are documented through `openapi_extra`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from starlette.responses import Response

LeanEndpoint = Callable[[Request], Awaitable[Response]]


class LeanRoute(APIRoute):
    """An APIRoute whose endpoint takes only the Request (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = cast(LeanEndpoint, self.endpoint)

        async def handle(request: Request) -> Response:
            return await endpoint(request)

        return handle


def query_version(request: Request) -> int | None:
    """`?version=N` (N >= 1); anything else is the same 422 a declared parameter would give."""
    raw = request.query_params.get("version")
    if raw is None:
        return None
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    raise RequestValidationError(
        [{"loc": ("query", "version"), "msg": "must be an integer >= 1", "type": "value_error"}]
    )


def path_parameters(*names: str) -> list[dict[str, Any]]:
    """OpenAPI entries for string path parameters."""
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


VERSION_QUERY: dict[str, Any] = {
    "name": "version",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "pin a model version (default: the highest ready one)",
}


def lean_post(router: APIRouter, path: str, **route: Any) -> Callable[[LeanEndpoint], LeanEndpoint]:
    """`@router.post(path, ...)` for a LeanRoute."""

    def register(endpoint: LeanEndpoint) -> LeanEndpoint:
        router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=LeanRoute, **route
        )
        return endpoint

    return register
