"""Triton's sequence parameters on rnnserve sessions: one session per (model, owner, sequence id).

`sequence_start` opens (or restarts) a session through the session manager and names it in
the session store by an alias of the sequence id, so every replica sharing the store finds
it; later requests step it at its current seq; `sequence_end` steps it and closes it. These
are the v1 sessions: same store, TTL, limits, ownership and step batcher. V2 carries no step
counter, so a retried V2 step is applied again (v1's `seq` makes retries safe).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine import Engine
from service.errors import InvalidInputError, SessionNotFoundError
from service.repository import LoadedModel
from service.runtime import FloatArray
from service.sessions.record import SessionRecord
from service.v2.contract import ContractBatch
from service.v2.layout import wire_state

MAX_STRING_ID_CHARS = 256
UINT64_LIMIT = 2**64


@dataclass(frozen=True, slots=True)
class SequenceControl:
    """A request's sequence parameters; `key` keeps uint64 42 and string "42" apart."""

    key: str
    shown: str
    start: bool
    end: bool


def parse_sequence_control(parameters: dict[str, Any]) -> SequenceControl | None:
    """The sequence parameters, or None when the request is not part of a sequence."""
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


def alias_of(model: str, owner: str | None, control: SequenceControl) -> str:
    """The store key naming a sequence's session: scoped per model (as in Triton) and owner."""
    return f"v2seq:{model}:{owner or ''}:{control.key}"


async def run_sequence_step(
    engine: Engine,
    *,
    model: LoadedModel,
    pinned: bool,
    batch: ContractBatch,
    control: SequenceControl,
    owner: str | None,
) -> dict[str, FloatArray]:
    """Apply one request of a sequence; returns `y` [1, seq, out] and the state after it."""
    if len(batch.sequences) != 1:
        raise InvalidInputError(
            f"a sequence request carries one sequence (batch 1), got {len(batch.sequences)}"
        )
    sessions = engine.sessions
    alias = alias_of(model.name, owner, control)
    if control.start:
        record = await _restart(engine, model, batch, alias, owner)
    else:
        record = await _current(engine, alias, control, batch, owner)
        if pinned and record.version != model.version:
            raise InvalidInputError(
                f"sequence {control.shown} runs on version {record.version}, not {model.version}"
            )
    applied = await sessions.advance(record, batch.sequences[0])
    if control.end:
        await sessions.delete(record.session_id, owner)
        await sessions.store.delete_alias(alias)
    else:
        expires_at = applied.record.expires_at
        await sessions.store.set_alias(alias, record.session_id, expires_at=expires_at)
    return _outputs(batch.steps, applied.y, applied.record)


async def _restart(
    engine: Engine, model: LoadedModel, batch: ContractBatch, alias: str, owner: str | None
) -> SessionRecord:
    sessions = engine.sessions
    previous = await sessions.store.get_alias(alias)
    if previous is not None:
        # a restart frees the old session; it may have expired or closed since
        with contextlib.suppress(SessionNotFoundError):
            await sessions.delete(previous, owner)
    initial = None
    if batch.states is not None:
        initial = {"h": batch.states.h[:, 0]}
        if batch.states.c is not None:
            initial["c"] = batch.states.c[:, 0]
    record = await sessions.open(model.name, model.version, initial, owner)
    await sessions.store.set_alias(alias, record.session_id, expires_at=record.expires_at)
    return record


async def _current(
    engine: Engine,
    alias: str,
    control: SequenceControl,
    batch: ContractBatch,
    owner: str | None,
) -> SessionRecord:
    if batch.states is not None:
        raise InvalidInputError(
            "h0/c0 set a sequence's state only with sequence_start; inside a sequence the "
            "server carries it"
        )
    session_id = await engine.sessions.store.get_alias(alias)
    problem = f"sequence {control.shown} is unknown or has ended; start it with sequence_start"
    if session_id is None:
        raise InvalidInputError(problem)
    try:
        return await engine.sessions.get(session_id, owner)
    except SessionNotFoundError:
        raise InvalidInputError(f"{problem} (its session expired or was closed)") from None


def _outputs(steps: int, valid: FloatArray, after: SessionRecord) -> dict[str, FloatArray]:
    # `valid` holds the valid steps only; steps past `seq_lens` stay zero, as in stateless infer
    out = np.zeros((1, steps, valid.shape[1]), np.float32)
    out[0, : len(valid)] = valid
    arrays = {"y": out, "hn": wire_state(after.state.h)}
    if after.state.c is not None:
        arrays["cn"] = wire_state(after.state.c)
    return arrays
