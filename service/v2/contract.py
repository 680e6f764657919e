"""The model contract (DESIGN.md section 2) in V2 terms: tensor specs, metadata, batches, answers.

Every V2 tensor is batch-first, as Triton batches: the states are `[batch, rows, width]` on the
wire and `[rows, batch, width]` in the graph (`service.v2.layout` moves the axes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.batching import SequenceResult
from service.card import ModelCard
from service.codecs import Limits
from service.errors import InvalidInputError, LimitExceededError
from service.repository import LoadedModel
from service.runtime import FloatArray, IntArray, RecurrentState
from service.v2.codec import Datatype, InferRequest, OutputTensor, TensorSpec
from service.v2.layout import graph_state, wire_state

PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True, slots=True)
class ContractSpecs:
    """A model's V2 inputs and outputs, by name, in the order the metadata lists them."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True, slots=True)
class ContractBatch:
    """An infer request as the batcher takes it: per-sequence views and optional states."""

    sequences: list[FloatArray | IntArray]
    states: RecurrentState | None
    steps: int


def contract_specs(card: ModelCard) -> ContractSpecs:
    """The V2 tensors of a model; -1 for the batch and seq axes, numbers for fixed axes."""
    if card.takes_tokens:
        sequence = TensorSpec("tokens", Datatype.INT64, (-1, -1))
    else:
        sequence = TensorSpec("x", Datatype.FP32, (-1, -1, card.input_size or 0))
    inputs = [
        sequence,
        TensorSpec("seq_lens", Datatype.INT32, (-1, 1), optional=True, also_accepts=(-1,)),
    ]
    inputs += [
        TensorSpec(s.input, Datatype.FP32, (-1, s.rows, s.width), optional=True)
        for s in card.states
    ]
    outputs = [TensorSpec("y", Datatype.FP32, (-1, -1, card.output_size))]
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


def to_batch(request: InferRequest, card: ModelCard, limits: Limits) -> ContractBatch:
    """Check the tensors against each other and the limits; slice one view per sequence."""
    x = request.inputs[card.input_name]
    batch, steps = int(x.shape[0]), int(x.shape[1])
    if batch < 1 or steps < 1:
        raise InvalidInputError(
            f"{card.input_name} needs batch >= 1 and seq >= 1, got {batch}x{steps}"
        )
    if batch > limits.max_sequences:
        raise LimitExceededError(
            f"batch of {batch} sequences, the limit is {limits.max_sequences}",
            detail={"limit": limits.max_sequences},
        )
    if steps > limits.max_steps:
        raise LimitExceededError(
            f"{steps} steps, the limit is {limits.max_steps}", detail={"limit": limits.max_steps}
        )
    _check_values(x, card)
    lengths = _seq_lens(request, batch, steps)
    sequences = [x[i, : lengths[i]] for i in range(batch)]
    return ContractBatch(sequences, initial_state(request, card, batch), steps)


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
    """`h0` (and `c0`) as given, or None when absent; LSTM states come in pairs."""
    names = [s.input for s in card.states]
    given = [request.inputs.get(n) for n in names]
    if all(g is None for g in given):
        return None
    if any(g is None for g in given):
        raise InvalidInputError(f"give {' and '.join(names)} together, or none of them")
    arrays: list[FloatArray] = []
    for name, array in zip(names, given, strict=True):
        assert array is not None
        if array.shape[0] != batch:
            raise InvalidInputError(
                f"{name} has batch {array.shape[0]} on axis 0 ([batch, rows, width]); "
                f"the input batch is {batch}"
            )
        if not np.isfinite(array).all():
            raise InvalidInputError(f"{name}: NaN or infinite values are not allowed")
        arrays.append(graph_state(array))
    return RecurrentState(arrays[0], arrays[1] if len(arrays) > 1 else None)


def to_arrays(
    card: ModelCard, batch: ContractBatch, results: list[SequenceResult]
) -> dict[str, FloatArray]:
    """Full-shape outputs: `y` [batch, seq, out] zero past each length, and the final states."""
    y = np.zeros((len(results), batch.steps, card.output_size), np.float32)
    for row, result in enumerate(results):
        y[row, : len(result.y)] = result.y
    state = RecurrentState.stack([r.state for r in results])
    arrays = {"y": y, "hn": wire_state(state.h)}
    if state.c is not None:
        arrays["cn"] = wire_state(state.c)
    return arrays


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
