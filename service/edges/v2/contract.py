"""The model contract (docs/model-contract.md) in V2 terms: tensor specs, metadata, requests.

Declares each model's V2 tensors once (`contract_specs`); that declaration drives the metadata,
the request decoder and the answer. Every V2 tensor is batch-first, as Triton batches: each
state (`h0`/`hn`, `c0`/`cn`, or one per recurrent layer, as the card names them) is
`[batch, rows, width]` on the wire and `[rows, batch, width]` in the graph
(`service.edges.v2.layout` moves the axes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.card import ModelCard
from service.core.inputs import Limits, check_sequence_count, check_state
from service.core.state import FloatArray, RecurrentState
from service.core.version import LoadedModel
from service.edges.v2.codec import Datatype, InferRequest, OutputTensor, TensorSpec
from service.edges.v2.layout import graph_state, wire_state
from service.errors import InvalidInputError, LimitExceededError
from service.operations.infer import InferCall, SequenceControl

MAX_STRING_ID_CHARS = 256
UINT64_LIMIT = 2**64

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True, slots=True)
class ContractSpecs:
    """A model's V2 inputs and outputs, by name, in the order the metadata lists them."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def contract_specs(card: ModelCard) -> ContractSpecs:
    """The V2 tensors of a model; -1 for the batch and seq axes, numbers for fixed axes."""
    if card.takes_tokens:
        sequence = TensorSpec("tokens", Datatype.INT64, (-1, -1))
    else:
        sequence = TensorSpec("x", Datatype.FP32, (-1, -1, card.input_size or 0))
    inputs = [
        sequence,
        # Triton's dims [1] per item (perf_analyzer needs a non-empty shape); [batch] is accepted
        TensorSpec("seq_lens", Datatype.INT32, (-1, 1), optional=True, also_accepts=(-1,)),
    ]
    inputs += [
        TensorSpec(s.input, Datatype.FP32, (-1, s.rows, s.width), optional=True)
        for s in card.states
    ]
    y_shape = (-1, -1, card.output_size) if card.answers_per_step else (-1, card.output_size)
    outputs = [TensorSpec("y", Datatype.FP32, y_shape)]
    outputs += [TensorSpec(s.output, Datatype.FP32, (-1, s.rows, s.width)) for s in card.states]
    return ContractSpecs({s.name: s for s in inputs}, {s.name: s for s in outputs})


def model_metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    """The protocol's model metadata object."""
    specs = contract_specs(model.card)
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [s.as_json() for s in specs.inputs.values()],
        "outputs": [s.as_json() for s in specs.outputs.values()],
    }


def to_call(
    request: InferRequest, model: LoadedModel, *, limits: Limits, pinned: bool, owner: str | None
) -> InferCall:
    """Check the tensors against each other and the limits; slice one view per sequence."""
    card = model.card
    x = request.inputs[card.input_name]
    batch, steps = int(x.shape[0]), int(x.shape[1])
    if batch < 1 or steps < 1:
        raise InvalidInputError(
            f"{card.input_name} needs batch >= 1 and seq >= 1, got {batch}x{steps}"
        )
    check_sequence_count(batch, limits)
    if steps > limits.max_steps:
        raise LimitExceededError(
            f"{steps} steps, the limit is {limits.max_steps}",
            limit="steps",
            detail={"limit": limits.max_steps},
        )
    _check_values(x, card)
    lengths = _seq_lens(request, batch, steps)
    return InferCall(
        model=model,
        sequences=[x[i, : lengths[i]] for i in range(batch)],
        states=initial_state(request, card, batch),
        steps=steps,
        control=parse_sequence_control(request.parameters),
        pinned=pinned,
        owner=owner,
    )


def _check_values(x: np.ndarray[Any, Any], card: ModelCard) -> None:
    if card.takes_tokens:
        vocab = card.vocab_size or 0
        if x.min() < 0 or x.max() >= vocab:
            raise InvalidInputError(f"tokens: token ids must be in [0, {vocab})")
    elif not np.isfinite(x).all():
        raise InvalidInputError("x: NaN or infinite values are not allowed")


def _seq_lens(request: InferRequest, batch: int, steps: int) -> list[int]:
    raw = request.inputs.get("seq_lens")
    if raw is None:
        return [steps] * batch
    if raw.shape not in ((batch,), (batch, 1)):
        raise InvalidInputError(f"seq_lens has shape {list(raw.shape)}; the batch is {batch}")
    raw = raw.reshape(batch)
    if raw.min() < 1 or raw.max() > steps:
        raise InvalidInputError(f"every seq_lens value must be in 1..{steps} (the seq axis)")
    return [int(v) for v in raw]


def initial_state(request: InferRequest, card: ModelCard, batch: int) -> RecurrentState | None:
    """Every state input as given, or None when none is; a model's states come all together."""
    names = [spec.input for spec in card.states]
    given = [request.inputs.get(n) for n in names]
    if all(g is None for g in given):
        return None
    arrays = [g for g in given if g is not None]
    if len(arrays) != len(names):
        raise InvalidInputError(f"give {', '.join(names)} together, or none of them")
    for name, array in zip(names, arrays, strict=True):
        if array.shape[0] != batch:
            raise InvalidInputError(
                f"{name} has batch {array.shape[0]} on axis 0 ([batch, rows, width]); "
                f"the input batch is {batch}"
            )
    graph = [graph_state(a) for a in arrays]
    return check_state(graph, card, where="initial state", batch_size=batch)


def wire_arrays(card: ModelCard, arrays: dict[str, FloatArray]) -> dict[str, FloatArray]:
    """The operation's graph-layout answer with every state batch-first, as V2 sends it."""
    states = {spec.output for spec in card.states}
    return {name: wire_state(a) if name in states else a for name, a in arrays.items()}


def parse_sequence_control(parameters: dict[str, Any]) -> SequenceControl | None:
    """Triton's sequence parameters, or None when the request is not part of a sequence."""
    raw = parameters.get("sequence_id", 0)
    start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
    if raw in (0, "") and not isinstance(raw, bool):
        if start or end:
            raise InvalidInputError("sequence_start and sequence_end need a non-zero sequence_id")
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < UINT64_LIMIT:
        return SequenceControl(f"u:{raw}", str(raw), start, end)
    if isinstance(raw, str) and len(raw) <= MAX_STRING_ID_CHARS:
        return SequenceControl(f"s:{raw}", repr(raw), start, end)
    raise InvalidInputError(
        f"sequence_id must be a uint64 or a string of at most {MAX_STRING_ID_CHARS} characters"
    )


def _flag(parameters: dict[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"parameters.{key} must be true or false")
    return value


def select_outputs(
    request: InferRequest, specs: ContractSpecs, arrays: dict[str, FloatArray]
) -> list[OutputTensor]:
    """The outputs asked for (all by default), each binary or JSON as asked."""
    if request.outputs is None:
        return [
            OutputTensor(name, specs.outputs[name].datatype, array, request.binary_output)
            for name, array in arrays.items()
        ]
    return [
        OutputTensor(
            out.name,
            specs.outputs[out.name].datatype,
            arrays[out.name],
            request.binary_output if out.binary is None else out.binary,
        )
        for out in request.outputs
    ]
