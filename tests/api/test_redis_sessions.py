"""The app over the Redis store, in process: two apps as two replicas, and a store that is down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from tests.api.test_v2_sequences import outputs_of, step
from tests.support.app import Harness, cpu_settings, running_app
from tests.support.models import RandomRepository
from tests.support.redis import PATIENT_TIMEOUT_S, drop_prefix, fresh_prefix, store_url
from tests.support.reference import assert_close, card_of, random_steps, run_alone
from tests.support.servers import free_port
from tests.support.v2 import input_name, random_batch

pytestmark = pytest.mark.redis

MODEL = "lstm3"


@pytest.fixture
async def replicas(random_repository: RandomRepository) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two apps sharing one Redis key prefix: two replicas in one process."""
    prefix = fresh_prefix()
    settings = cpu_settings(
        random_repository.path, session_store=store_url(prefix), store_timeout_s=PATIENT_TIMEOUT_S
    )
    async with running_app(settings) as first, running_app(settings) as second:
        yield first, second
    await drop_prefix(prefix)


async def test_a_session_steps_on_whichever_replica_gets_the_request(
    replicas: tuple[Harness, Harness], random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / MODEL / "1"
    steps = random_steps(card_of(version_dir), 8, np.random.default_rng(1))
    first, second = replicas
    opened = await first.client.post(f"/v1/models/{MODEL}/sessions")
    session_id = opened.json()["session_id"]
    outputs = []
    for seq in range(8):
        replica = (first, second)[seq % 2]
        answer = await replica.client.post(
            f"/v1/sessions/{session_id}/steps", json={"seq": seq, "inputs": steps[seq : seq + 1]}
        )
        assert answer.status_code == 200, answer.text
        outputs += answer.json()["outputs"]
    retried = await first.client.post(
        f"/v1/sessions/{session_id}/steps", json={"seq": 7, "inputs": steps[7:8]}
    )
    assert retried.content == answer.content  # the other replica's answer, byte for byte
    expected = run_alone(version_dir, steps)
    assert_close(outputs, expected.y)
    state = (await second.client.get(f"/v1/sessions/{session_id}/state")).json()["state"]
    assert_close(state["h"], expected.h)
    assert (await first.client.delete(f"/v1/sessions/{session_id}")).status_code == 204
    assert (await second.client.get(f"/v1/sessions/{session_id}")).status_code == 404


async def test_a_v2_sequence_id_started_on_one_replica_continues_on_the_other(
    replicas: tuple[Harness, Harness], random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "gru1" / "1"
    card = card_of(version_dir)
    x = random_batch(card, 1, 4, np.random.default_rng(2))
    first, second = replicas
    name = input_name(card)
    head = outputs_of(
        await step(first.client, "gru1", {name: x[:, :2]}, sequence_id=11, sequence_start=True)
    )
    tail = outputs_of(
        await step(second.client, "gru1", {name: x[:, 2:]}, sequence_id=11, sequence_end=True)
    )
    expected = run_alone(version_dir, x[0])
    assert_close(np.concatenate([head["y"][0], tail["y"][0]]), expected.y)


async def test_with_the_store_down_sessions_answer_503_and_predict_still_serves(
    random_repository: RandomRepository,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = cpu_settings(random_repository.path, session_store=dead, store_timeout_s=0.5)
    async with running_app(settings) as app:
        opened = await app.client.post(f"/v1/models/{MODEL}/sessions")
        assert opened.status_code == 503
        assert opened.json()["error"]["type"] == "store_unavailable"
        assert int(opened.headers["Retry-After"]) >= 1
        stepped = await app.client.post(
            "/v1/sessions/some-id/steps", json={"seq": 0, "inputs": [[0.0, 1.0]]}
        )
        assert stepped.status_code == 503 and "Retry-After" in stepped.headers
        predicted = await app.client.post(
            f"/v1/models/{MODEL}/predict", json={"inputs": [[[0.0, 1.0]]]}
        )
        assert predicted.status_code == 200
        ready = await app.client.get("/health/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready"
        assert body["session_store"]["kind"] == "redis"
        assert body["session_store"]["status"] == "degraded"
        assert app.metric("rnnserve_session_store_up") == 0


async def test_ready_reports_the_store_up(replicas: tuple[Harness, Harness]) -> None:
    first, _ = replicas
    body = (await first.client.get("/health/ready")).json()
    assert body["session_store"] == {"kind": "redis", "status": "up"}
    assert first.metric("rnnserve_session_store_up") == 1
