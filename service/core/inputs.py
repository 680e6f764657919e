"""Checks of decoded inputs against a model's card, shared by every edge (JSON, V2, binary).

The edges turn their wire format into numpy arrays; these functions decide whether those arrays
are valid sequences and states for the model, and say precisely why not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.card import ModelCard
from service.core.state import FloatArray, IntArray, RecurrentState, SequenceArray
from service.errors import InvalidInputError, LimitExceededError, RnnServeError


@dataclass(frozen=True, slots=True)
class Limits:
    """Request size limits, checked before any work is done."""

    max_sequences: int
    max_steps: int


def check_sequence_count(count: int, limits: Limits) -> None:
    """A request carries at most `limits.max_sequences` sequences."""
    if count > limits.max_sequences:
        raise LimitExceededError(
            f"{count} sequences, the limit is {limits.max_sequences}",
            detail={"limit": limits.max_sequences},
        )


def check_sequence(
    array: npt.NDArray[Any], card: ModelCard, *, where: str, max_steps: int
) -> SequenceArray:
    """A decoded sequence -> `[T, F]` float32 or `[T]` int64 for this model, or why not."""
    steps = len(array) if array.ndim else 0
    if steps == 0:
        raise InvalidInputError(f"{where}: empty sequence; at least one step is needed")
    if steps > max_steps:
        raise LimitExceededError(
            f"{where}: {steps} steps, the limit is {max_steps}",
            detail={"limit": max_steps, "steps": steps},
        )
    return _tokens(array, card, where) if card.takes_tokens else _features(array, card, where)


def check_step_columns(
    inputs: npt.NDArray[Any], counts: npt.NDArray[Any], card: ModelCard, *, max_steps: int
) -> dict[int, RnnServeError]:
    """What is wrong with each record of a column-wise batch (record index -> error; valid
    records are absent). Record i's steps are the next `counts[i]` rows of `inputs`, which a
    binary decoder already sized by the card: float32 `[steps, input_size]` or int64 `[steps]`.
    One vectorised pass over the whole batch; only bad records cost a Python step each."""
    errors: dict[int, RnnServeError] = {}
    for index in np.flatnonzero(counts == 0).tolist():
        errors[index] = InvalidInputError(
            f"records[{index}]: empty sequence; at least one step is needed"
        )
    for index in np.flatnonzero(counts > max_steps).tolist():
        steps = int(counts[index])
        errors[index] = LimitExceededError(
            f"records[{index}]: {steps} steps, the limit is {max_steps}",
            detail={"limit": max_steps, "steps": steps},
        )
    if card.takes_tokens:
        vocab = card.vocab_size or 0
        valid = (inputs >= 0) & (inputs < vocab)
        reason = f"token ids must be in [0, {vocab})"
    else:
        valid = np.isfinite(inputs).all(axis=1)
        reason = "NaN or infinite values are not allowed"
    if not valid.all():
        ends = np.cumsum(counts)
        for row in np.flatnonzero(~valid).tolist():
            index = int(np.searchsorted(ends, row, side="right"))
            errors.setdefault(index, InvalidInputError(f"records[{index}]: {reason}"))
    return errors


def _features(array: npt.NDArray[Any], card: ModelCard, where: str) -> FloatArray:
    size = card.input_size
    if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape[1] != size:
        got = f" (got steps of length {array.shape[1]})" if array.ndim == 2 else ""
        raise InvalidInputError(f"{where}: every step must be a list of {size} numbers{got}")
    with np.errstate(over="ignore"):
        out = array.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise InvalidInputError(f"{where}: NaN or infinite values (float32 range) are not allowed")
    return out


def _tokens(array: npt.NDArray[Any], card: ModelCard, where: str) -> IntArray:
    vocab = card.vocab_size or 0
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise InvalidInputError(f"{where}: this model takes token ids: every step is one integer")
    if array.min() < 0 or array.max() >= vocab:
        raise InvalidInputError(f"{where}: token ids must be in [0, {vocab})")
    return array.astype(np.int64, copy=False)


def check_state(
    arrays: Sequence[npt.NDArray[Any]], card: ModelCard, *, where: str, batch_size: int = 1
) -> RecurrentState:
    """Decoded state tensors (card order, each `[rows, batch, width]`) -> a RecurrentState."""
    if len(arrays) != len(card.states):
        raise InvalidInputError(
            f"{where}: {len(arrays)} state tensors; the model has {list(card.state_names)}"
        )
    checked: list[FloatArray] = []
    for spec, array in zip(card.states, arrays, strict=True):
        want = (spec.rows, batch_size, spec.width)
        if array.dtype.kind not in "fiu" or array.shape != want:
            raise InvalidInputError(
                f"{where}.{spec.name}: expected [{spec.rows}][{spec.width}] numbers per sequence"
                " (rows x width)"
            )
        with np.errstate(over="ignore"):
            value = array.astype(np.float32, copy=False)
        if not np.isfinite(value).all():
            raise InvalidInputError(f"{where}.{spec.name}: NaN or infinite values are not allowed")
        checked.append(value)
    return RecurrentState(tuple(checked))
