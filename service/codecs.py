"""JSON <-> numpy for the v1 API: sequences and states, validated without per-float pydantic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.card import ModelCard
from service.errors import InvalidInputError, LimitExceededError
from service.runtime import FloatArray, IntArray, RecurrentState


@dataclass(frozen=True, slots=True)
class Limits:
    """Request size limits, checked before any work is done."""

    max_sequences: int
    max_steps: int


def parse_json(body: bytes) -> Any:
    """Parse a request body; malformed JSON is the client's error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"body is not valid JSON: {exc}") from None


def require_object(payload: Any, what: str) -> dict[str, Any]:
    """The top level of every JSON body is an object."""
    if not isinstance(payload, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return payload


def to_sequence(raw: Any, card: ModelCard, *, where: str, max_steps: int) -> FloatArray | IntArray:
    """One sequence as sent (a list of steps) -> [T, F] float32 or [T] int64, checked."""
    if not isinstance(raw, list):
        raise InvalidInputError(f"{where}: a sequence is a list of steps")
    if not raw:
        raise InvalidInputError(f"{where}: empty sequence; at least one step is needed")
    if len(raw) > max_steps:
        raise LimitExceededError(
            f"{where}: {len(raw)} steps, the limit is {max_steps}",
            detail={"limit": max_steps, "steps": len(raw)},
        )
    try:
        array = np.asarray(raw)
    except ValueError:
        array = np.empty(0, dtype=object)
    return (
        _check_tokens(array, card, where)
        if card.takes_tokens
        else _check_features(array, card, where)
    )


def _check_features(array: np.ndarray[Any, Any], card: ModelCard, where: str) -> FloatArray:
    size = card.input_size
    if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape[1] != size:
        raise InvalidInputError(
            f"{where}: every step must be a list of {size} numbers"
            + (f" (got steps of length {array.shape[1]})" if array.ndim == 2 else "")
        )
    with np.errstate(over="ignore"):
        out = array.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise InvalidInputError(f"{where}: NaN or infinite values (float32 range) are not allowed")
    return out


def _check_tokens(array: np.ndarray[Any, Any], card: ModelCard, where: str) -> IntArray:
    vocab = card.vocab_size or 0
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise InvalidInputError(f"{where}: this model takes token ids: every step is one integer")
    if array.size and (array.min() < 0 or array.max() >= vocab):
        raise InvalidInputError(f"{where}: token ids must be in [0, {vocab})")
    return array.astype(np.int64, copy=False)


def to_state(raw: Any, card: ModelCard, *, where: str) -> RecurrentState:
    """A single sequence's state `{"h": [[...]], "c": ...}` -> arrays with a batch axis of 1."""
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: a state is an object with {list(card.state_names)}")
    unknown = set(raw) - set(card.state_names)
    if unknown or set(card.state_names) - set(raw):
        raise InvalidInputError(f"{where}: a state has exactly the keys {list(card.state_names)}")
    arrays: list[FloatArray] = []
    for spec in card.states:
        key, rows, hidden = spec.name, spec.rows, spec.width
        try:
            array = np.asarray(raw[key])
        except ValueError:
            array = np.empty(0, dtype=object)
        if array.dtype.kind not in "fiu" or array.shape != (rows, hidden):
            raise InvalidInputError(
                f"{where}.{key}: expected [{rows}][{hidden}] numbers (layers*directions x hidden)"
            )
        with np.errstate(over="ignore"):
            value = array.astype(np.float32)[:, None, :]
        if not np.isfinite(value).all():
            raise InvalidInputError(f"{where}.{key}: NaN or infinite values are not allowed")
        arrays.append(value)
    return RecurrentState(arrays[0], arrays[1] if len(arrays) > 1 else None)


def state_to_json(state: RecurrentState, index: int = 0) -> dict[str, FloatArray]:
    """One sequence's state as `{"h": [rows][hidden], "c": ...}` (orjson writes the arrays)."""
    out = {"h": np.ascontiguousarray(state.h[:, index])}
    if state.c is not None:
        out["c"] = np.ascontiguousarray(state.c[:, index])
    return out


def dump_json(payload: Any) -> bytes:
    """Serialise a response; numpy arrays go straight through orjson."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
