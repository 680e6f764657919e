"""What a session store holds: one immutable record per streaming session."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

import numpy as np

from service.runtime import FloatArray, RecurrentState

SESSION_ID_BYTES = 16  # 128 random bits; token_urlsafe gives 22 characters


def new_session_id() -> str:
    """An unguessable session id (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session as a value: stores keep it whole and hand back equal, read-only copies.

    `seq` is the next expected step index. `state` holds [layers*dirs, 1, hidden] float32
    arrays; `initial` is what a reset goes back to (None: zeros). `last_seq`, `last_digest`
    and `last_answer` describe the last applied step request, so that its retry is answered
    with the very same bytes. Times are epoch seconds; the store keeps the record until
    `expires_at`, and every write moves `expires_at` to `now + ttl_s`.
    """

    session_id: str
    model: str
    version: int
    owner: str | None
    seq: int
    state: RecurrentState
    initial: RecurrentState | None
    last_seq: int | None
    last_digest: bytes
    last_answer: bytes
    created_at: float
    expires_at: float
    ttl_s: float


def frozen_state(state: RecurrentState) -> RecurrentState:
    """A compact, read-only float32 copy of one sequence's state (unless it already is one).

    Batch results are views into the whole batch's output; keeping such a view would pin
    every other row of that batch in memory, so records always own their arrays.
    """
    h = _frozen(state.h)
    c = None if state.c is None else _frozen(state.c)
    if h is state.h and c is state.c:
        return state
    return RecurrentState(h, c)


def _frozen(array: FloatArray) -> FloatArray:
    if (
        not array.flags.writeable
        and array.flags.owndata
        and array.flags.c_contiguous
        and array.dtype == np.float32
    ):
        return array
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.flags.writeable = False
    return out


def frozen_record(record: SessionRecord) -> SessionRecord:
    """The record with its state arrays compact and read-only (a no-op when they are)."""
    state = frozen_state(record.state)
    initial = None if record.initial is None else frozen_state(record.initial)
    if state is record.state and initial is record.initial:
        return record
    return replace(record, state=state, initial=initial)


def advanced(
    record: SessionRecord,
    *,
    state: RecurrentState,
    steps: int,
    digest: bytes,
    answer: bytes,
    expires_at: float,
) -> SessionRecord:
    """The record after `steps` applied steps (the hot path: cheaper than `replace`)."""
    return SessionRecord(
        record.session_id,
        record.model,
        record.version,
        record.owner,
        record.seq + steps,
        state,
        record.initial,
        record.seq,
        digest,
        answer,
        record.created_at,
        expires_at,
        record.ttl_s,
    )
