"""Hostile connections against a real server on loopback: hundreds of sockets that never
speak, trickle a request a byte at a time, or trickle a body. A well-behaved client keeps
getting its answers meanwhile, and every hostile socket is closed by the configured deadlines
(`idle_timeout_s`, `request_timeout_s`), each close counted in /metrics.

The latency factor for the well-behaved client is measured in bench (`python -m bench.hostile`),
not asserted here: the machine is shared and timings are noise in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.models import RandomRepository
from tests.support.streams import metric

pytestmark = [pytest.mark.e2e]

IDLE, TRICKLE_HEADERS, TRICKLE_BODY = 150, 50, 50
RESET = b"reset"
CLOSED_WITHIN_S = 30.0  # a guard against hanging, not a performance claim
PREDICT = {"inputs": [[[0.5, -1.0], [0.25, 2.0]]]}
BODY_HEAD = (
    b"POST /v1/models/gru1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


async def trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    """Send `data` a byte at a time until the server closes the socket."""
    with contextlib.suppress(ConnectionError, OSError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before closing (EOF), within the guard; RESET when the close
    came as a reset (the server closed with our trickled bytes still unread in its buffer)."""
    try:
        return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)
    except ConnectionResetError:
        return RESET


async def hostile_run(base_url: str) -> dict[str, Any]:
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle = [await asyncio.open_connection(host, port) for _ in range(IDLE)]
    headers = [await asyncio.open_connection(host, port) for _ in range(TRICKLE_HEADERS)]
    bodies = [await asyncio.open_connection(host, port) for _ in range(TRICKLE_BODY)]
    tasks = [
        asyncio.create_task(
            trickle(w, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 500, 0.1)
        )
        for _, w in headers
    ]
    for _, w in bodies:
        w.write(BODY_HEAD)
    tasks += [asyncio.create_task(trickle(w, b"[" * 1000, 0.1)) for _, w in bodies]

    statuses = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for _ in range(40):
            answer = await client.post("/v1/models/gru1/predict", json=PREDICT)
            statuses.append(answer.status_code)
        idle_answers = await asyncio.gather(*(closed_by_server(r) for r, _ in idle))
        header_answers = await asyncio.gather(*(closed_by_server(r) for r, _ in headers))
        body_answers = await asyncio.gather(*(closed_by_server(r) for r, _ in bodies))
        for task in tasks:
            task.cancel()
        metrics = (await client.get("/metrics")).text
        after = await client.post("/v1/models/gru1/predict", json=PREDICT)
    for _, w in idle + headers + bodies:
        w.close()
    return {
        "statuses": statuses,
        "idle": idle_answers,
        "headers": header_answers,
        "bodies": body_answers,
        "metrics": metrics,
        "after": after.status_code,
    }


def test_idle_and_trickling_sockets_are_cut_off_and_others_are_served(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(
        random_repository.path,
        env={
            "RNNSERVE_IDLE_TIMEOUT_S": "1",
            "RNNSERVE_REQUEST_TIMEOUT_S": "2",
            "RNNSERVE_ACCESS_LOG": "false",
        },
    )
    result = asyncio.run(hostile_run(server.base_url))
    assert result["statuses"] == [200] * 40
    assert result["after"] == 200
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in result["idle"])
    assert all(a.startswith(b"HTTP/1.1 408 ") or a == RESET for a in result["headers"])
    # a late body: the connection is closed under the route, which never answered
    assert all(a in (b"", RESET) for a in result["bodies"])
    rejections = "rnnserve_limit_rejections_total"
    assert metric(result["metrics"], rejections, 'limit="idle_timeout"') == IDLE
    assert metric(result["metrics"], rejections, 'limit="request_timeout"') == (
        TRICKLE_HEADERS + TRICKLE_BODY
    )
    assert '"level":"error"' not in server.log()
