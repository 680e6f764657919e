"""RNM1 to a mux socket in tests: control messages, step frames, answers split per record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from service.edges.mux_wire import MuxStatus, decode_answer, encode_frame


class FrameSocket(Protocol):
    """What the mux helpers need of a WebSocket (in process or real)."""

    async def send_json(self, payload: Any) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def receive_json(self) -> Any: ...
    async def receive_bytes(self) -> bytes: ...


@dataclass(frozen=True)
class RecordAnswer:
    """One record of an answer frame; `outputs` [rows, out] for statuses 0 and 1, else None."""

    status: MuxStatus
    seq: int
    outputs: np.ndarray | None


@dataclass(frozen=True)
class Step:
    """One record of a request frame."""

    slot: int
    seq: int
    inputs: Any  # [count, features] floats or [count] token ids


async def control(ws: FrameSocket, **message: Any) -> Any:
    """Send a control message; the answer."""
    await ws.send_json(message)
    return await ws.receive_json()


async def open_slots(ws: FrameSocket, slots: range | list[int]) -> dict[int, str]:
    """Open a session on each slot; slot -> session id."""
    opened = {}
    for slot in slots:
        answer = await control(ws, op="open", slot=slot)
        assert answer["op"] == "opened", answer
        opened[slot] = answer["session_id"]
    return opened


def split_answer(
    data: bytes, steps: list[Step], *, output_size: int, per_step: bool = True
) -> list[RecordAnswer]:
    """The answer frame's records, outputs cut by each record's row count."""
    answer = decode_answer(data)
    assert len(answer.statuses) == len(steps)
    records = []
    offset = 0
    for status, seq, step in zip(answer.statuses, answer.seqs, steps, strict=True):
        outputs = None
        if status in (MuxStatus.APPLIED, MuxStatus.REPLAYED):
            rows = len(step.inputs) if per_step else 1
            size = rows * output_size
            outputs = answer.outputs[offset : offset + size].reshape(rows, output_size)
            offset += size
        records.append(RecordAnswer(MuxStatus(int(status)), int(seq), outputs))
    assert offset == len(answer.outputs)
    return records


async def send_steps(
    ws: FrameSocket,
    steps: list[Step],
    *,
    output_size: int,
    tokens: bool = False,
    request_id: int = 7,
    per_step: bool = True,
) -> list[RecordAnswer]:
    """Send one frame of `steps`; its records' answers."""
    frame = encode_frame(
        request_id,
        [s.slot for s in steps],
        [s.seq for s in steps],
        [np.asarray(s.inputs) for s in steps],
        tokens=tokens,
    )
    await ws.send_bytes(frame)
    data = await ws.receive_bytes()
    assert decode_answer(data).request_id == request_id
    return split_answer(data, steps, output_size=output_size, per_step=per_step)
