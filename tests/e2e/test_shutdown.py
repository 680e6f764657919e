"""SIGTERM under load: the server stops accepting, finishes every request it took, exits, and
says what became of the sessions."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.models import RandomRepository
from tests.support.redis import PrivateRedis, private_redis
from tests.support.servers import ServerProcess
from tests.support.streams import Stream, make_streams, open_stream, stored_session

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = httpx.Timeout(60.0)
STEPS_PER_REQUEST = 50


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    server = private_redis(tmp_path)
    yield server
    server.stop()


def heavy_predict() -> dict[str, Any]:
    """256 token sequences of 10,000 steps: about a second of work for the server."""
    tokens = np.random.default_rng(5).integers(0, 11, (256, 10_000))
    return {"inputs": tokens.tolist(), "output": "last"}


async def load(client: httpx.AsyncClient, stream: Stream, finished_at: list[float]) -> None:
    """Step until the server stops answering; a failed request must not have been applied."""
    while not stream.done:
        try:
            answer = await client.post(
                f"/v1/sessions/{stream.session_id}/steps", json=stream.body(STEPS_PER_REQUEST)
            )
        except httpx.TransportError:
            return  # checked against the other replica afterwards
        if answer.status_code == 503:
            return  # refused, not applied (checked likewise)
        assert answer.status_code == 200, answer.text
        stream.acknowledge(answer.json())
        finished_at.append(time.monotonic())


async def sigterm_run(
    victim: ServerProcess, witness: ServerProcess, redis: PrivateRedis, streams: list[Stream]
) -> float:
    """Load the victim, hold its step requests in flight (Redis frozen), SIGTERM it, thaw.
    Returns when SIGTERM went out; every completion time is checked against it."""
    finished_at: list[float] = []
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=victim.base_url, timeout=TIMEOUT) as client,
        httpx.AsyncClient(base_url=victim.base_url, timeout=TIMEOUT, limits=no_keepalive) as big,
        httpx.AsyncClient(base_url=witness.base_url, timeout=TIMEOUT) as other,
    ):
        for stream in streams:
            await open_stream(client, stream)
        loads = [asyncio.create_task(load(client, s, finished_at)) for s in streams]
        body = heavy_predict()
        predicts = [asyncio.create_task(big.post("/v1/models/lstm-tok/predict", json=body))]
        await asyncio.sleep(1.0)
        redis.freeze()  # every stream's next step now waits inside the victim
        await asyncio.sleep(0.5)
        signalled_at = time.monotonic()
        os.kill(victim.process.pid, signal.SIGTERM)
        await asyncio.sleep(0.5)
        redis.thaw()
        for predicted in await asyncio.gather(*predicts):
            assert predicted.status_code == 200, predicted.text
        await asyncio.gather(*loads)
        assert any(at > signalled_at for at in finished_at)  # in flight at SIGTERM, completed
        for stream in streams:
            stored = await stored_session(other, stream)
            assert stored["seq"] == stream.seq  # nothing applied without its answer delivered
            stream.check()
            stream.check_state(stored["state"])
        return signalled_at


def test_sigterm_under_load_finishes_every_request_it_accepted(
    server_factory: Any, random_repository: RandomRepository, redis_server: PrivateRedis
) -> None:
    env = {
        "RNNSERVE_SESSION_STORE": redis_server.url,
        "RNNSERVE_STORE_TIMEOUT_S": "5",
        "RNNSERVE_SHUTDOWN_GRACE_S": "30",
    }
    victim = server_factory(random_repository.path, env=env)
    witness = server_factory(random_repository.path, env=env)
    streams = make_streams(random_repository.path, 16, 100_000, seed=6)
    asyncio.run(sigterm_run(victim, witness, redis_server, streams))
    victim.process.wait(timeout=30)
    log = victim.log()
    assert "sessions are kept in the shared store" in log
    assert "Cancel" not in log  # uvicorn's grace never ran out


def test_on_sigterm_the_memory_store_says_its_sessions_are_lost(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(random_repository.path)
    opened = httpx.post(f"{server.base_url}/v1/models/gru1/sessions", timeout=10)
    assert opened.status_code == 201
    server.stop(signal.SIGTERM)
    assert "1 in-memory sessions are lost" in server.log()
