"""Open Inference Protocol (V2) routes, as Triton, KServe and MLServer clients call them.

Infer is a hot route (declared once, two paths: default and pinned version); metadata and
health are FastAPI routes. Every error answers the protocol's `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.edges.http.deps import EngineDep, engine_of, json_response, owner_of, read_body
from service.edges.http.routes import HotRoute, Malformed
from service.edges.http.schemas import error_docs
from service.edges.v2.codec import decode_request
from service.edges.v2.contract import contract_specs
from service.edges.v2.framing import decompress, encode_response, parse_header_length
from service.edges.v2.protocol import describe, ready_model, run_infer, server_metadata
from service.errors import NotReadyError

router = APIRouter(prefix="/v2", tags=["v2"])

HEADER_LENGTH = "Inference-Header-Content-Length"


@router.get("", summary="Server metadata and the protocol extensions served")
async def server(request: Request) -> Response:
    """Name, version, extensions."""
    return json_response(server_metadata(request.app.version))


@router.get("/health/live", summary="The process answers")
async def live() -> Response:
    """200 as long as the event loop runs."""
    return json_response({"live": True})


@router.get("/health/ready", summary="The repository is loaded", responses=error_docs(503, v2=True))
async def ready(engine: EngineDep) -> Response:
    """200 once the models are loaded and warmed up, else 503."""
    if not engine.ready:
        raise NotReadyError("the model repository is still loading", retry_after_s=1.0)
    return json_response({"ready": True})


METADATA_ERRORS = error_docs(400, 404, 503, v2=True)


@router.get("/models/{name}", summary="Model metadata (default version)", responses=METADATA_ERRORS)
@router.get(
    "/models/{name}/versions/{version}", summary="Model metadata", responses=METADATA_ERRORS
)
async def metadata(name: str, engine: EngineDep, version: str | None = None) -> Response:
    """Inputs and outputs with datatypes and shapes (-1 for the batch and seq axes)."""
    return json_response(describe(engine, name, version))


@router.get(
    "/models/{name}/ready", summary="Model readiness (default version)", responses=METADATA_ERRORS
)
@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model readiness",
    responses=METADATA_ERRORS,
)
async def model_ready(name: str, engine: EngineDep, version: str | None = None) -> Response:
    """200 when the version serves; 404 unknown, 503 unavailable."""
    model = ready_model(engine, name, version)
    return json_response({"name": model.name, "version": str(model.version), "ready": True})


async def infer(request: Request) -> Response:
    """JSON tensors or the binary tensor extension; batched with v1 predicts of the model, or
    a step of a Triton sequence (`sequence_id`, `sequence_start`, `sequence_end`)."""
    engine = engine_of(request)
    version = request.path_params.get("version")
    model = ready_model(engine, request.path_params["name"], version)
    specs = contract_specs(model.card)
    body = await read_body(request, engine.settings.max_body_bytes)
    body = decompress(
        body, request.headers.get("content-encoding"), limit_bytes=engine.settings.max_body_bytes
    )
    decoded = decode_request(
        body,
        parse_header_length(request.headers.get(HEADER_LENGTH), len(body)),
        inputs=specs.inputs,
        outputs=specs.outputs,
    )
    ran = await run_infer(
        engine, model=model, pinned=version, request=decoded, owner=owner_of(request)
    )
    header: dict[str, Any] = {"model_name": ran.model_name, "model_version": str(ran.model_version)}
    if ran.id is not None:
        header["id"] = ran.id
    answer = encode_response(header, ran.outputs)
    headers = None
    if answer.header_length is not None:
        headers = {HEADER_LENGTH: str(answer.header_length)}
    return Response(answer.body, headers=headers, media_type=answer.content_type)


BINARY_BODY = {
    "application/octet-stream": {
        "schema": {
            "type": "string",
            "format": "binary",
            "description": "JSON header of Inference-Header-Content-Length bytes, then each "
            "input's binary_data_size raw little-endian bytes",
        }
    }
}
INFER_EXAMPLE = {
    "id": "1",
    "inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [315.7, 317.5]}],
    "outputs": [{"name": "y"}],
}
INFER_MALFORMED = (
    Malformed(b'{"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32"}]}', 400),
    Malformed(
        b'{"inputs": [{"name": "x", "shape": [1, 3, 1], "datatype": "FP32", "data": [1, 2]}]}',
        400,
    ),
    Malformed(
        b'{"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "INT8", "data": [1]}]}', 400
    ),
    Malformed(b'{"inputs": []}', 400),
    Malformed(b"{", 400),
)


def infer_route(path: str, summary: str) -> HotRoute:
    """The infer declaration at one of its two paths."""
    return HotRoute(
        path=path,
        endpoint=infer,
        summary=summary,
        tag="v2",
        body=None,
        answer=None,
        errors=(400, 404, 413, 429, 503),
        example_model="co2-forecaster",
        example=INFER_EXAMPLE,
        malformed=INFER_MALFORMED,
        extra_content={"application/json": {"example": INFER_EXAMPLE}, **BINARY_BODY},
        v2=True,
    )


INFER = infer_route("/v2/models/{name}/infer", "Infer (default version)")
INFER_PINNED = infer_route("/v2/models/{name}/versions/{version}/infer", "Infer")
