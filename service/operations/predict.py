"""The predict use case: a batch of variable-length sequences in, per-sequence answers out.

Requests are decoded by the edges (v1 JSON, V2 tensors) into `PredictRequest`; the sequences
join whatever else is queued for the model, and each answer covers exactly its own steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from service.core.batching import SequenceResult
from service.core.card import Head, ModelCard
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.version import LoadedModel
from service.errors import InvalidInputError


class OutputMode(StrEnum):
    """Every step's output, or only the last valid step's."""

    ALL = "all"
    LAST = "last"


def default_output(card: ModelCard) -> OutputMode:
    """What a model answers unless asked: the last step for classifiers, else every step."""
    return OutputMode.ALL if card.head is Head.PER_STEP else OutputMode.LAST


def check_output_mode(mode: OutputMode, card: ModelCard) -> OutputMode:
    """`all` needs a model that answers every step."""
    if mode is OutputMode.ALL and not card.answers_per_step:
        raise InvalidInputError(
            f"model {card.name!r} gives one answer per sequence (head per_sequence); "
            "output 'all' is not available, use 'last'"
        )
    return mode


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """Decoded sequences ([T, F] float32 or [T] int64), optional initial states, the answer."""

    sequences: list[SequenceArray]
    states: RecurrentState | None
    output: OutputMode
    return_state: bool


@dataclass(frozen=True, slots=True)
class PredictResult:
    """Per sequence: `outputs` a list of [steps, out] (all), or one [sequences, out] array
    (last); the state after each sequence when asked."""

    model: LoadedModel
    outputs: list[FloatArray] | FloatArray
    labels: list[str] | None
    states: list[RecurrentState] | None


class SequenceBatcher(Protocol):
    """Queues sequences of one model version for a batched run."""

    async def run_sequences(
        self, model: LoadedModel, sequences: list[SequenceArray], states: RecurrentState | None
    ) -> list[SequenceResult]:
        """One result per sequence, in order."""
        ...


async def predict(
    batcher: SequenceBatcher, model: LoadedModel, request: PredictRequest
) -> PredictResult:
    """Run the request's sequences batched with every other request of the model."""
    results = await batcher.run_sequences(model, request.sequences, request.states)
    return shape_result(model, results, output=request.output, return_state=request.return_state)


def shape_result(
    model: LoadedModel, results: list[SequenceResult], *, output: OutputMode, return_state: bool
) -> PredictResult:
    """Per-sequence outputs as asked, labels for `last` when the card has them."""
    states = [r.state for r in results] if return_state else None
    if output is OutputMode.ALL:
        return PredictResult(model, [r.y for r in results], None, states)
    last = np.stack([r.y[-1] for r in results])
    labels = None
    if model.card.labels is not None:
        labels = [model.card.labels[i] for i in last.argmax(axis=1)]
    return PredictResult(model, last, labels, states)
