"""The multiplexed binary stream (`WS /v1/models/{name}/mux`, issue 12), spoken directly from
the spec: JSON control frames bind connection-local slots to sessions, binary step frames carry
one record per slot, column-wise and little-endian.

    request  b"RNM1", u32 request_id, u32 n, u32 slot[n], u64 seq[n], u32 count[n],
             float32 inputs [sum(count), features]
    answer   b"RNM1", u32 request_id, u32 n, u16 status[n], u64 seq[n],
             float32 outputs [rows, outputs] for the records whose status is 0 or 1

A load is a few connections, each with its share of the sessions on slots 0..k-1, each a
closed loop of one frame in flight holding one single-step record per slot.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen.closedloop import Worker
from bench.loadgen.rawws import RawWebSocket, raw_connect
from bench.model import INPUT_SIZE, OUTPUT_SIZE, Array

MAGIC = b"RNM1"
HEADER = struct.Struct("<4sII")
APPLIED, REPLAYED, CONFLICT, UNKNOWN, INVALID, UNAVAILABLE, OVER_LIMIT = range(7)
STATUS_NAMES = ("applied", "replay", "conflict", "unknown slot", "invalid", "store", "limit")
OPEN_TIMEOUT_S = 30.0


class MuxError(RuntimeError):
    """The server answered a control message with an error, or a frame we cannot read."""


@dataclass(frozen=True)
class MuxAnswer:
    """One decoded answer frame."""

    request_id: int
    status: npt.NDArray[np.uint16]
    seq: npt.NDArray[np.uint64]
    outputs: Array


def encode_request(
    request_id: int,
    slots: npt.NDArray[Any],
    seqs: npt.NDArray[Any],
    counts: npt.NDArray[Any],
    inputs: Array,
) -> bytes:
    """One step frame; `inputs` is `[sum(counts), features]` float32 in record order."""
    return b"".join(
        (
            HEADER.pack(MAGIC, request_id, len(slots)),
            np.asarray(slots, "<u4").tobytes(),
            np.asarray(seqs, "<u8").tobytes(),
            np.asarray(counts, "<u4").tobytes(),
            np.asarray(inputs, "<f4").tobytes(),
        )
    )


def decode_answer(frame: bytes, outputs: int = OUTPUT_SIZE) -> MuxAnswer:
    """Split an answer frame into its columns (raises MuxError on a frame that does not add up)."""
    if len(frame) < HEADER.size:
        raise MuxError(f"answer of {len(frame)} bytes is shorter than its header")
    magic, request_id, n = HEADER.unpack_from(frame)
    body = HEADER.size + 10 * n
    if magic != MAGIC or len(frame) < body or (len(frame) - body) % (4 * outputs):
        raise MuxError(f"malformed answer: magic {magic!r}, n {n}, {len(frame)} bytes")
    status = np.frombuffer(frame, "<u2", n, HEADER.size)
    seq = np.frombuffer(frame, "<u8", n, HEADER.size + 2 * n)
    rows = np.frombuffer(frame, "<f4", offset=body).reshape(-1, outputs)
    return MuxAnswer(request_id, status, seq, rows)


def describe_statuses(status: npt.NDArray[np.uint16]) -> str:
    """`conflict x3, unknown slot x1` for the records that were not applied."""
    values, counts = np.unique(status[status != APPLIED], return_counts=True)
    return ", ".join(
        f"{STATUS_NAMES[v] if v < len(STATUS_NAMES) else v} x{c}"
        for v, c in zip(values.tolist(), counts.tolist(), strict=True)
    )


def mux_url(port: int, model: str) -> str:
    """The mux endpoint of one model on loopback."""
    return f"ws://127.0.0.1:{port}/v1/models/{model}/mux"


async def mux_connect(url: str) -> ClientConnection:
    """A plain client like the WebSocket streams': no compression, proxy or pings."""
    return await connect(url, compression=None, proxy=None, max_size=None, ping_interval=None)


Socket = ClientConnection | RawWebSocket


