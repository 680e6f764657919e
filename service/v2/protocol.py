"""The protocol's operations over the engine: server and model metadata, readiness, infer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.engine import Engine
from service.errors import InvalidInputError, NotReadyError
from service.repository import LoadedModel
from service.v2.classification import check_parameters, classify
from service.v2.codec import InferRequest, OutputTensor, decode_request
from service.v2.contract import contract_specs, model_metadata, select_outputs, to_arrays, to_batch
from service.v2.framing import (
    EncodedResponse,
    decompress,
    encode_response,
    parse_header_length,
)
from service.v2.sequences import parse_sequence_control, run_sequence_step

EXTENSIONS = [
    "binary_tensor_data",
    "sequence",
    "sequence(string_id)",
    "classification",
    "model_configuration",
    "statistics",
    "model_repository",
]


def parse_version(raw: str | None) -> int | None:
    """A version path segment: a positive integer, or None for the default version."""
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidInputError(f"model version must be a positive integer, got {raw!r}")
    return int(raw)


def server_metadata(version: str) -> dict[str, Any]:
    """`GET /v2`: name, version and the protocol extensions served."""
    return {"name": "rnnserve", "version": version, "extensions": EXTENSIONS}


def require_ready(engine: Engine) -> None:
    """NotReadyError until the repository is loaded and the batchers run."""
    if not engine.ready:
        raise NotReadyError("the model repository is still loading", retry_after_s=1.0)


def ready_model(engine: Engine, name: str, version: str | None) -> LoadedModel:
    """A ready model version, or the error that says why not (404 unknown, 503 unavailable)."""
    return engine.repository.get(name, parse_version(version))


def describe(engine: Engine, name: str, version: str | None) -> dict[str, Any]:
    """`GET /v2/models/{name}[/versions/{v}]`: the model metadata."""
    model = ready_model(engine, name, version)
    versions = [e.version for e in engine.repository.versions(name) if e.runner is not None]
    return model_metadata(model, versions)


@dataclass(frozen=True, slots=True)
class InferAnswer:
    """A run infer request: the version that answered and the tensors, before any encoding."""

    model_name: str
    model_version: int
    id: str | None
    outputs: list[OutputTensor]


async def infer(
    engine: Engine,
    *,
    name: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    content_encoding: str | None,
    owner: str | None,
) -> EncodedResponse:
    """Decode an HTTP body, run it (`run_infer`), encode the answer."""
    model = ready_model(engine, name, version)
    specs = contract_specs(model.card)
    body = decompress(body, content_encoding, limit_bytes=engine.settings.max_body_bytes)
    request = decode_request(
        body,
        parse_header_length(header_length, len(body)),
        inputs=specs.inputs,
        outputs=specs.outputs,
    )
    answer = await run_infer(engine, model=model, pinned=version, request=request, owner=owner)
    header: dict[str, Any] = {"model_name": answer.model_name, "model_version": str(model.version)}
    if answer.id is not None:
        header["id"] = answer.id
    return encode_response(header, answer.outputs)


async def run_infer(
    engine: Engine,
    *,
    model: LoadedModel,
    pinned: str | None,
    request: InferRequest,
    owner: str | None,
) -> InferAnswer:
    """Check and run a decoded request: batched with every other request, or a sequence step.

    Every V2 edge (HTTP, gRPC) decodes into an `InferRequest` and calls this; `pinned` is the
    version the client named (None or "" for the default).
    """
    check_parameters(request)
    batch = to_batch(request, model.card, engine.limits)
    control = parse_sequence_control(request.parameters)
    if control is None:
        results = await engine.workers(model).predict.submit(batch.sequences, batch.states)
        arrays = to_arrays(model.card, batch, results)
    else:
        arrays = await run_sequence_step(
            engine,
            model=model,
            pinned=pinned not in (None, ""),
            batch=batch,
            control=control,
            owner=owner,
        )
    specs = contract_specs(model.card)
    lengths = [len(s) for s in batch.sequences]
    outputs = classify(request, model.card, lengths, select_outputs(request, specs, arrays))
    return InferAnswer(model.name, model.version, request.id, outputs)
