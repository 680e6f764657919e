"""Two real `rnnserve serve` processes sharing Redis: any replica serves any step, and
killing one mid-stream costs its clients one retry, never their state."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.models import RandomRepository
from tests.support.redis import PATIENT_TIMEOUT_S, drop_prefix, fresh_prefix, store_url
from tests.support.reference import assert_close
from tests.support.streams import Stream, make_streams, metric, open_stream, stored_session

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture
def prefix() -> Iterator[str]:
    key_prefix = fresh_prefix()
    yield key_prefix
    asyncio.run(drop_prefix(key_prefix))


def redis_env(prefix: str) -> dict[str, str]:
    return {
        "RNNSERVE_SESSION_STORE": store_url(prefix),
        "RNNSERVE_STORE_TIMEOUT_S": str(PATIENT_TIMEOUT_S),
        "RNNSERVE_ACCESS_LOG": "false",
    }


async def alternate(streams: list[Stream], urls: list[str]) -> None:
    """Every stream sends step k to replica k mod len(urls), one step per request."""
    clients = [httpx.AsyncClient(base_url=url, timeout=TIMEOUT) for url in urls]

    async def run(stream: Stream) -> None:
        await open_stream(clients[0], stream)
        while not stream.done:
            answer = await clients[stream.seq % len(clients)].post(
                f"/v1/sessions/{stream.session_id}/steps", json=stream.body()
            )
            assert answer.status_code == 200, answer.text
            stream.acknowledge(answer.json())

    try:
        await asyncio.gather(*(run(s) for s in streams))
    finally:
        for client in clients:
            await client.aclose()


def test_streams_alternating_between_replicas_equal_a_single_process_run(
    server_factory: Any, random_repository: RandomRepository, prefix: str
) -> None:
    env = redis_env(prefix)
    first = server_factory(random_repository.path, env=env)
    second = server_factory(random_repository.path, env=env)
    single = server_factory(random_repository.path, env={"RNNSERVE_ACCESS_LOG": "false"})
    shared = make_streams(random_repository.path, 12, 10, seed=1)
    alone = make_streams(random_repository.path, 12, 10, seed=1)
    asyncio.run(alternate(shared, [first.base_url, second.base_url]))
    asyncio.run(alternate(alone, [single.base_url]))
    for two, one in zip(shared, alone, strict=True):
        assert two.seq == one.seq == 10
        assert_close(two.outputs, np.asarray(one.outputs, np.float32))
        two.check()


async def failover_run(streams: list[Stream], urls: list[str], victim: int) -> int:
    """Streams alternate replicas; at 40% of all steps the first replica is killed (-9).
    A stream whose request fails in transport retries the same step on the other replica."""
    clients = {url: httpx.AsyncClient(base_url=url, timeout=TIMEOUT) for url in urls}
    total = sum(len(s.steps) for s in streams)
    acknowledged = 0

    async def run(index: int, stream: Stream) -> None:
        nonlocal acknowledged
        alive = list(urls)
        await open_stream(clients[alive[index % 2]], stream)
        while not stream.done:
            url = alive[(stream.seq + index) % len(alive)]
            try:
                answer = await clients[url].post(
                    f"/v1/sessions/{stream.session_id}/steps", json=stream.body()
                )
            except httpx.TransportError:
                alive.remove(url)  # that replica is gone for this client: retry on the other
                stream.retries += 1
                continue
            assert answer.status_code == 200, answer.text
            stream.acknowledge(answer.json())
            acknowledged += 1
            if acknowledged == int(0.4 * total):
                os.kill(victim, signal.SIGKILL)

    try:
        await asyncio.gather(*(run(i, s) for i, s in enumerate(streams)))
        survivor = clients[urls[1]]
        for stream in streams:
            stored = await stored_session(survivor, stream)
            assert stored["seq"] == stream.seq == len(stream.steps)  # no step applied twice
            stream.check_state(stored["state"])
        metrics = (await survivor.get("/metrics")).text
        assert metric(metrics, "rnnserve_session_steps_total", 'outcome="conflict"') == 0
        return int(metric(metrics, "rnnserve_session_steps_total", 'outcome="replayed"'))
    finally:
        for client in clients.values():
            await client.aclose()


def test_killing_a_replica_mid_stream_costs_one_retry_and_no_state(
    server_factory: Any, random_repository: RandomRepository, prefix: str
) -> None:
    env = redis_env(prefix)
    victim = server_factory(random_repository.path, env=env)
    survivor = server_factory(random_repository.path, env=env)
    streams = make_streams(random_repository.path, 50, 20, seed=2)
    asyncio.run(failover_run(streams, [victim.base_url, survivor.base_url], victim.process.pid))
    assert victim.process.wait(timeout=10) == -signal.SIGKILL
    assert sum(s.retries for s in streams) > 0
    for stream in streams:
        stream.check()
