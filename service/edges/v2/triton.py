"""Triton's HTTP extensions on /v2: model configuration, statistics, repository index.

Included before the V2 router, so `/v2/models/stats` is the statistics and never a model named
"stats". Extensions rnnserve does not implement answer 501 naming the extension (the router
below lists their routes), rather than a 404 that reads as "unknown model".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.edges.http.codec import parse_json
from service.edges.http.deps import EngineDep, json_response, read_body
from service.edges.v2.config import model_config
from service.edges.v2.protocol import load_model, ready_model, unload_model
from service.edges.v2.repository_index import parse_index_request, repository_index
from service.edges.v2.stats import model_statistics
from service.edges.wire import require_object
from service.errors import InvalidInputError, NotSupportedError

router = APIRouter(prefix="/v2", tags=["v2"])


@router.get("/models/stats", summary="Statistics of every ready model version")
async def all_statistics(engine: EngineDep) -> Response:
    """Triton's statistics extension: counts and durations (ns) per model version."""
    return json_response(model_statistics(engine, None, None))


@router.get("/models/{name}/stats", summary="Statistics of a model's ready versions")
@router.get("/models/{name}/versions/{version}/stats", summary="Statistics of a model version")
async def statistics(name: str, engine: EngineDep, version: str | None = None) -> Response:
    """Success and failure counts, queue and compute durations, batch statistics."""
    return json_response(model_statistics(engine, name, version))


@router.get("/models/{name}/config", summary="Triton model configuration (default version)")
@router.get("/models/{name}/versions/{version}/config", summary="Triton model configuration")
async def configuration(name: str, engine: EngineDep, version: str | None = None) -> Response:
    """Platform, batch-first tensors with dims and `optional`, batching, sequence batching."""
    model = ready_model(engine, name, version)
    return json_response(model_config(model, engine.settings))


@router.post("/repository/index", summary="Every model version and its state")
async def index(request: Request, engine: EngineDep) -> Response:
    """`[{"name", "version", "state", "reason"}]`; body `{"ready": true}` for ready ones only."""
    body = await read_body(request, engine.settings.max_body_bytes)
    return json_response(repository_index(engine, ready_only=parse_index_request(body)))


def check_load_body(body: bytes, action: str) -> None:
    """Load and unload take no parameters here (Triton's config overrides and files are not
    supported); an empty body or `{}` is the plain request."""
    if not body.strip():
        return
    request = require_object(parse_json(body), f"the repository {action} request")
    if request.get("parameters"):
        raise InvalidInputError(
            f"repository {action} parameters are not supported: {sorted(request['parameters'])}"
        )


@router.post("/repository/models/{name}/load", summary="Load (or reload) a model's versions")
async def load(name: str, request: Request, engine: EngineDep) -> Response:
    """Serves the versions of the model found on disk now: new versions and unloaded ones.

    A version that fails to load is listed unavailable with its reason and never replaces a
    working one; 400 when no version of the model can serve.
    """
    check_load_body(await read_body(request, engine.settings.max_body_bytes), "load")
    await load_model(engine, name)
    return json_response({})


@router.post("/repository/models/{name}/unload", summary="Unload a model")
async def unload(name: str, request: Request, engine: EngineDep) -> Response:
    """Stops serving every version; queued requests finish, sessions pinned to it get 404."""
    check_load_body(await read_body(request, engine.settings.max_body_bytes), "unload")
    await unload_model(engine, name)
    return json_response({})


UNSUPPORTED: dict[str, tuple[str, list[str]]] = {
    "/systemsharedmemory/{rest:path}": ("system shared memory", ["GET", "POST"]),
    "/cudasharedmemory/{rest:path}": ("CUDA shared memory", ["GET", "POST"]),
    "/trace/setting": ("trace", ["GET", "POST"]),
    "/models/{name}/trace/setting": ("trace", ["GET", "POST"]),
    "/logging": ("logging", ["GET", "POST"]),
}


def _refuse(extension: str) -> Callable[[], Awaitable[Response]]:
    async def refuse() -> Response:
        raise NotSupportedError(f"the {extension} extension is not supported by rnnserve")

    return refuse


for _path, (_extension, _methods) in UNSUPPORTED.items():
    router.add_api_route(
        _path,
        _refuse(_extension),
        methods=_methods,
        # refusals, not features: kept out of the OpenAPI document
        include_in_schema=False,
    )
