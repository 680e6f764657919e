"""The RNM1 binary step frames of `WS /v1/models/{name}/mux`, declared once.

Little-endian, no padding, column-wise, so a frame decodes with a few `numpy.frombuffer` calls:

    request  b"RNM1" | u32 request_id | u32 n | u32 slot[n] | u64 seq[n] | u32 count[n]
             | inputs: float32 [sum(count), features], or int64 [sum(count)] token ids
    answer   b"RNM1" | u32 request_id | u32 n | u16 status[n] | u64 seq[n]
             | float32 outputs [rows, outputs] of the records whose status is 0 or 1, in
               record order: `count` rows each (one row each for per_sequence models)

docs/mux.md documents the protocol with a byte-level example that tests/unit/edges checks
against this module.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.state import FloatArray
from service.errors import InvalidInputError, LimitExceededError

MAGIC = b"RNM1"
HEADER = struct.Struct("<4sII")  # magic, request_id, n
SLOT = np.dtype("<u4")
SEQ = np.dtype("<u8")
COUNT = np.dtype("<u4")
STATUS = np.dtype("<u2")
FEATURE = np.dtype("<f4")
TOKEN = np.dtype("<i8")
OUTPUT = np.dtype("<f4")
RECORD_HEADER_BYTES = SLOT.itemsize + SEQ.itemsize + COUNT.itemsize


class MuxStatus(IntEnum):
    """What became of one record of a step frame."""

    APPLIED = 0  # seq: the next expected
    REPLAYED = 1  # the last applied request again: its stored answer, no advance
    CONFLICT = 2  # seq: the expected one
    GONE = 3  # unknown slot, or the session expired or was deleted
    INVALID = 4  # count, size or values
    UNAVAILABLE = 5  # the session store (or the server) cannot serve it now: retry
    OVER_LIMIT = 6  # a limit of the server (steps, queue)


class FrameError(InvalidInputError):
    """A frame that cannot be read as RNM1; `request_id` when its header could be read."""

    type = "malformed_frame"

    def __init__(self, message: str, *, request_id: int | None = None) -> None:
        super().__init__(message, detail={"request_id": request_id})
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class StepFrame:
    """A decoded request frame: per-record columns and every record's inputs back to back."""

    request_id: int
    slots: npt.NDArray[np.uint32]
    seqs: npt.NDArray[np.uint64]
    counts: npt.NDArray[np.uint32]
    inputs: npt.NDArray[Any]  # [sum(count), features] float32, or [sum(count)] int64

    def record_inputs(self) -> list[npt.NDArray[Any]]:
        """Each record's own steps (read-only views into the frame)."""
        ends = np.cumsum(self.counts, dtype=np.int64).tolist()
        starts = [0, *ends[:-1]]
        return [self.inputs[start:end] for start, end in zip(starts, ends, strict=True)]


def peek_request_id(data: bytes) -> int | None:
    """The request id of a frame, if it is long enough to hold one (however broken it is)."""
    request_id: int | None = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else None
    return request_id


def decode_frame(data: bytes, *, features: int | None, max_records: int) -> StepFrame:
    """A request frame for a model taking `features` floats per step (None: token ids)."""
    request_id = peek_request_id(data)
    if len(data) < HEADER.size:
        raise FrameError(
            f"a frame of {len(data)} bytes; the header alone is {HEADER.size}",
            request_id=request_id,
        )
    magic, request_id, n = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError(f"the frame starts with {magic!r}, not {MAGIC!r}", request_id=request_id)
    if n == 0:
        raise FrameError("a frame carries at least one record", request_id=request_id)
    if n > max_records:
        raise LimitExceededError(
            f"{n} records in one frame, the limit is {max_records}",
            detail={"request_id": request_id, "limit": max_records},
        )
    body = HEADER.size + n * RECORD_HEADER_BYTES
    if len(data) < body:
        raise FrameError(
            f"{n} records need {body} bytes before the inputs; the frame has {len(data)}",
            request_id=request_id,
        )
    offset = HEADER.size
    slots = np.frombuffer(data, SLOT, n, offset)
    seqs = np.frombuffer(data, SEQ, n, offset + n * SLOT.itemsize)
    counts = np.frombuffer(data, COUNT, n, offset + n * (SLOT.itemsize + SEQ.itemsize))
    steps = int(counts.sum(dtype=np.uint64))
    dtype, width = (TOKEN, 1) if features is None else (FEATURE, features)
    expected = body + steps * width * dtype.itemsize
    if len(data) != expected:
        what = "token ids" if features is None else f"steps of {features} float32"
        raise FrameError(
            f"counts add up to {steps} {what}, so the frame should have {expected} bytes; "
            f"it has {len(data)}",
            request_id=request_id,
        )
    inputs = np.frombuffer(data, dtype, steps * width, body)
    if features is not None:
        inputs = inputs.reshape(steps, features)
    return StepFrame(request_id, slots, seqs, counts, inputs)


def encode_frame(
    request_id: int,
    slots: Sequence[int],
    seqs: Sequence[int],
    inputs: Sequence[npt.NDArray[Any]],
    *,
    tokens: bool,
) -> bytes:
    """A request frame (clients and tests; the server only decodes them)."""
    counts = [len(steps) for steps in inputs]
    dtype = TOKEN if tokens else FEATURE
    parts = [
        HEADER.pack(MAGIC, request_id, len(slots)),
        np.asarray(slots, SLOT).tobytes(),
        np.asarray(seqs, SEQ).tobytes(),
        np.asarray(counts, COUNT).tobytes(),
        *(np.ascontiguousarray(steps, dtype).tobytes() for steps in inputs),
    ]
    return b"".join(parts)


def encode_answer(
    request_id: int,
    statuses: Sequence[int] | npt.NDArray[np.uint16],
    seqs: Sequence[int] | npt.NDArray[np.uint64],
    outputs: Sequence[FloatArray],
) -> bytes:
    """An answer frame: `outputs` are the rows of the records with status 0 or 1, in order."""
    parts = [
        HEADER.pack(MAGIC, request_id, len(statuses)),
        np.asarray(statuses, STATUS).tobytes(),
        np.asarray(seqs, SEQ).tobytes(),
        *(np.ascontiguousarray(rows, OUTPUT).tobytes() for rows in outputs),
    ]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Answer:
    """A decoded answer frame; `outputs` holds the rows of the records with status 0 or 1."""

    request_id: int
    statuses: npt.NDArray[np.uint16]
    seqs: npt.NDArray[np.uint64]
    outputs: FloatArray  # flat float32; the reader splits it by its records' row counts


def decode_answer(data: bytes) -> Answer:
    """An answer frame (clients and tests)."""
    magic, request_id, n = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError(f"the answer starts with {magic!r}", request_id=request_id)
    offset = HEADER.size
    statuses = np.frombuffer(data, STATUS, n, offset)
    seqs = np.frombuffer(data, SEQ, n, offset + n * STATUS.itemsize)
    outputs = np.frombuffer(data, OUTPUT, offset=offset + n * (STATUS.itemsize + SEQ.itemsize))
    return Answer(request_id, statuses, seqs, outputs)