async def control(socket: Socket, messages: Sequence[dict[str, Any]]) -> list[Any]:
    """Send control messages back to back, then read one text answer per message (an
    `error` answer raises MuxError)."""
    for message in messages:
        await socket.send(orjson.dumps(message).decode(), text=True)
    answers = []
    async with asyncio.timeout(OPEN_TIMEOUT_S):
        while len(answers) < len(messages):
            frame = await socket.recv()
            if isinstance(frame, bytes):
                raise MuxError(f"binary frame while waiting for control answers: {frame[:40]!r}")
            answer = orjson.loads(frame)
            if answer.get("op") == "error":
                raise MuxError(f"{answer.get('type')}: {answer.get('message')}")
            answers.append(answer)
    return answers


async def open_slots(socket: Socket, count: int) -> list[str]:
    """Open `count` sessions on slots 0..count-1; their session ids by slot."""
    answers = await control(socket, [{"op": "open", "slot": s} for s in range(count)])
    by_slot = {a["slot"]: a["session_id"] for a in answers if a.get("op") == "opened"}
    if len(by_slot) != count:
        raise MuxError(f"opened {len(by_slot)} of {count} slots: {str(answers[:2])[:200]}")
    return [by_slot[s] for s in range(count)]


async def step_frame(socket: Socket, frame: bytes) -> MuxAnswer:
    """Send one step frame and read its answer (a text frame is the server's error)."""
    await socket.send(frame, text=False)
    answer = await socket.recv(decode=False)
    if isinstance(answer, str) or answer[:4] != MAGIC:
        raise MuxError(f"answered {bytes(answer)[:200]!r}")
    return decode_answer(bytes(answer))


@dataclass
class MuxLoad:
    """The connections of one mux load and the sessions on them."""

    sockets: list[RawWebSocket]
    per_connection: int

    async def release(self, *, delete: bool) -> None:
        """Delete the sessions (best effort: a Redis store outlives the server), then close."""

        async def one(socket: RawWebSocket) -> None:
            try:
                if delete:
                    for slot in range(self.per_connection):
                        message = {"op": "delete", "slot": slot}
                        await socket.send(orjson.dumps(message).decode(), text=True)
                await socket.close()
            except Exception:
                return

        await asyncio.gather(*(one(s) for s in self.sockets))


async def mux_load(port: int, model: str, sessions: int, connections: int) -> MuxLoad:
    """Connect, and open `sessions` sessions spread evenly over `connections` sockets."""
    per_connection = sessions // connections
    sockets = [await raw_connect(mux_url(port, model)) for _ in range(connections)]
    try:
        await asyncio.gather(*(open_slots(s, per_connection) for s in sockets))
    except BaseException:
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
        raise
    return MuxLoad(sockets, per_connection)


def mux_workers(load: MuxLoad, rng: np.random.Generator, blocks: int = 8) -> list[Worker]:
    """One closed loop per connection: a frame of one single-step record per slot."""
    n = load.per_connection
    slots = np.arange(n, dtype="<u4")
    counts = np.ones(n, dtype="<u4")
    inputs = [
        np.round(rng.standard_normal((n, INPUT_SIZE)), 4).astype("<f4") for _ in range(blocks)
    ]

    def make(index: int, socket: RawWebSocket) -> Worker:
        seqs = np.zeros(n, dtype="<u8")
        request_id = 0

        async def call() -> str | None:
            nonlocal seqs, request_id
            request_id += 1
            block = inputs[(index + request_id) % len(inputs)]
            frame = encode_request(request_id, slots, seqs, counts, block)
            try:
                answer = await step_frame(socket, frame)
            except MuxError as exc:
                return str(exc)
            if answer.request_id != request_id or len(answer.status) != n:
                return f"answer for request {answer.request_id} ({len(answer.status)} records)"
            # applied and conflicting records both tell the next expected seq
            seqs = answer.seq.astype("<u8")
            if not (answer.status == APPLIED).all():
                return f"records not applied: {describe_statuses(answer.status)}"
            return None

        return call

    return [make(i, s) for i, s in enumerate(load.sockets)]
