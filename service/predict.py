"""The v1 predict call: request parsing, and the per-sequence answer (padding never leaks)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from service.batching import SequenceResult
from service.card import Head, ModelCard
from service.codecs import Limits, require_object, state_to_json, to_sequence, to_state
from service.errors import InvalidInputError, LimitExceededError
from service.runtime import FloatArray, IntArray, RecurrentState

PREDICT_FIELDS = {"inputs", "initial_state", "output", "return_state"}


class OutputMode(StrEnum):
    """Every step's output, or only the last valid step's."""

    ALL = "all"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """A parsed predict body: sequences, their optional initial states, what to answer."""

    sequences: list[FloatArray | IntArray]
    states: RecurrentState | None
    output: OutputMode
    return_state: bool


def parse_output_mode(raw: Any, card: ModelCard) -> OutputMode:
    """`output` defaults to the card's head: last for classifiers, all for per-step models."""
    if raw is None:
        return OutputMode.LAST if card.head is Head.LAST_STEP else OutputMode.ALL
    try:
        return OutputMode(raw)
    except ValueError:
        raise InvalidInputError("output must be 'all' or 'last'") from None


def parse_predict_request(payload: Any, card: ModelCard, limits: Limits) -> PredictRequest:
    """Validate a predict body against the model; every check happens before any compute."""
    body = require_object(payload, "the predict body")
    if unknown := set(body) - PREDICT_FIELDS:
        raise InvalidInputError(
            f"unknown fields {sorted(unknown)}; allowed: {sorted(PREDICT_FIELDS)}"
        )
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("inputs must be a non-empty list of sequences")
    if len(raw_inputs) > limits.max_sequences:
        raise LimitExceededError(
            f"{len(raw_inputs)} sequences, the limit is {limits.max_sequences}",
            detail={"limit": limits.max_sequences},
        )
    sequences = [
        to_sequence(raw, card, where=f"inputs[{i}]", max_steps=limits.max_steps)
        for i, raw in enumerate(raw_inputs)
    ]
    states = None
    raw_states = body.get("initial_state")
    if raw_states is not None:
        if not isinstance(raw_states, list) or len(raw_states) != len(sequences):
            raise InvalidInputError(
                f"initial_state must be a list with one state per sequence ({len(sequences)})"
            )
        states = RecurrentState.stack(
            [to_state(raw, card, where=f"initial_state[{i}]") for i, raw in enumerate(raw_states)]
        )
    return_state = body.get("return_state", False)
    if not isinstance(return_state, bool):
        raise InvalidInputError("return_state must be true or false")
    return PredictRequest(
        sequences, states, parse_output_mode(body.get("output"), card), return_state
    )


def render_outputs(
    card: ModelCard, results: list[SequenceResult], output: OutputMode
) -> dict[str, Any]:
    """Per-sequence outputs sliced to each sequence's own length, and labels for `last`."""
    if output is OutputMode.ALL:
        return {"outputs": [r.y for r in results]}
    last = np.stack([r.y[-1] for r in results])
    answer: dict[str, Any] = {"outputs": last}
    if card.labels is not None:
        answer["labels"] = [card.labels[i] for i in last.argmax(axis=1)]
    return answer


def render_predict_response(
    name: str, version: int, card: ModelCard, request: PredictRequest, results: list[SequenceResult]
) -> dict[str, Any]:
    """The v1 predict answer (DESIGN.md section 3)."""
    answer: dict[str, Any] = {"model": name, "version": version}
    answer.update(render_outputs(card, results, request.output))
    if request.return_state:
        answer["state"] = [state_to_json(r.state) for r in results]
    return answer
