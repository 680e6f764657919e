"""The JSON shapes of sessions, shared by the REST routes and the WebSocket stream."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.codecs import require_object, state_to_json
from service.errors import InvalidInputError
from service.runtime import FloatArray, IntArray
from service.sessions.record import SessionRecord

OPEN_FIELDS = frozenset({"version", "initial_state"})
STEP_FIELDS = frozenset({"seq", "inputs"})
RESET_FIELDS = frozenset({"initial_state"})


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """Body of `POST /v1/models/{name}/sessions`; the initial state is parsed later, per card."""

    version: int | None
    initial_state: Any


@dataclass(frozen=True, slots=True)
class StepRequest:
    """One step request: `seq` of its first step (None: whatever is next), raw inputs."""

    seq: int | None
    inputs: Any


def _fields(payload: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    body = require_object(payload, what)
    if unknown := body.keys() - allowed:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    return body


def _count(value: Any, name: str, *, minimum: int) -> int:
    # bool is an int in Python, but `true` is never a meaningful counter
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}")
    return value


def parse_open_request(payload: Any) -> OpenRequest:
    """`{"version"?: int, "initial_state"?: {...}}`; an empty body is allowed (None)."""
    body = {} if payload is None else _fields(payload, OPEN_FIELDS, "the session body")
    version = body.get("version")
    return OpenRequest(
        None if version is None else _count(version, "version", minimum=1),
        body.get("initial_state"),
    )


def parse_reset_request(payload: Any) -> Any:
    """`{"initial_state"?: {...}}` -> the raw initial state or None."""
    body = {} if payload is None else _fields(payload, RESET_FIELDS, "the reset body")
    return body.get("initial_state")


def parse_step_request(payload: Any, *, seq_required: bool) -> StepRequest:
    """`{"seq": n, "inputs": [step, ...]}`; the stream may leave `seq` out (apply as next)."""
    body = _fields(payload, STEP_FIELDS, "a step request")
    if "inputs" not in body:
        raise InvalidInputError("inputs is required: a list of steps")
    raw_seq = body.get("seq")
    if raw_seq is None and seq_required:
        raise InvalidInputError("seq is required: the index of the first step in this request")
    seq = None if raw_seq is None else _count(raw_seq, "seq", minimum=0)
    return StepRequest(seq, body["inputs"])


def digest_of(sequence: FloatArray | IntArray) -> bytes:
    """Identity of a request's inputs after parsing, so `1` and `1.0` count as the same."""
    digest = hashlib.sha256(f"{sequence.dtype.str}{sequence.shape}".encode())
    digest.update(sequence.tobytes())
    return digest.digest()


def iso_time(epoch_s: float) -> str:
    """Epoch seconds as an ISO 8601 UTC timestamp."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def describe(record: SessionRecord) -> dict[str, Any]:
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


def exported_state(record: SessionRecord) -> dict[str, Any]:
    """What `GET /v1/sessions/{id}/state` answers; `state` can open or reset a session."""
    return {
        "session_id": record.session_id,
        "model": record.model,
        "version": record.version,
        "seq": record.seq,
        "state": state_to_json(record.state),
    }
