"""The V2 infer use case: a stateless batch, or one step request of a Triton sequence.

Typed in (`InferCall`: decoded sequences, optional initial states, the sequence control) and
typed out (`InferOutcome`: full-shape arrays by graph output name). Stateless calls share the
model's predict batcher with v1; sequence calls run on the v1 sessions: one session per (model,
owner, sequence id), found through a store alias, so every replica sharing the store finds it.
`sequence_start` opens (or restarts) the session, `sequence_end` steps it and closes it. V2
carries no step counter, so a retried V2 step is applied again (v1's `seq` makes retries safe).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from service.core.batching import SequenceResult
from service.core.sessions.record import SessionRecord
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.version import LoadedModel
from service.errors import InvalidInputError, SessionNotFoundError
from service.operations.predict import SequenceBatcher
from service.operations.sessions import SessionManager


@dataclass(frozen=True, slots=True)
class SequenceControl:
    """A request's Triton sequence parameters; `key` keeps uint64 42 and string "42" apart."""

    key: str
    shown: str
    start: bool
    end: bool


@dataclass(frozen=True, slots=True)
class InferCall:
    """A decoded infer request: per-sequence views (each its own length), padded length `steps`."""

    model: LoadedModel
    sequences: list[SequenceArray]
    states: RecurrentState | None
    steps: int
    control: SequenceControl | None
    pinned: bool
    owner: str | None


@dataclass(frozen=True, slots=True)
class InferOutcome:
    """Output arrays by graph name: `y` zero past each length, then every final state."""

    model: LoadedModel
    arrays: dict[str, FloatArray]


def alias_of(model: str, owner: str | None, control: SequenceControl) -> str:
    """The store key naming a sequence's session: scoped per model (as in Triton) and owner."""
    return f"v2seq:{model}:{owner or ''}:{control.key}"


async def infer(
    call: InferCall, *, batcher: SequenceBatcher, sessions: SessionManager
) -> InferOutcome:
    """Run a stateless batch, or apply one request of a sequence."""
    if call.control is None:
        results = await batcher.run_sequences(call.model, call.sequences, call.states)
    else:
        results = [await _sequence_step(call, call.control, sessions)]
    return InferOutcome(call.model, full_arrays(call, results))


def full_arrays(call: InferCall, results: list[SequenceResult]) -> dict[str, FloatArray]:
    """`y` at the request's full shape ([batch, seq, out], or [batch, out]), and the states."""
    card = call.model.card
    if card.answers_per_step:
        y = np.zeros((len(results), call.steps, card.output_size), np.float32)
        for row, result in enumerate(results):
            y[row, : len(result.y)] = result.y
    else:
        y = np.concatenate([r.y for r in results])
    state = RecurrentState.stack([r.state for r in results])
    arrays = {"y": y}
    for spec, array in zip(card.states, state.arrays, strict=True):
        arrays[spec.output] = array
    return arrays


async def _sequence_step(
    call: InferCall, control: SequenceControl, sessions: SessionManager
) -> SequenceResult:
    if len(call.sequences) != 1:
        raise InvalidInputError(
            f"a sequence request carries one sequence (batch 1), got {len(call.sequences)}"
        )
    alias = alias_of(call.model.name, call.owner, control)
    if control.start:
        record = await _restart(call, alias, sessions)
    else:
        record = await _current(call, alias, control, sessions)
    outcome = await sessions.step(record, seq=None, inputs=call.sequences[0])
    if control.end:
        await sessions.delete(record.session_id, call.owner)
        await sessions.store.delete_alias(alias)
    else:
        expires_at = outcome.record.expires_at
        await sessions.store.set_alias(alias, record.session_id, expires_at=expires_at)
    return SequenceResult(outcome.outputs, outcome.record.state)


async def _restart(call: InferCall, alias: str, sessions: SessionManager) -> SessionRecord:
    model = sessions.streamable_model(call.model.name, call.model.version)
    previous = await sessions.store.get_alias(alias)
    if previous is not None:
        # a restart frees the old session; it may have expired or closed since
        with contextlib.suppress(SessionNotFoundError):
            await sessions.delete(previous, call.owner)
    record = await sessions.open(model, call.states, call.owner)
    await sessions.store.set_alias(alias, record.session_id, expires_at=record.expires_at)
    return record


async def _current(
    call: InferCall, alias: str, control: SequenceControl, sessions: SessionManager
) -> SessionRecord:
    if call.states is not None:
        names = ", ".join(s.input for s in call.model.card.states)
        raise InvalidInputError(
            f"{names} set a sequence's state only with sequence_start; inside a sequence the "
            "server carries it"
        )
    session_id = await sessions.store.get_alias(alias)
    problem = f"sequence {control.shown} is unknown or has ended; start it with sequence_start"
    if session_id is None:
        raise InvalidInputError(problem)
    try:
        record = await sessions.get(session_id, call.owner)
    except SessionNotFoundError:
        raise InvalidInputError(f"{problem} (its session expired or was closed)") from None
    if call.pinned and record.version != call.model.version:
        raise InvalidInputError(
            f"sequence {control.shown} runs on version {record.version}, not {call.model.version}"
        )
    return record
