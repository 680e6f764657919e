"""Request plumbing shared by the HTTP routes: the engine, the caller, bounded bodies, JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from service.edges.http.codec import JsonBody, parse_body, parse_json
from service.edges.wire import dump_json, parse_version
from service.engine import Engine
from service.errors import LimitExceededError


def engine_of(connection: HTTPConnection) -> Engine:
    """The app's engine, built in the lifespan (requests and WebSockets alike)."""
    engine: Engine = connection.app.state.engine
    return engine


async def get_engine(request: Request) -> Engine:
    """`engine_of` as a dependency. Async on purpose: FastAPI runs a plain `def` dependency in
    a worker thread, and that hop costs more than a whole streaming step."""
    return engine_of(request)


EngineDep = Annotated[Engine, Depends(get_engine)]


def owner_of(connection: HTTPConnection) -> str | None:
    """The API key fingerprint set by ApiKeyMiddleware, or None when keys are off."""
    owner: str | None = connection.scope.get("state", {}).get("owner")
    return owner


def query_version(connection: HTTPConnection) -> int | None:
    """`?version=N`, parsed by the one rule every route shares."""
    return parse_version(connection.query_params.get("version"))


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceededError(
            f"body of {declared} bytes, the limit is {limit}", limit="body_bytes"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceededError(f"body over the limit of {limit} bytes", limit="body_bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, engine: Engine) -> Any:
    """Read and parse a JSON body within the configured limit."""
    return parse_json(await read_body(request, engine.settings.max_body_bytes))


async def read_json_body(request: Request, engine: Engine) -> JsonBody:
    """`read_json`, and whether the body is plain (see JsonBody): for the hot routes."""
    return parse_body(await read_body(request, engine.settings.max_body_bytes))


async def read_optional_json(request: Request, engine: Engine) -> Any:
    """The parsed body, or None when the request has none (zero bytes: a body of whitespace
    alone is not JSON, and megabytes of it must not open a session)."""
    body = await read_body(request, engine.settings.max_body_bytes)
    return parse_json(body) if body else None


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Serialise with orjson (numpy arrays included)."""
    return Response(dump_json(payload), status, headers=headers, media_type="application/json")
