"""A SessionRecord as the fields of one Redis hash: state as raw little-endian float32 bytes.

Fields: `seq` in decimal (the compare-and-set script compares it as a string), `meta` (small
JSON: model, version, times, last seq and digest, the state tensors' shapes, the last outputs'
shape), `state` (every state tensor's bytes, in the card's order), `initial` (the same for the
reset state, when there is one), `last_outputs` (what a retry of the last step gets), `owner`
(when there is one). Few fields keep each write's argument list short.
Arrays read back are read-only views of the bytes Redis sent, so a record stays a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.core.sessions.record import SessionRecord
from service.core.state import FloatArray, RecurrentState

WIRE_FLOAT = np.dtype("<f4")

SEQ = b"seq"
OWNER = b"owner"
META = b"meta"
STATE = b"state"
INITIAL = b"initial"
LAST_OUTPUTS = b"last_outputs"


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
    shapes: tuple[tuple[int, ...], ...]
    outputs_shape: tuple[int, ...]


def _raw(state: RecurrentState) -> bytes:
    # each tensor [rows, 1, width] in C order, one after another: the layout read back
    return b"".join(_raw_floats(a) for a in state.arrays)


def _raw_floats(array: FloatArray) -> bytes:
    return np.ascontiguousarray(array, dtype=WIRE_FLOAT).tobytes()


def _floats(raw: bytes) -> FloatArray:
    # frombuffer over immutable bytes is read-only; astype copies only on big-endian hosts
    return np.frombuffer(raw, dtype=WIRE_FLOAT).astype(np.float32, copy=False)


def _state(raw: bytes, meta: RecordMeta) -> RecurrentState:
    flat = _floats(raw)
    arrays: list[FloatArray] = []
    offset = 0
    for shape in meta.shapes:
        size = int(np.prod(shape))
        arrays.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return RecurrentState(tuple(arrays))


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
        "shapes": [a.shape for a in record.state.arrays],
        "outputs_shape": record.last_outputs.shape,
    }
    fields = [SEQ, b"%d" % record.seq, META, orjson.dumps(meta), STATE, _raw(record.state)]
    fields += [LAST_OUTPUTS, _raw_floats(record.last_outputs)]
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
        shapes=tuple(tuple(shape) for shape in values["shapes"]),
        outputs_shape=tuple(values["outputs_shape"]),
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
        last_outputs=_floats(fields[LAST_OUTPUTS]).reshape(meta.outputs_shape),
        created_at=meta.created_at,
        expires_at=meta.expires_at,
        ttl_s=meta.ttl_s,
    )
