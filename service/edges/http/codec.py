"""The v1 JSON wire format: bodies decoded into typed requests, results rendered as JSON.

Decoding goes through orjson and numpy, never per-float pydantic (DESIGN.md section 6). Every
check against the model lives in `service.core.inputs`; this module only turns JSON values into
arrays and says exactly which value is wrong when that fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from service.core.card import ModelCard
from service.core.inputs import Limits, check_sequence, check_sequence_count, check_state
from service.core.sessions.record import SessionRecord
from service.core.state import RecurrentState, SequenceArray
from service.edges.wire import dump_json, require_object
from service.errors import InvalidInputError
from service.operations.predict import (
    OutputMode,
    PredictRequest,
    PredictResult,
    check_output_mode,
    default_output,
)
from service.operations.sessions import StepOutcome

PREDICT_FIELDS = frozenset({"inputs", "initial_state", "output", "return_state"})
OPEN_FIELDS = frozenset({"version", "initial_state"})
STEP_FIELDS = frozenset({"seq", "inputs"})
RESET_FIELDS = frozenset({"initial_state"})


def parse_json(body: bytes | str) -> Any:
    """Parse a request body; malformed JSON is the client's error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"body is not valid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A parsed body, and whether it is `plain`: an object whose only strings, booleans and
    nulls are its own keys and top-level values (`"output": "all"`, `"return_state": true`).
    Then every list in it holds numbers (or lists) only, and decodes straight to float32
    (`to_array(float32=True)`) without the per-value checks that name a bad value: there is
    none."""

    payload: Any
    plain: bool


_LITERALS = {"true": True, "false": False, "null": None}


def _is_plain(data: bytes | str, payload: dict[str, Any]) -> bool:
    # Every JSON string needs two unescaped quotes and every literal its word, so when the text
    # has exactly as many as the top level accounts for, nothing nested is a string or literal.
    # Top-level strings holding a quote or a literal's word could hide one: not plain then.
    quotes = 2 * len(payload)
    literals = dict.fromkeys(_LITERALS, 0)
    for key, value in payload.items():
        texts = [key]
        if isinstance(value, str):
            texts.append(value)
            quotes += 2
        elif value is None or isinstance(value, bool):
            literals[orjson.dumps(value).decode()] += 1
        for text in texts:
            if '"' in text or any(word in text for word in _LITERALS):
                return False
    if isinstance(data, str):
        counts = [data.count('"'), *(data.count(word) for word in _LITERALS)]
    else:
        counts = [data.count(b'"'), *(data.count(word.encode()) for word in _LITERALS)]
    return counts == [quotes, *literals.values()]


def parse_body(data: bytes | str) -> JsonBody:
    """Parse a body or message, and say whether it is plain (a few substring counts in C)."""
    payload = parse_json(data)
    return JsonBody(payload, isinstance(payload, dict) and _is_plain(data, payload))


def fields_of(payload: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    """A JSON object with only the allowed keys."""
    body = require_object(payload, what)
    if unknown := body.keys() - allowed:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    return body


def count_of(value: Any, name: str, *, minimum: int) -> int:
    """A JSON integer >= minimum (`true` is a bool, never a count)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}")
    return value


