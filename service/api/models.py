"""v1 model routes: list, describe, predict."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.api.deps import EngineDep, engine_of, json_response, read_json
from service.api.lean import VERSION_QUERY, lean_post, path_parameters, query_version
from service.api.schemas import PredictAnswer, PredictBody, body_doc, error_docs
from service.card import ModelCard
from service.repository import ModelEntry

router = APIRouter(prefix="/v1/models", tags=["models"])

PREDICT_EXAMPLE = {
    "inputs": [[[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0]]],
    "output": "last",
}


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
    return {
        "input": sequence,
        "state": {s.name: [s.rows, s.width] for s in card.states},
        "output": {"name": "y", "dtype": "float32", "shape": [-1, -1, card.output_size]},
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


@router.get("/{name}", summary="Describe a model", responses=error_docs(404))
async def describe_model(
    name: str, engine: EngineDep, version: int | None = Query(None, ge=1)
) -> Response:
    """The default (or pinned) version's card and input spec, and the list of versions."""
    entry = engine.repository.entry(name, version)
    info = entry_info(entry)
    info["versions"] = [
        {"version": e.version, "status": e.status.value} for e in engine.repository.versions(name)
    ]
    return json_response(info)


@lean_post(
    router,
    "/{name}/predict",
    summary="Predict a batch of variable-length sequences",
    response_model=PredictAnswer,
    responses=error_docs(400, 404, 413, 422, 429, 503),
    openapi_extra={
        **body_doc(PredictBody, PREDICT_EXAMPLE),
        "parameters": [*path_parameters("name"), VERSION_QUERY],
    },
)
async def predict(request: Request) -> Response:
    """Runs each sequence from its own initial state (zeros by default) to its own end.

    Concurrent requests are batched together; answers equal running each one alone.
    """
    engine = engine_of(request)
    payload = await read_json(request, engine)
    name = request.path_params["name"]
    return json_response(await engine.predict(name, query_version(request), payload))
