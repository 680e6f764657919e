"""A real server whose Redis (a private redis-server on its own port) stops, or freezes,
mid-run: sessions answer 503 with Retry-After, predict keeps serving, nothing acknowledged is
lost or corrupted, and the server uses Redis again as soon as it is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.models import RandomRepository
from tests.support.redis import PrivateRedis, private_redis
from tests.support.streams import (
    Stream,
    make_streams,
    metric,
    open_stream,
    patiently,
    stored_session,
)

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = httpx.Timeout(30.0)
BACK_WITHIN_S = 30.0  # a guard against hanging, not a performance claim
PREDICT = {"inputs": [[[0.5, -1.0], [0.25, 2.0]]]}


def server_env(redis_url: str) -> dict[str, str]:
    return {
        "RNNSERVE_SESSION_STORE": redis_url,
        "RNNSERVE_STORE_TIMEOUT_S": "0.5",
        "RNNSERVE_ACCESS_LOG": "false",
    }


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    server = private_redis(tmp_path)
    yield server
    server.stop()


async def step_until(client: httpx.AsyncClient, stream: Stream, stop: asyncio.Event) -> list[int]:
    """Step until `stop`; a refused step is resent as is. Returns every status seen."""
    statuses = []
    while not stop.is_set() and not stream.done:
        answer = await client.post(f"/v1/sessions/{stream.session_id}/steps", json=stream.body())
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            stream.acknowledge(answer.json())
        elif answer.status_code == 503:
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.json()["error"]["type"] == "store_unavailable"
            await asyncio.sleep(0.05)
        else:
            assert answer.status_code == 404, answer.text  # Redis came back empty
            return statuses
    return statuses


async def outage_run(
    base_url: str, redis: PrivateRedis, streams: list[Stream], repository: Path
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client:
        for stream in streams:
            await open_stream(client, stream)
        stop = asyncio.Event()
        runs = [asyncio.create_task(step_until(client, s, stop)) for s in streams]
        await asyncio.sleep(0.5)
        redis.stop()
        await asyncio.sleep(1.0)
        assert (await client.post("/v1/models/gru1/predict", json=PREDICT)).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["session_store"]["status"] == "degraded"
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "rnnserve_session_store_up") == 0
        opened = await client.post("/v1/models/gru1/sessions")
        assert opened.status_code == 503 and "Retry-After" in opened.headers
        redis.start()  # empty: Redis keeps nothing across a restart here
        deadline = time.monotonic() + BACK_WITHIN_S
        while (opened := await client.post("/v1/models/gru1/sessions")).status_code != 201:
            assert time.monotonic() < deadline, opened.text
            await asyncio.sleep(0.1)
        stop.set()
        statuses = [s for run in runs for s in await run]
        assert set(statuses) <= {200, 503, 404}  # never a 500
        assert 503 in statuses and 200 in statuses
        for stream in streams:
            lost = await client.get(f"/v1/sessions/{stream.session_id}")
            assert lost.status_code == 404
            assert lost.json()["error"]["type"] == "session_not_found"
            stream.check()  # every acknowledged answer was right
        fresh = make_streams(repository, 1, 5, seed=9)[0]
        await open_stream(client, fresh)
        url = f"/v1/sessions/{fresh.session_id}/steps"
        for _ in range(5):
            answer = await patiently(lambda: client.post(url, json=fresh.body()))
            assert answer.status_code == 200, answer.text
            fresh.acknowledge(answer.json())
        fresh.check()
        for _ in range(50):  # up again (one ping may still miss on a starved machine)
            ready = (await client.get("/health/ready")).json()["session_store"]
            if ready["status"] == "up":
                break
        assert ready["status"] == "up", ready


def test_redis_stopping_mid_run_gives_503s_and_new_sessions_once_it_is_back(
    server_factory: Any, random_repository: RandomRepository, redis_server: PrivateRedis
) -> None:
    server = server_factory(random_repository.path, env=server_env(redis_server.url))
    streams = make_streams(random_repository.path, 8, 10_000, seed=3)
    asyncio.run(outage_run(server.base_url, redis_server, streams, random_repository.path))


async def freeze_run(base_url: str, redis: PrivateRedis, streams: list[Stream]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client:
        for stream in streams:
            await open_stream(client, stream)
        stop = asyncio.Event()
        runs = [asyncio.create_task(step_until(client, s, stop)) for s in streams]
        await asyncio.sleep(0.5)
        redis.freeze()
        # bounded: the store's timeouts turn a silent Redis into 503s, not hung requests
        frozen = await client.get(f"/v1/sessions/{streams[0].session_id}")
        assert frozen.status_code == 503 and "Retry-After" in frozen.headers
        assert (await client.post("/v1/models/gru1/predict", json=PREDICT)).status_code == 200
        await asyncio.sleep(1.5)
        redis.thaw()
        await asyncio.sleep(1.0)
        stop.set()
        statuses = [s for run in runs for s in await run]
        assert set(statuses) <= {200, 503} and 503 in statuses
        for stream in streams:
            # a 503 may hide a step Redis applied after all: resending it gets its answer
            stored = await stored_session(client, stream)
            assert stored["seq"] in (stream.seq, stream.seq + 1)
            url = f"/v1/sessions/{stream.session_id}/steps"
            answer = await patiently(lambda: client.post(url, json=stream.body()))  # noqa: B023
            assert answer.status_code == 200, answer.text
            stream.acknowledge(answer.json())
            stored = await stored_session(client, stream)
            assert stored["seq"] == stream.seq
            stream.check()
            stream.check_state(stored["state"])


def test_a_frozen_redis_answers_503_in_bounded_time_and_streams_resume_intact(
    server_factory: Any, random_repository: RandomRepository, redis_server: PrivateRedis
) -> None:
    server = server_factory(random_repository.path, env=server_env(redis_server.url))
    streams = make_streams(random_repository.path, 8, 10_000, seed=4)
    asyncio.run(freeze_run(server.base_url, redis_server, streams))
