"""`WS /v1/models/{name}/mux`: many sessions of one model version over one WebSocket.

Each session is bound to a connection-local slot number by a JSON control message (text
frame); steps travel in RNM1 binary frames (service/edges/mux_wire.py), many sessions per
frame. The records of one frame run as one batched step (operations.multistep), with the
exactly-once rules of `POST /v1/sessions/{id}/steps`, in the same store, so a session opened
here can be stepped over REST, WebSocket or V2 and back. Frames of one connection are answered
in order; a frame naming one slot twice applies those records one after the other.

Control (text frames; every answer carries the slot):
    {"op": "open", "slot": S, "initial_state"?: {...}}  -> {"op": "opened", "session_id", "seq": 0}
    {"op": "attach", "slot": S, "session_id": "..."}    -> {"op": "attached", "session_id", "seq"}
    {"op": "detach", "slot": S}                          -> {"op": "detached"}
    {"op": "delete", "slot": S}                          -> {"op": "deleted", "session_id"}
    any failure -> {"op": "error", "slot"?, "request_id"?, "type", "message", "detail"}
The connection stays up after any error; it is refused (in-band error, then close 4000 + the
HTTP status) only when the model cannot stream or does not exist.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.core.card import Head
from service.core.state import FloatArray
from service.core.version import LoadedModel
from service.edges.errors import close_code_for, mux_status_for
from service.edges.http.codec import count_of, fields_of, to_state
from service.edges.http.deps import engine_of, owner_of, query_version
from service.edges.mux_wire import (
    MuxStatus,
    StepFrame,
    decode_frame,
    encode_answer,
    peek_request_id,
)
from service.edges.ws_auth import chosen_protocol
from service.errors import InternalError, InvalidInputError, LimitExceededError, RnnServeError
from service.metrics import Metrics
from service.operations.sessions import SessionManager
from service.operations.step_columns import StepColumns

log = logging.getLogger(__name__)

router = APIRouter(tags=["streaming"])

MAX_SLOT = 2**32 - 1
CLOSE_INTERNAL_ERROR = 1011
CONTROL_FIELDS = {
    "open": frozenset({"op", "slot", "initial_state"}),
    "attach": frozenset({"op", "slot", "session_id"}),
    "detach": frozenset({"op", "slot"}),
    "delete": frozenset({"op", "slot"}),
}


def error_message(exc: RnnServeError, **where: int | None) -> bytes:
    """The in-band error of the mux stream, naming the slot or request it concerns."""
    body: dict[str, Any] = {"op": "error", **{k: v for k, v in where.items() if v is not None}}
    body.update(type=exc.type, message=exc.message, detail=exc.detail)
    return orjson.dumps(body)


@dataclass(slots=True)
class MuxConnection:
    """One mux socket: its model version, its caller, and the sessions bound to its slots."""

    sessions: SessionManager
    model: LoadedModel
    owner: str | None
    metrics: Metrics
    max_records: int
    max_slots: int
    slots: dict[int, str] = field(default_factory=dict)

    async def control(self, payload: Any) -> dict[str, Any]:
        """Run one control message; its answer."""
        op = payload.get("op") if isinstance(payload, dict) else None
        if op not in CONTROL_FIELDS:
            raise InvalidInputError(f"op must be one of {sorted(CONTROL_FIELDS)}")
        body = fields_of(payload, CONTROL_FIELDS[op], f"a {op} message")
        slot = count_of(body.get("slot"), "slot", minimum=0)
        if slot > MAX_SLOT:
            raise InvalidInputError(f"slot must be at most {MAX_SLOT}")
        if op == "open":
            return await self._open(slot, body.get("initial_state"))
        if op == "attach":
            return await self._attach(slot, body.get("session_id"))
        session_id = self._bound(slot)
        if op == "delete":
            await self.sessions.delete(session_id, self.owner)
        del self.slots[slot]
        answer = {"op": "detached" if op == "detach" else "deleted", "slot": slot}
        return answer if op == "detach" else {**answer, "session_id": session_id}

    def _bound(self, slot: int) -> str:
        session_id = self.slots.get(slot)
        if session_id is None:
            raise InvalidInputError(f"slot {slot} is not bound to a session")
        return session_id

    def _free(self, slot: int) -> None:
        if slot in self.slots:
            raise InvalidInputError(
                f"slot {slot} is bound to a session already; detach it first",
                detail={"session_id": self.slots[slot]},
            )
        if len(self.slots) >= self.max_slots:
            raise LimitExceededError(
                f"this connection binds its maximum of {self.max_slots} slots",
                detail={"limit": self.max_slots},
            )

    def _described(self, op: str, slot: int, session_id: str, seq: int) -> dict[str, Any]:
        card = self.model.card
        return {
            "op": op,
            "slot": slot,
            "session_id": session_id,
            "seq": seq,
            "model": self.model.name,
            "version": self.model.version,
            "output_size": card.output_size,
            "rows": "per_sequence" if card.head == Head.PER_SEQUENCE else "per_step",
        }

    async def _open(self, slot: int, raw_state: Any) -> dict[str, Any]:
        self._free(slot)
        initial = None
        if raw_state is not None:
            initial = to_state(raw_state, self.model.card, where="initial_state")
        record = await self.sessions.open(self.model, initial, self.owner)
        self.slots[slot] = record.session_id
        return self._described("opened", slot, record.session_id, record.seq)

    async def _attach(self, slot: int, session_id: Any) -> dict[str, Any]:
        if not isinstance(session_id, str):
            raise InvalidInputError("session_id must be a string")
        if self.slots.get(slot) != session_id:
            self._free(slot)
            if session_id in self.slots.values():
                raise InvalidInputError(f"session {session_id} is bound to another slot")
        record = await self.sessions.get(session_id, self.owner)
        if (record.model, record.version) != (self.model.name, self.model.version):
            raise InvalidInputError(
                f"session {session_id} runs {record.model} v{record.version}; this stream "
                f"serves {self.model.name} v{self.model.version} (connect with ?version=)",
                detail={"model": record.model, "version": record.version},
            )
        self.slots[slot] = session_id
        return self._described("attached", slot, session_id, record.seq)

    async def steps(self, data: bytes) -> bytes:
        """Run one binary step frame; the answer frame."""
        card = self.model.card
        frame = decode_frame(
            data,
            features=None if card.takes_tokens else card.input_size,
            max_records=self.max_records,
        )
        slots = frame.slots.tolist()
        statuses = np.full(len(slots), MuxStatus.GONE, np.uint16)
        next_seqs = np.zeros(len(slots), np.uint64)
        waves = _waves(slots)
        answered_rows: dict[int, FloatArray] = {}  # record -> its rows, when there are waves
        outputs = np.zeros((0, 0), np.float32)
        for wave in waves:
            indices = [i for i in wave if slots[i] in self.slots]
            if not indices:
                continue
            answers = await self.sessions.step_many(
                self.model, self._columns(frame, slots, indices), self.owner
            )
            at = np.asarray(indices)
            statuses[at] = np.where(answers.replayed, MuxStatus.REPLAYED, MuxStatus.APPLIED)
            for index, error in answers.errors.items():
                statuses[indices[index]] = mux_status_for(error)
            next_seqs[at] = np.maximum(answers.next_seqs, 0)
            if len(waves) == 1:
                outputs = answers.outputs
            else:
                for index in np.flatnonzero(answers.answered).tolist():
                    rows = answers.outputs_of(index)
                    assert rows is not None
                    answered_rows[indices[index]] = rows
        if answered_rows:
            outputs = np.concatenate([answered_rows[i] for i in sorted(answered_rows)])
        self._count(statuses)
        return encode_answer(frame.request_id, statuses, next_seqs, [outputs])

    def _columns(self, frame: StepFrame, slots: list[int], indices: list[int]) -> StepColumns:
        if len(indices) == len(slots):  # the whole frame: its columns as they came
            return StepColumns(
                [self.slots[s] for s in slots], frame.seqs, frame.counts, frame.inputs
            )
        sequences = frame.record_inputs()
        return StepColumns.of(
            [self.slots[slots[i]] for i in indices],
            frame.seqs[indices],
            [sequences[i] for i in indices],
        )

    def _count(self, statuses: npt.NDArray[np.uint16]) -> None:
        counts = np.bincount(statuses, minlength=len(MuxStatus))
        for status in MuxStatus:
            if counts[status]:
                self.metrics.mux_records.labels(status.name.lower()).inc(int(counts[status]))


def _waves(slots: list[int]) -> list[list[int]]:
    """Record indices grouped so that no group names a slot twice, in frame order: the
    k-th record of a slot goes in group k, after the group holding its (k-1)-th."""
    waves: list[list[int]] = []
    seen: dict[int, int] = {}
    for index, slot in enumerate(slots):
        wave = seen.get(slot, 0)
        seen[slot] = wave + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(index)
    return waves


@router.websocket("/v1/models/{name}/mux")
async def mux_stream(websocket: WebSocket, name: str) -> None:
    """Many sessions of one model version (`?version=` pins it) over one socket."""
    await websocket.accept(subprotocol=chosen_protocol(websocket.scope))
    engine = engine_of(websocket)
    try:
        sessions = engine.sessions
        model = sessions.streamable_model(name, query_version(websocket))
    except RnnServeError as exc:
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.send_text(error_message(exc).decode())
            await websocket.close(code=close_code_for(exc), reason=exc.type)
        return
    connection = MuxConnection(
        sessions=sessions,
        model=model,
        owner=owner_of(websocket),
        metrics=engine.metrics,
        max_records=engine.settings.mux_max_records,
        max_slots=engine.settings.max_sessions,
    )
    try:
        await _serve(websocket, connection)
    except WebSocketDisconnect:
        return
    except Exception:
        log.exception("mux stream of %s failed", name)
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_INTERNAL_ERROR, "internal error")


async def _serve(websocket: WebSocket, connection: MuxConnection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            await _step_frame(websocket, connection, data)
            continue
        slot = None
        try:
            payload = orjson.loads(message.get("text") or "")
            if isinstance(payload, dict) and isinstance(payload.get("slot"), int):
                slot = payload["slot"]
            answer = await connection.control(payload)
        except orjson.JSONDecodeError as exc:
            bad = InvalidInputError(f"a control message is JSON: {exc}")
            await websocket.send_text(error_message(bad).decode())
        except RnnServeError as exc:
            await websocket.send_text(error_message(exc, slot=slot).decode())
        else:
            await websocket.send_text(orjson.dumps(answer).decode())


async def _step_frame(websocket: WebSocket, connection: MuxConnection, data: bytes) -> None:
    request_id = peek_request_id(data)
    try:
        answer = await connection.steps(data)
    except RnnServeError as exc:
        await websocket.send_text(error_message(exc, request_id=request_id).decode())
        return
    except Exception:
        # the batch failed (onnxruntime raised): nothing was written, the frame can be resent
        log.exception("mux frame %s of %s failed", request_id, connection.model.name)
        failed = InternalError("internal error; nothing was applied, the frame can be resent")
        await websocket.send_text(error_message(failed, request_id=request_id).decode())
        return
    await websocket.send_bytes(answer)
