"""`MuxStream`: many sessions of one model over one WebSocket, in RNM1 binary frames.

    async with AsyncClient(url) as client, await client.mux("co2-forecaster") as mux:
        a, b = await mux.open(), await mux.open()
        results = await mux.step({a: [[315.7]], b: [[316.1], [317.0]]})
        print(results[a].outputs, results[b].seq)

One `step` call sends one frame with a record per session and returns a result per session.
Each session's `seq` is tracked here, so a frame resent after a dropped socket carries the same
seqs and the server answers what it already applied from its records (status REPLAYED) instead
of applying it twice: on a drop the stream reconnects, re-attaches every session to its slot
and resends. Records the server could not serve for now (status UNAVAILABLE) are resent after
the retry policy's delay. The wire format is documented in the server's docs/mux.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rnnserve_client.errors import ConnectionLostError, StreamClosedError, error_from

if TYPE_CHECKING:
    from rnnserve_client.aio import AsyncClient
    from rnnserve_client.types import State

MAGIC = b"RNM1"
HEADER = struct.Struct("<4sII")
BIG_ENDIAN_HOST = sys.byteorder == "big"


class MuxStatus(IntEnum):
    """What became of one record (the server's statuses, docs/mux.md)."""

    APPLIED = 0
    REPLAYED = 1
    CONFLICT = 2
    GONE = 3
    INVALID = 4
    UNAVAILABLE = 5
    OVER_LIMIT = 6


@dataclass(eq=False)
class MuxSession:
    """A session bound to a slot of a `MuxStream`; `seq` is the next step index it expects."""

    slot: int
    session_id: str
    seq: int
    output_size: int
    per_step: bool


@dataclass(frozen=True, slots=True)
class MuxResult:
    """One session's answer: `outputs` ([rows][outputs]) when `ok`, and the session's `seq`
    (the next expected; for CONFLICT the one the server expects)."""

    status: MuxStatus
    seq: int
    outputs: list[list[float]] | None

    @property
    def ok(self) -> bool:
        """Applied now, or applied before and answered again."""
        return self.status in (MuxStatus.APPLIED, MuxStatus.REPLAYED)


def _little_endian(values: array[Any]) -> bytes:
    if BIG_ENDIAN_HOST:
        values.byteswap()
    return values.tobytes()


def encode_steps(
    request_id: int, records: list[tuple[MuxSession, list[Any]]], *, tokens: bool
) -> bytes:
    """An RNM1 request frame: a record per (session, steps), at each session's seq."""
    slots = array("I", (s.slot for s, _ in records))
    seqs = array("Q", (s.seq for s, _ in records))
    counts = array("I", (len(steps) for _, steps in records))
    flat: array[Any] = array("q") if tokens else array("f")
    for _, steps in records:
        if tokens:
            flat.extend(int(token) for token in steps)
        else:
            for step in steps:
                flat.extend(float(v) for v in step)
    parts = [HEADER.pack(MAGIC, request_id, len(records))]
    parts += [_little_endian(a) for a in (slots, seqs, counts, flat)]
    return b"".join(parts)


def decode_results(data: bytes, records: list[tuple[MuxSession, list[Any]]]) -> list[MuxResult]:
    """The records of an RNM1 answer frame, outputs cut per session."""
    magic, _, n = HEADER.unpack_from(data)
    if magic != MAGIC or n != len(records):
        raise StreamClosedError("the server answered a frame that is not RNM1", type="protocol")
    offset = HEADER.size
    statuses = struct.unpack_from(f"<{n}H", data, offset)
    seqs = struct.unpack_from(f"<{n}Q", data, offset + 2 * n)
    floats = array("f", data[offset + 10 * n :])
    if BIG_ENDIAN_HOST:
        floats.byteswap()
    results = []
    at = 0
    for status, seq, (session, steps) in zip(statuses, seqs, records, strict=True):
        outputs = None
        if status in (MuxStatus.APPLIED, MuxStatus.REPLAYED):
            rows = len(steps) if session.per_step else 1
            width = session.output_size
            outputs = [list(floats[at + r * width : at + (r + 1) * width]) for r in range(rows)]
            at += rows * width
        results.append(MuxResult(MuxStatus(status), seq, outputs))
    return results


@dataclass
class MuxStream:
    """Many sessions of one model version over one socket (see the module doc).

    One call at a time goes over the socket (calls wait for each other); open several streams
    to keep several frames in flight."""

    client: AsyncClient
    model: str
    version: int | None = None
    tokens: bool = False
    _socket: ClientConnection | None = field(default=None, repr=False)
    _sessions: dict[int, MuxSession] = field(default_factory=dict, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _next_slot: int = 0
    _next_request: int = 1

    async def __aenter__(self) -> MuxStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def sessions(self) -> list[MuxSession]:
        """The sessions bound to this stream, by slot."""
        return [self._sessions[slot] for slot in sorted(self._sessions)]

    async def connect(self) -> None:
        """Open the socket (and learn whether the model takes token ids)."""
        info = await self.client.model(self.model, version=self.version)
        self.version = info.version
        self.tokens = (info.card or {}).get("vocab_size") is not None
        await self._open_socket()

    async def _open_socket(self) -> None:
        from rnnserve_client.aio import ws_protocols

        url = self.client.base_url.replace("http", "ws", 1)
        self._socket = await connect(
            f"{url}/v1/models/{self.model}/mux?version={self.version}",
            subprotocols=ws_protocols(self.client.api_key),  # type: ignore[arg-type]
            open_timeout=self.client.timeout_s,
            max_size=None,
        )

    async def _control(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self._socket is not None
        await self._socket.send(json.dumps(message))
        answer: dict[str, Any] = json.loads(await self._socket.recv())
        if answer.get("op") == "error":
            raise error_from({"error": answer}, status=None)
        return answer

    def _bind(self, answer: dict[str, Any]) -> MuxSession:
        session = MuxSession(
            slot=answer["slot"],
            session_id=answer["session_id"],
            seq=answer["seq"],
            output_size=answer["output_size"],
            per_step=answer["rows"] == "per_step",
        )
        self._sessions[session.slot] = session
        return session

    def _free_slot(self) -> int:
        while self._next_slot in self._sessions:
            self._next_slot += 1
        return self._next_slot

    async def open(self, initial_state: State | None = None) -> MuxSession:
        """A new session on the next free slot (from zeros, or `initial_state`)."""
        async with self._lock:
            message: dict[str, Any] = {"op": "open", "slot": self._free_slot()}
            if initial_state is not None:
                message["initial_state"] = initial_state
            return self._bind(await self._control(message))

    async def attach(self, session_id: str) -> MuxSession:
        """An existing session (opened anywhere: REST, another stream, another replica);
        attaching is idempotent, so it is resent over a new socket when the socket drops."""
        async with self._lock:
            message = {"op": "attach", "slot": self._free_slot(), "session_id": session_id}
            attempts = self.client.retry.attempts
            for attempt in range(attempts):
                try:
                    return self._bind(await self._control(message))
                except (ConnectionClosed, OSError) as exc:
                    if attempt == attempts - 1:
                        break
                    await self._reconnect(attempt, exc)
            raise ConnectionLostError(
                f"mux stream of {self.model}: attach got no answer after {attempts} attempts",
                type="connection_lost",
            )

    async def detach(self, session: MuxSession) -> None:
        """Free the session's slot; the session lives on until its TTL."""
        async with self._lock:
            await self._control({"op": "detach", "slot": session.slot})
            del self._sessions[session.slot]

    async def delete(self, session: MuxSession) -> None:
        """Delete the session on the server and free its slot."""
        async with self._lock:
            await self._control({"op": "delete", "slot": session.slot})
            del self._sessions[session.slot]

    async def step(self, inputs: Mapping[MuxSession, list[Any]]) -> dict[MuxSession, MuxResult]:
        """One frame: each session's steps at its seq; a result per session."""
        results: dict[MuxSession, MuxResult] = {}
        pending = list(inputs.items())
        retry = self.client.retry
        async with self._lock:
            for attempt in range(retry.attempts):
                for (session, _), result in zip(
                    pending, await self._exchange(pending), strict=True
                ):
                    results[session] = result
                    if result.ok:
                        session.seq = result.seq
                pending = [(s, x) for s, x in pending if results[s].status == MuxStatus.UNAVAILABLE]
                if not pending or attempt == retry.attempts - 1:
                    break
                await asyncio.sleep(retry.delay_s(attempt))
        return results

    async def _exchange(self, records: list[tuple[MuxSession, list[Any]]]) -> list[MuxResult]:
        request_id = self._next_request
        self._next_request = (self._next_request + 1) % 2**32
        frame = encode_steps(request_id, records, tokens=self.tokens)
        attempts = self.client.retry.attempts
        for attempt in range(attempts):
            try:
                assert self._socket is not None
                await self._socket.send(frame)
                answer = await self._socket.recv()
            except (ConnectionClosed, OSError, AssertionError) as exc:
                if attempt == attempts - 1:
                    break
                await self._reconnect(attempt, exc)
                continue
            if isinstance(answer, str):
                raise error_from({"error": json.loads(answer)}, status=None)
            return decode_results(answer, records)
        raise ConnectionLostError(
            f"mux stream of {self.model}: no answer after {attempts} attempts",
            type="connection_lost",
        )

    async def _reconnect(self, attempt: int, error: Exception) -> None:
        await asyncio.sleep(self.client.retry.delay_s(attempt, error))
        with contextlib.suppress(OSError, ConnectionClosed, asyncio.TimeoutError, InvalidStatus):
            await self._open_socket()
            assert self._socket is not None
            # every attach goes out at once, then every answer is read: one round trip for all
            # (a session gone meanwhile answers an error here, and GONE in the resent frame)
            for session in self.sessions:
                message = {"op": "attach", "slot": session.slot, "session_id": session.session_id}
                await self._socket.send(json.dumps(message))
            for _ in self._sessions:
                await self._socket.recv()

    async def aclose(self) -> None:
        """Close the socket; the sessions live on until their TTL."""
        if self._socket is not None:
            await self._socket.close()