def flag_of(value: Any, name: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be true or false")
    return value


def to_array(raw: Any, *, where: str, what: str, float32: bool = False) -> np.ndarray[Any, Any]:
    """Nested JSON lists of numbers -> an array; a bool, string or null is named precisely.

    `float32` (only for lists from a plain body, see JsonBody) decodes straight to float32,
    half the cost of inferring the type and converting afterwards; a ragged list still gets
    the precise message below."""
    if not isinstance(raw, list):
        raise InvalidInputError(f"{where}: {what} is a list")
    if float32:
        try:
            with np.errstate(over="ignore"):  # out of float32 range: inf, refused by the checks
                return np.array(raw, dtype=np.float32)
        except (ValueError, TypeError):
            pass
    try:
        array = np.asarray(raw)
    except ValueError:
        array = None
    if array is None or array.dtype.kind not in "fiu" or _holds_bool(raw):
        bad = _first_non_number(raw, where)
        if bad is not None:
            raise InvalidInputError(bad)
        raise InvalidInputError(
            f"{where}: ragged or nested lists; {what} holds steps of equal length, each a flat "
            "list of numbers (or one token id)"
        )
    return array


def _holds_bool(raw: list[Any]) -> bool:
    # numpy turns [true, 1.5] into [1.0, 1.5]; JSON booleans are never numbers here
    first = raw[0] if raw else None
    if isinstance(first, list):
        return any(type(v) is bool for step in raw if isinstance(step, list) for v in step)
    return any(type(v) is bool for v in raw)


def _first_non_number(raw: Any, where: str) -> str | None:
    stack: list[tuple[str, Any]] = [(where, raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path}: {orjson.dumps(value).decode()[:40]} is not a number"
    return None


def to_sequence(
    raw: Any, card: ModelCard, *, where: str, max_steps: int, plain: bool = False
) -> SequenceArray:
    """One sequence as sent (a list of steps) -> a checked `[T, F]` or `[T]` array (`plain`:
    from a plain body, see JsonBody)."""
    array = to_array(raw, where=where, what="a sequence", float32=plain and not card.takes_tokens)
    return check_sequence(array, card, where=where, max_steps=max_steps)


def step_inputs(raw: Any, plain: bool, card: ModelCard) -> np.ndarray[Any, Any]:
    """A step request's `inputs` as an array (checked against the model by the session)."""
    float32 = plain and not card.takes_tokens
    return to_array(raw, where="inputs", what="a sequence", float32=float32)


def to_state(raw: Any, card: ModelCard, *, where: str) -> RecurrentState:
    """One sequence's state `{"h": [[...]], ...}` (one key per state tensor) -> arrays."""
    names = list(card.state_names)
    if not isinstance(raw, dict) or raw.keys() != set(names):
        raise InvalidInputError(f"{where}: a state is an object with exactly the keys {names}")
    arrays = []
    for name in names:
        array = to_array(raw[name], where=f"{where}.{name}", what="a state")
        # a sequence's [rows][width] becomes the graph's [rows, 1, width]
        arrays.append(array[:, None] if array.ndim == 2 else array)
    return check_state(arrays, card, where=where)


def state_to_json(state: RecurrentState, card: ModelCard) -> dict[str, Any]:
    """One sequence's state (batch 1) as `{name: [rows][width]}` (orjson writes the arrays)."""
    return {
        spec.name: np.ascontiguousarray(array[:, 0])
        for spec, array in zip(card.states, state.arrays, strict=True)
    }


def decode_predict(
    payload: Any, card: ModelCard, limits: Limits, *, plain: bool = False
) -> PredictRequest:
    """Validate a predict body against the model; every check happens before any compute
    (`plain`: the body is, see JsonBody)."""
    body = fields_of(payload, PREDICT_FIELDS, "the predict body")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("inputs must be a non-empty list of sequences")
    check_sequence_count(len(raw_inputs), limits)
    sequences = [
        to_sequence(raw, card, where=f"inputs[{i}]", max_steps=limits.max_steps, plain=plain)
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
    output = default_output(card)
    if (raw_output := body.get("output")) is not None:
        try:
            output = OutputMode(raw_output)
        except ValueError:
            raise InvalidInputError("output must be 'all' or 'last'") from None
    return PredictRequest(
        sequences,
        states,
        check_output_mode(output, card),
        flag_of(body.get("return_state", False), "return_state"),
    )


def render_predict(result: PredictResult) -> bytes:
    """The v1 predict answer."""
    model = result.model
    answer: dict[str, Any] = {"model": model.name, "version": model.version}
    answer["outputs"] = result.outputs
    if result.labels is not None:
        answer["labels"] = result.labels
    if result.states is not None:
        answer["state"] = [state_to_json(s, model.card) for s in result.states]
    return dump_json(answer)


@dataclass(frozen=True, slots=True)
class OpenBody:
    """Body of `POST /v1/models/{name}/sessions`; the state is decoded once the model is known."""

    version: int | None
    initial_state: Any


@dataclass(frozen=True, slots=True)
class StepBody:
    """One step request: `seq` of its first step (None: whatever is next), the raw inputs."""

    seq: int | None
    inputs: Any


def decode_open(payload: Any) -> OpenBody:
    """`{"version"?: int, "initial_state"?: {...}}`; an empty body is allowed (None)."""
    body = {} if payload is None else fields_of(payload, OPEN_FIELDS, "the session body")
    version = body.get("version")
    return OpenBody(
        None if version is None else count_of(version, "version", minimum=1),
        body.get("initial_state"),
    )


def decode_reset(payload: Any) -> Any:
    """`{"initial_state"?: {...}}` -> the raw initial state or None."""
    body = {} if payload is None else fields_of(payload, RESET_FIELDS, "the reset body")
    return body.get("initial_state")


def decode_step(payload: Any, *, seq_required: bool) -> StepBody:
    """`{"seq": n, "inputs": [step, ...]}`; the stream may leave `seq` out (apply as next)."""
    body = fields_of(payload, STEP_FIELDS, "a step request")
    if "inputs" not in body:
        raise InvalidInputError("inputs is required: a list of steps")
    raw_seq = body.get("seq")
    if raw_seq is None and seq_required:
        raise InvalidInputError("seq is required: the index of the first step in this request")
    seq = None if raw_seq is None else count_of(raw_seq, "seq", minimum=0)
    return StepBody(seq, body["inputs"])


def iso_time(epoch_s: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def describe_session(record: SessionRecord) -> dict[str, Any]:
    """What `GET /v1/sessions/{id}` (and opening or resetting one) answers."""
    return {
        "session_id": record.session_id,
        "model": record.model,
        "version": record.version,
        "seq": record.seq,
        "created_at": iso_time(record.created_at),
        "expires_at": iso_time(record.expires_at),
        "ttl_s": record.ttl_s,
    }


def render_state(record: SessionRecord, card: ModelCard) -> dict[str, Any]:
    """What `GET /v1/sessions/{id}/state` answers; `state` can open or reset a session."""
    return {
        "session_id": record.session_id,
        "model": record.model,
        "version": record.version,
        "seq": record.seq,
        "state": state_to_json(record.state, card),
    }


def render_step(outcome: StepOutcome) -> bytes:
    """What a step answers, over REST and the WebSocket alike:
    `{"session_id", "seq": next expected, "outputs": [steps][out]}`."""
    return dump_json(
        {
            "session_id": outcome.record.session_id,
            "seq": outcome.next_seq,
            "outputs": outcome.outputs,
        }
    )
