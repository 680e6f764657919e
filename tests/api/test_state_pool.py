"""Sessions with the device state pool on (CPU OrtValues here) answer exactly what they answer
with it off: chunked steps, a replay, a conflict, a reset, an export, a session's state taken
back, many sessions interleaved; and the steps after the first come from the pool."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.settings import DeviceFeature
from tests.support.app import Harness, cpu_settings, running_app
from tests.support.models import RandomRepository
from tests.support.redis import PATIENT_TIMEOUT_S, drop_prefix, fresh_prefix, store_url

MODEL = "lstm3"  # three layers, h and c: two state tensors of three rows each
POOL_METRIC = "rnnserve_state_pool_lookups_total"


async def scripted_run(app: Harness, rng: np.random.Generator) -> list[Any]:
    """One fixed sequence of session requests; every answer, in order."""
    answers: list[Any] = []

    async def post(path: str, body: dict[str, Any] | None = None) -> None:
        response = await app.client.post(path, json=body)
        answers.append((path.rsplit("/", 1)[-1], response.status_code, response.json()))

    sessions = []
    for _ in range(5):
        opened = await app.client.post(f"/v1/models/{MODEL}/sessions")
        sessions.append(opened.json()["session_id"])
    seqs = dict.fromkeys(sessions, 0)
    for round_ in range(4):
        for sid in sessions:
            steps = rng.standard_normal((int(rng.integers(1, 4)), 2)).round(4).tolist()
            await post(f"/v1/sessions/{sid}/steps", {"seq": seqs[sid], "inputs": steps})
            if round_ == 1 and sid == sessions[0]:
                # the retry of the request just applied, then one that conflicts with it
                await post(f"/v1/sessions/{sid}/steps", {"seq": seqs[sid], "inputs": steps})
                await post(f"/v1/sessions/{sid}/steps", {"seq": seqs[sid], "inputs": [[0, 0]]})
            seqs[sid] += len(steps)
        if round_ == 2:
            await post(f"/v1/sessions/{sessions[1]}/reset")
            seqs[sessions[1]] = 0
            state = (await app.client.get(f"/v1/sessions/{sessions[2]}/state")).json()
            answers.append(("export", state["state"]))
            # a new session starting from another one's exported state
            opened = await app.client.post(
                f"/v1/models/{MODEL}/sessions", json={"initial_state": state["state"]}
            )
            sessions.append(opened.json()["session_id"])
            seqs[sessions[-1]] = 0
    for sid in sessions:
        answers.append(("final", (await app.client.get(f"/v1/sessions/{sid}/state")).json()))
    return answers


def strip_ids(answers: list[Any]) -> list[Any]:
    """Session ids and times differ between runs; everything else must not."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: clean(v)
                for k, v in value.items()
                if k not in {"session_id", "expires_at", "created_at", "location"}
            }
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return [clean(a) for a in answers]


@pytest.mark.parametrize("store", ["memory"])
async def test_sessions_answer_the_same_with_the_state_pool_on(
    random_repository: RandomRepository, store: str
) -> None:
    runs = {}
    # auto: the pool is for models on CUDA; these run on the CPU, so auto is off here
    for mode in (DeviceFeature.OFF, DeviceFeature.AUTO, DeviceFeature.ON):
        settings = cpu_settings(random_repository.path, state_pool=mode, session_store=store)
        async with running_app(settings) as app:
            runs[mode] = strip_ids(await scripted_run(app, np.random.default_rng(7)))
            labels = {"model": MODEL, "version": "1"}
            hits = app.metric(POOL_METRIC, {**labels, "outcome": "hit"})
            misses = app.metric(POOL_METRIC, {**labels, "outcome": "miss"})
        if mode is DeviceFeature.ON:
            # first steps, the step after the reset and the one after the conflict probe miss;
            # the rest start from the state the pool already holds
            assert hits >= 10 and misses >= 6, (hits, misses)
        else:
            assert hits == misses == 0
    assert runs[DeviceFeature.ON] == runs[DeviceFeature.OFF] == runs[DeviceFeature.AUTO]
    kinds = [a[0] for a in runs[DeviceFeature.ON]]
    statuses = [a[1] for a in runs[DeviceFeature.ON] if len(a) == 3]
    assert "reset" in kinds and "export" in kinds and 409 in statuses


@pytest.mark.redis
async def test_replicas_with_pools_sharing_redis_reload_each_others_writes(
    random_repository: RandomRepository,
) -> None:
    """Steps alternate between two replicas whose pools each hold a state the other replica
    has since advanced: each must start from the stored write, as one replica without a pool."""
    rng = np.random.default_rng(8)
    chunks = [rng.standard_normal((int(rng.integers(1, 3)), 2)).round(4).tolist() for _ in range(8)]
    on = [0, 0, 1, 0, 1, 1, 0, 1]  # which replica takes each step
    prefix = fresh_prefix()
    pooled = cpu_settings(
        random_repository.path,
        state_pool=DeviceFeature.ON,
        session_store=store_url(prefix),
        store_timeout_s=PATIENT_TIMEOUT_S,
    )
    try:
        async with running_app(pooled) as a, running_app(pooled) as b:
            sid = (await a.client.post(f"/v1/models/{MODEL}/sessions")).json()["session_id"]
            seq, got = 0, []
            for chunk, replica in zip(chunks, on, strict=True):
                app = (a, b)[replica]
                response = await app.client.post(
                    f"/v1/sessions/{sid}/steps", json={"seq": seq, "inputs": chunk}
                )
                got.append(response.json()["outputs"])
                seq += len(chunk)
            final = (await b.client.get(f"/v1/sessions/{sid}/state")).json()["state"]
            hits = a.metric(POOL_METRIC, {"model": MODEL, "version": "1", "outcome": "hit"})
            hits += b.metric(POOL_METRIC, {"model": MODEL, "version": "1", "outcome": "hit"})
    finally:
        await drop_prefix(prefix)
    async with running_app(cpu_settings(random_repository.path)) as plain:
        sid = (await plain.client.post(f"/v1/models/{MODEL}/sessions")).json()["session_id"]
        seq, want = 0, []
        for chunk in chunks:
            response = await plain.client.post(
                f"/v1/sessions/{sid}/steps", json={"seq": seq, "inputs": chunk}
            )
            want.append(response.json()["outputs"])
            seq += len(chunk)
        expected = (await plain.client.get(f"/v1/sessions/{sid}/state")).json()["state"]
    assert got == want and final == expected
    assert hits >= 2  # steps 2, 6 (and 8) follow a step on the same replica
