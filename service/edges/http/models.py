"""v1 model routes: list, describe, and predict (a hot route)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.core.card import ModelCard
from service.core.repository import ModelEntry
from service.edges.http.codec import decode_predict, render_predict
from service.edges.http.deps import (
    EngineDep,
    engine_of,
    json_response,
    query_version,
    read_json_body,
)
from service.edges.http.routes import VERSION_PARAMETER, HotRoute, Malformed
from service.edges.http.schemas import PredictAnswer, PredictBody, error_docs
from service.operations.predict import predict as run_predict

router = APIRouter(prefix="/v1/models", tags=["models"])


def input_spec(card: ModelCard) -> dict[str, Any]:
    """What a client must send and gets back, in plain shapes (-1 = any length)."""
    sequence: dict[str, Any]
    if card.takes_tokens:
        sequence = {
            "name": "tokens",
            "dtype": "int64",
            "shape": [-1, -1],
            "vocab_size": card.vocab_size,
        }
    else:
        sequence = {"name": "x", "dtype": "float32", "shape": [-1, -1, card.input_size]}
    y_shape = [-1, -1, card.output_size] if card.answers_per_step else [-1, card.output_size]
    return {
        "input": sequence,
        "state": {s.name: [s.rows, s.width] for s in card.states},
        "output": {"name": "y", "dtype": "float32", "shape": y_shape},
    }


def entry_info(entry: ModelEntry) -> dict[str, Any]:
    """A model version as the API shows it: status, provider, card and input spec."""
    info: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "status": entry.status.value,
        "reason": entry.reason,
        "provider": entry.runner.provider if entry.runner else None,
    }
    if entry.card is not None:
        info["card"] = entry.card.model_dump(mode="json")
        info["spec"] = input_spec(entry.card)
    return info


@router.get("", summary="List every model version, ready or not")
async def list_models(engine: EngineDep) -> Response:
    """Every version in the repository with its status (and the reason when unavailable)."""
    return json_response({"models": [entry_info(e) for e in engine.repository.entries()]})


@router.get(
    "/{name}",
    summary="Describe a model",
    responses=error_docs(400, 404),
    openapi_extra={"parameters": [VERSION_PARAMETER]},
)
async def describe_model(name: str, request: Request, engine: EngineDep) -> Response:
    """The default (or pinned, `?version=`) version's card and input spec, and all versions."""
    entry = engine.repository.entry(name, query_version(request))
    info = entry_info(entry)
    info["versions"] = [
        {"version": e.version, "status": e.status.value} for e in engine.repository.versions(name)
    ]
    return json_response(info)


async def predict(request: Request) -> Response:
    """Runs each sequence from its own initial state (zeros by default) to its own end.

    Concurrent requests are batched together; each answer equals running the sequence alone
    (to float32 rounding).
    """
    engine = engine_of(request)
    model = engine.repository.get(request.path_params["name"], query_version(request))
    body = await read_json_body(request, engine)
    decoded = decode_predict(body.payload, model.card, engine.limits, plain=body.plain)
    result = await run_predict(engine, model, decoded)
    return Response(render_predict(result), media_type="application/json")


PREDICT = HotRoute(
    path="/v1/models/{name}/predict",
    endpoint=predict,
    summary="Predict a batch of variable-length sequences",
    tag="models",
    body=PredictBody,
    answer=PredictAnswer,
    errors=(400, 404, 413, 429, 503),
    version_query=True,
    example_model="digits-rnn",
    example={
        "inputs": [[[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0]]],
        "output": "last",
    },
    malformed=(
        Malformed(b'{"inputs": [[[0, 0, 5, 13, 9, 1, 0]]]}', 400),
        Malformed(b'{"inputs": [[[0, 0, 5, 13, 9, 1, 0, true]]]}', 400),
        Malformed(b'{"inputs": [[[0, 0, 5, 13, 9, 1, 0, "a"]]]}', 400),
        Malformed(b'{"inputs": []}', 400),
        Malformed(b'{"inputs": [[[0, 0, 5, 13, 9, 1, 0, 0]]], "extra": 1}', 400),
        Malformed(b'{"inputs": [[[0, 0, 5, 13, 9, 1, 0, 0]]], "output": "some"}', 400),
        Malformed(b"{", 400),
    ),
)
