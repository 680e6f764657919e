"""The mux stream on two real replicas sharing Redis: sessions opened on one replica, which is
then killed, are attached on the other and continue exactly where they were."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from rnnserve_client import AsyncClient, MuxSession, MuxStream

from tests.e2e.test_redis_replicas import redis_env
from tests.support.models import RandomRepository
from tests.support.redis import drop_prefix, fresh_prefix
from tests.support.reference import assert_close, card_of, random_steps, run_alone

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]

MODEL = "rnn-feat"
SESSIONS = 16
STEPS = 10


@pytest.fixture
def prefix() -> Iterator[str]:
    key_prefix = fresh_prefix()
    yield key_prefix
    asyncio.run(drop_prefix(key_prefix))


async def stream_steps(
    mux: MuxStream, sessions: list[MuxSession], inputs: list[list[Any]], steps: range
) -> list[list[Any]]:
    """One frame per step index, every session in it; each session's outputs, step by step."""
    outputs: list[list[Any]] = [[] for _ in sessions]
    for step in steps:
        results = await mux.step({s: [inputs[i][step]] for i, s in enumerate(sessions)})
        for i, session in enumerate(sessions):
            assert results[session].ok, results[session]
            outputs[i] += results[session].outputs or []
    return outputs


def test_mux_sessions_survive_their_replica_and_continue_on_another(
    server_factory: Any, random_repository: RandomRepository, prefix: str
) -> None:
    version_dir = random_repository.path / MODEL / "1"
    rng = np.random.default_rng(5)
    inputs = [random_steps(card_of(version_dir), STEPS, rng) for _ in range(SESSIONS)]
    first = server_factory(random_repository.path, env=redis_env(prefix))
    second = server_factory(random_repository.path, env=redis_env(prefix))

    async def run() -> list[list[Any]]:
        async with AsyncClient(first.base_url) as client:
            mux = await client.mux(MODEL)
            sessions = [await mux.open() for _ in range(SESSIONS)]
            before = await stream_steps(mux, sessions, inputs, range(STEPS // 2))
        first.stop(signal.SIGKILL)
        async with AsyncClient(second.base_url) as client:
            mux = await client.mux(MODEL)
            async with mux:
                moved = [await mux.attach(s.session_id) for s in sessions]
                assert [s.seq for s in moved] == [STEPS // 2] * SESSIONS
                after = await stream_steps(mux, moved, inputs, range(STEPS // 2, STEPS))
        return [b + a for b, a in zip(before, after, strict=True)]

    outputs = asyncio.run(run())
    for got, steps in zip(outputs, inputs, strict=True):
        assert_close(got, run_alone(version_dir, steps).y)
