"""The exactly-once rules every step path shares: a request's identity, what counts as the
replay of the last applied request, and how a conflict is explained."""

from __future__ import annotations

import hashlib

from service.core.sessions.record import SessionRecord
from service.core.state import SequenceArray
from service.errors import SessionConflictError, SessionNotFoundError

NO_SEQ = -1


def digest_of(sequence: SequenceArray) -> bytes:
    """Identity of a request's inputs after decoding, so `1` and `1.0` count as the same.

    The bytes alone suffice: a session's model fixes the dtype and the step width, so the
    length of the bytes gives the number of steps."""
    return hashlib.sha256(sequence.tobytes()).digest()


def conflict_error(record: SessionRecord, seq: int) -> SessionConflictError:
    """Why `seq` cannot be applied to the session as it stands in `record`."""
    if seq == record.last_seq:
        message = f"seq {seq} was already applied with different inputs"
    elif seq < record.seq:
        message = f"seq {seq} was already applied"
    else:
        message = f"seq {seq} leaves a gap"
    return SessionConflictError(
        f"{message}; the session expects seq {record.seq}", expected_seq=record.seq
    )


def is_replay(record: SessionRecord, seq: int, digest: bytes) -> bool:
    """True when `seq` with these inputs is the request the session applied last."""
    return seq == record.last_seq and digest == record.last_digest


def session_gone(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(
        "session not found (it may have expired or been deleted)",
        detail={"session_id": session_id},
    )
