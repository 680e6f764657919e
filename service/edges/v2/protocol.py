"""The Open Inference Protocol's calls, shared by its two edges (HTTP routes and gRPC).

Each edge decodes its wire format into an `InferRequest` (or a model name and version) and
calls these; they check the request against the model's V2 contract, run the infer use case
and answer the protocol's tensors, still unencoded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from service.core.repository import ModelStatus
from service.core.version import LoadedModel
from service.edges.v2.classification import check_parameters, classify
from service.edges.v2.codec import InferRequest, OutputTensor
from service.edges.v2.contract import (
    contract_specs,
    model_metadata,
    select_outputs,
    to_call,
    wire_arrays,
)
from service.edges.wire import parse_version
from service.engine import Engine
from service.errors import InvalidInputError
from service.operations.infer import infer

log = logging.getLogger(__name__)

EXTENSIONS = [
    "binary_tensor_data",
    "sequence",
    "sequence(string_id)",
    "classification",
    "model_configuration",
    "statistics",
    "model_repository",
]


@dataclass(frozen=True, slots=True)
class InferAnswer:
    """A run infer request: the version that answered and the tensors, before any encoding."""

    model_name: str
    model_version: int
    id: str | None
    outputs: list[OutputTensor]


def ready_model(engine: Engine, name: str, version: str | None) -> LoadedModel:
    """A ready model version, or the error that says why not (404 unknown, 503 unavailable)."""
    return engine.repository.get(name, parse_version(version))


def server_metadata(version: str) -> dict[str, Any]:
    """`GET /v2`: name, version and the protocol extensions served."""
    return {"name": "rnnserve", "version": version, "extensions": EXTENSIONS}


def describe(engine: Engine, name: str, version: str | None) -> dict[str, Any]:
    """`GET /v2/models/{name}[/versions/{v}]`: the model metadata."""
    model = ready_model(engine, name, version)
    versions = [e.version for e in engine.repository.versions(name) if e.runner is not None]
    return model_metadata(model, versions)


async def run_infer(
    engine: Engine,
    *,
    model: LoadedModel,
    pinned: str | None,
    request: InferRequest,
    owner: str | None,
) -> InferAnswer:
    """Check and run a decoded request: batched with every other request, or a sequence step.

    `pinned` is the version the client named (None or "" for the default).
    """
    check_parameters(request)
    call = to_call(
        request, model, limits=engine.limits, pinned=pinned not in (None, ""), owner=owner
    )
    outcome = await infer(call, batcher=engine, sessions=engine.sessions)
    specs = contract_specs(model.card)
    arrays = wire_arrays(model.card, outcome.arrays)
    lengths = [len(s) for s in call.sequences]
    outputs = classify(request, model.card, lengths, select_outputs(request, specs, arrays))
    return InferAnswer(model.name, model.version, request.id, outputs)


async def load_model(engine: Engine, name: str) -> None:
    """Triton's repository load: serve the versions of `name` found on disk now (new ones, and
    unloaded ones again). Fails, naming each reason, when no version of it can serve."""
    change = await engine.load_model(name)
    versions = engine.repository.versions(name)
    if not any(e.status is ModelStatus.READY for e in versions):
        reasons = "; ".join(f"v{e.version}: {e.reason}" for e in versions)
        raise InvalidInputError(f"model {name!r} has no version that can serve: {reasons}")
    failed = [e for e in change.added if e.status is ModelStatus.UNAVAILABLE]
    for entry in failed:  # a broken new version: reported, the working ones keep serving
        log.warning("model %s v%d failed to load: %s", name, entry.version, entry.reason)


async def unload_model(engine: Engine, name: str) -> None:
    """Triton's repository unload: stop serving every version of `name`."""
    await engine.unload_model(name)
