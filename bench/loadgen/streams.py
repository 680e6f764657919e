"""Stream clients: sessions opened over REST, then single steps over REST or a WebSocket.

Every stream is a closed loop of its own (the next step goes out when the previous answer is
back), with its own step counter, as a real client streaming a sensor would behave. The
PyTriton client carries the hidden state itself, the way Triton's dynamic batcher forces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen.closedloop import Worker
from bench.loadgen.rawhttp import Connection, encode_request
from bench.loadgen.rawws import RawWebSocket, raw_connect
from bench.model import HIDDEN_SIZE, NUM_LAYERS, json_floats, v2_json_body, v2_outputs

SETUP_CONCURRENCY = 64


def step_inputs(rng: np.random.Generator, count: int = 16) -> list[bytes]:
    """Pre-encoded `[[f]*32]` step inputs the streams cycle through."""
    steps = np.round(rng.standard_normal((count, 1, 32)), 4)
    return [orjson.dumps(json_floats(step)) for step in steps]


def step_body(seq: int, inputs: bytes) -> bytes:
    """`{"seq": n, "inputs": [[...]]}` without re-encoding the floats."""
    return b'{"seq":%d,"inputs":%s}' % (seq, inputs)


async def bounded(calls: Sequence[Any], concurrency: int = SETUP_CONCURRENCY) -> list[Any]:
    """Await coroutine factories with at most `concurrency` in flight, results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Any) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def open_sessions(
    port: int, model: str, count: int, *, concurrency: int = SETUP_CONCURRENCY
) -> list[str]:
    """Open `count` sessions over REST (bounded concurrency, one connection per slot)."""
    raw = encode_request("POST", f"/v1/models/{model}/sessions", b"{}")
    connections = [Connection(port) for _ in range(concurrency)]
    ids: list[str] = []

    async def worker(connection: Connection, share: int) -> None:
        for _ in range(share):
            answer = await connection.request(raw)
            if answer.status not in (200, 201):
                raise RuntimeError(f"opening a session: HTTP {answer.status} {answer.body[:200]!r}")
            ids.append(orjson.loads(answer.body)["session_id"])

    shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
    try:
        await asyncio.gather(*(worker(c, s) for c, s in zip(connections, shares, strict=True)))
    finally:
        for connection in connections:
            connection.close()
    return ids


async def delete_sessions(port: int, ids: Sequence[str]) -> None:
    """Best-effort cleanup (a Redis store outlives the server)."""
    connections = [Connection(port) for _ in range(min(SETUP_CONCURRENCY, len(ids)) or 1)]

    async def worker(connection: Connection, mine: Sequence[str]) -> None:
        for session_id in mine:
            await connection.request(encode_request("DELETE", f"/v1/sessions/{session_id}"))

    try:
        await asyncio.gather(
            *(worker(c, ids[i :: len(connections)]) for i, c in enumerate(connections))
        )
    finally:
        for connection in connections:
            connection.close()


def rest_workers(
    port: int, session_ids: Sequence[str], inputs: Sequence[bytes]
) -> tuple[list[Worker], list[Connection]]:
    """One closed-loop REST stream per session: POST /v1/sessions/{id}/steps."""

    def make(index: int, session_id: str, connection: Connection) -> Worker:
        seq = 0
        path = f"/v1/sessions/{session_id}/steps"

        async def call() -> str | None:
            nonlocal seq
            body = step_body(seq, inputs[(index + seq) % len(inputs)])
            answer = await connection.request(encode_request("POST", path, body))
            if answer.status != 200:
                return f"HTTP {answer.status}: {answer.body[:120]!r}"
            seq += 1
            return None

        return call

    connections = [Connection(port) for _ in session_ids]
    workers = [make(i, s, c) for i, (s, c) in enumerate(zip(session_ids, connections, strict=True))]
    return workers, connections


async def ws_connect(url: str) -> ClientConnection:
    """A plain client: no compression, no proxy, no keepalive pings during the load; the
    stream's greeting (the session) is read here, before any step."""
    socket = await connect(url, compression=None, proxy=None, max_size=None, ping_interval=None)
    await socket.recv()
    return socket


async def raw_ws_connect(url: str) -> RawWebSocket:
    """The load's client (bench.loadgen.rawws, far cheaper per message than `websockets`); the
    stream's greeting is read here, before any step."""
    socket = await raw_connect(url)
    await socket.recv(decode=False)
    return socket


async def ws_workers(
    port: int, session_ids: Sequence[str], inputs: Sequence[bytes]
) -> tuple[list[Worker], list[RawWebSocket]]:
    """One WebSocket per session on /v1/sessions/{id}/stream, connected with bounded concurrency."""
    sockets: list[RawWebSocket] = await bounded(
        [
            lambda s=session_id: raw_ws_connect(f"ws://127.0.0.1:{port}/v1/sessions/{s}/stream")
            for session_id in session_ids
        ]
    )

    def make(index: int, socket: RawWebSocket) -> Worker:
        seq = 0

        async def call() -> str | None:
            nonlocal seq
            await socket.send(step_body(seq, inputs[(index + seq) % len(inputs)]), text=True)
            message = await socket.recv(decode=False)
            if b'"error"' in message:
                return f"error message: {bytes(message)[:160]!r}"
            seq += 1
            return None

        return call

    return [make(i, s) for i, s in enumerate(sockets)], sockets


async def close_sockets(sockets: Sequence[ClientConnection | RawWebSocket]) -> None:
    """Close every WebSocket, bounded."""
    await bounded([lambda s=s: s.close() for s in sockets])


def triton_workers(
    port: int, model: str, streams: int, rng: np.random.Generator
) -> tuple[list[Worker], list[Connection]]:
    """V2 JSON infer per step; the client sends h0 and keeps hn (batch-major)."""
    path = f"/v2/models/{model}/infer"
    steps = np.round(rng.standard_normal((16, 1, 1, 32)), 4).astype(np.float32)

    def make(index: int, connection: Connection) -> Worker:
        state = np.zeros((1, NUM_LAYERS, HIDDEN_SIZE), dtype=np.float32)
        position = index

        async def call() -> str | None:
            nonlocal state, position
            body = v2_json_body(steps[position % len(steps)], state)
            answer = await connection.request(encode_request("POST", path, body))
            if answer.status != 200:
                return f"HTTP {answer.status}: {answer.body[:120]!r}"
            state = v2_outputs(answer.body, answer.header_length)["hn"]
            position += 1
            return None

        return call

    connections = [Connection(port) for _ in range(streams)]
    return [make(i, c) for i, c in enumerate(connections)], connections
