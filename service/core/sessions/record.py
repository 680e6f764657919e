"""What a session store holds: one immutable record per streaming session."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from service.core.state import FloatArray, RecurrentState

SESSION_ID_BYTES = 16  # 128 random bits; token_urlsafe gives 22 characters
NO_OUTPUTS: FloatArray = np.zeros((0, 0), np.float32)
NO_OUTPUTS.flags.writeable = False


def new_session_id() -> str:
    """An unguessable session id (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session as a value: stores keep it whole and hand back equal, read-only copies.

    `seq` is the next expected step index. `state` holds one `[rows, 1, width]` float32 array
    per state tensor of the model; `initial` is what a reset goes back to (None: zeros).
    `last_seq`, `last_digest` and `last_outputs` describe the last applied step request, so
    that its retry is answered with the very same outputs, in whatever wire format it comes.
    Times are epoch seconds; the store keeps the record until `expires_at`, and every write
    moves `expires_at` to `now + ttl_s`.
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
    last_outputs: FloatArray
    created_at: float
    expires_at: float
    ttl_s: float


def advanced(
    record: SessionRecord,
    *,
    state: RecurrentState,
    steps: int,
    digest: bytes,
    outputs: FloatArray,
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
        outputs,
        record.created_at,
        expires_at,
        record.ttl_s,
    )
