"""Open Inference Protocol (V2) routes, as Triton, KServe and MLServer clients call them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.deps import EngineDep, engine_of, json_response, owner_of, read_body
from service.api.lean import lean_post, path_parameters
from service.v2 import protocol

router = APIRouter(prefix="/v2", tags=["v2"])

HEADER_LENGTH = "Inference-Header-Content-Length"

INFER_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {
                    "id": "1",
                    "inputs": [
                        {"name": "x", "shape": [1, 2, 2], "datatype": "FP32", "data": [0, 1, 2, 3]}
                    ],
                    "outputs": [{"name": "y"}],
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "JSON header of Inference-Header-Content-Length bytes, "
                    "then each input's binary_data_size raw little-endian bytes",
                }
            },
        },
    }
}


@router.get("", summary="Server metadata and the protocol extensions served")
async def server_metadata(request: Request) -> Response:
    """Name, version, extensions."""
    return json_response(protocol.server_metadata(request.app.version))


@router.get("/health/live", summary="The process answers")
async def live() -> Response:
    """200 as long as the event loop runs."""
    return json_response({"live": True})


@router.get("/health/ready", summary="The repository is loaded")
async def ready(engine: EngineDep) -> Response:
    """200 once the models are loaded and warmed up, else 503."""
    protocol.require_ready(engine)
    return json_response({"ready": True})


@router.get("/models/{name}", summary="Model metadata (default version)")
@router.get("/models/{name}/versions/{version}", summary="Model metadata")
async def model_metadata(name: str, engine: EngineDep, version: str | None = None) -> Response:
    """Inputs and outputs with datatypes and shapes (-1 for the batch and seq axes)."""
    return json_response(protocol.describe(engine, name, version))


@router.get("/models/{name}/ready", summary="Model readiness (default version)")
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness")
async def model_ready(name: str, engine: EngineDep, version: str | None = None) -> Response:
    """200 when the version serves; 404 unknown, 503 unavailable."""
    model = protocol.ready_model(engine, name, version)
    return json_response({"name": model.name, "version": str(model.version), "ready": True})


@lean_post(
    router,
    "/models/{name}/infer",
    summary="Infer (default version)",
    openapi_extra={**INFER_BODY_DOC, "parameters": path_parameters("name")},
)
@lean_post(
    router,
    "/models/{name}/versions/{version}/infer",
    summary="Infer",
    openapi_extra={**INFER_BODY_DOC, "parameters": path_parameters("name", "version")},
)
async def infer(request: Request) -> Response:
    """JSON tensors or the binary tensor extension; batched with v1 predicts of the model."""
    engine = engine_of(request)
    body = await read_body(request, engine.settings.max_body_bytes)
    answer = await protocol.infer(
        engine,
        name=request.path_params["name"],
        version=request.path_params.get("version"),
        body=body,
        header_length=request.headers.get(HEADER_LENGTH),
        content_encoding=request.headers.get("content-encoding"),
        owner=owner_of(request),
    )
    headers = None
    if answer.header_length is not None:
        headers = {HEADER_LENGTH: str(answer.header_length)}
    return Response(answer.body, headers=headers, media_type=answer.content_type)
