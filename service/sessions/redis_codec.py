"""A SessionRecord as the fields of one Redis hash: state as raw little-endian float32 bytes.

Fields: `seq` in decimal (the compare-and-set script compares it as a string), `meta` (small
JSON: model, version, times, last seq and digest, state shape), `state` (h, then c for LSTM),
`initial` (the same for the reset state, when there is one), `last_answer` (the exact bytes
a retry gets), `owner` (when there is one). Few fields keep each write's argument list short.
Arrays read back are read-only views of the bytes Redis sent, so a record stays a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.runtime import RecurrentState
from service.sessions.record import SessionRecord

WIRE_FLOAT = np.dtype("<f4")

SEQ = b"seq"
OWNER = b"owner"
META = b"meta"
STATE = b"state"
INITIAL = b"initial"
LAST_ANSWER = b"last_answer"


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """The record's small scalar fields, kept as JSON in the hash's `meta` field."""

    model: str
    version: int
    last_seq: int | None
    last_digest: bytes
    created_at: float
    expires_at: float
    ttl_s: float
    shape: tuple[int, ...]
    cell_state: bool


def _raw(state: RecurrentState) -> bytes:
    # h then c, each [rows, 1, hidden] in C order: the layout the arrays come back in
    h = np.ascontiguousarray(state.h, dtype=WIRE_FLOAT).tobytes()
    if state.c is None:
        return h
    return h + np.ascontiguousarray(state.c, dtype=WIRE_FLOAT).tobytes()


def _state(raw: bytes, meta: RecordMeta) -> RecurrentState:
    # frombuffer over immutable bytes is read-only; astype copies only on big-endian hosts
    flat = np.frombuffer(raw, dtype=WIRE_FLOAT).astype(np.float32, copy=False)
    if not meta.cell_state:
        return RecurrentState(flat.reshape(meta.shape))
    h, c = np.split(flat, 2)
    return RecurrentState(h.reshape(meta.shape), c.reshape(meta.shape))


def encode_record(record: SessionRecord) -> list[bytes]:
    """The hash as a flat [field, value, field, value, ...] list (HSET's argument order)."""
    meta = {
        "model": record.model,
        "version": record.version,
        "last_seq": record.last_seq,
        "last_digest": record.last_digest.hex(),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "ttl_s": record.ttl_s,
        "shape": record.state.h.shape,
        "cell_state": record.state.c is not None,
    }
    fields = [SEQ, b"%d" % record.seq, META, orjson.dumps(meta), STATE, _raw(record.state)]
    fields += [LAST_ANSWER, record.last_answer]
    if record.initial is not None:
        fields += [INITIAL, _raw(record.initial)]
    if record.owner is not None:
        fields += [OWNER, record.owner.encode()]
    return fields


def _meta(raw: bytes) -> RecordMeta:
    values: dict[str, Any] = orjson.loads(raw)
    return RecordMeta(
        model=values["model"],
        version=values["version"],
        last_seq=values["last_seq"],
        last_digest=bytes.fromhex(values["last_digest"]),
        created_at=values["created_at"],
        expires_at=values["expires_at"],
        ttl_s=values["ttl_s"],
        shape=tuple(values["shape"]),
        cell_state=values["cell_state"],
    )


def decode_record(session_id: str, fields: dict[bytes, bytes]) -> SessionRecord | None:
    """The record a hash holds, or None for the empty hash Redis answers for a missing key."""
    if not fields:
        return None
    meta = _meta(fields[META])
    initial = fields.get(INITIAL)
    owner = fields.get(OWNER)
    return SessionRecord(
        session_id=session_id,
        model=meta.model,
        version=meta.version,
        owner=None if owner is None else owner.decode(),
        seq=int(fields[SEQ]),
        state=_state(fields[STATE], meta),
        initial=None if initial is None else _state(initial, meta),
        last_seq=meta.last_seq,
        last_digest=meta.last_digest,
        last_answer=fields[LAST_ANSWER],
        created_at=meta.created_at,
        expires_at=meta.expires_at,
        ttl_s=meta.ttl_s,
    )
