"""Isolation under concurrency: many sessions stepping at once, batched across sessions, each
answer equal to that session's solo run."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from tests.conftest import RandomRepository, cpu_settings
from tests.reference import assert_close, card_of, run_alone
from tests.sessions.harness import Harness, random_state, random_steps, running_app

SESSIONS = 200
MODEL = "lstm3"


async def run_session(
    app: Harness, steps: list[Any], initial: dict[str, Any], over_ws: bool
) -> tuple[list[Any], dict[str, Any]]:
    """Open a session and send its steps one at a time; outputs and final state."""
    opened = await app.client.post(f"/v1/models/{MODEL}/sessions", json={"initial_state": initial})
    session_id = opened.json()["session_id"]
    outputs: list[Any] = []
    if over_ws:
        async with app.ws(f"/v1/sessions/{session_id}/stream") as ws:
            assert (await ws.receive_json())["seq"] == 0  # the greeting
            for seq, step in enumerate(steps):
                await ws.send_json({"seq": seq, "inputs": [step]})
                outputs.extend((await ws.receive_json())["outputs"])
    else:
        for seq, step in enumerate(steps):
            response = await app.client.post(
                f"/v1/sessions/{session_id}/steps", json={"seq": seq, "inputs": [step]}
            )
            assert response.status_code == 200, response.text
            outputs.extend(response.json()["outputs"])
    state = (await app.client.get(f"/v1/sessions/{session_id}/state")).json()["state"]
    return outputs, state


async def test_concurrent_sessions_are_isolated_and_batched_together(
    random_repository: RandomRepository,
) -> None:
    version_dir = random_repository.path / MODEL / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(200)
    plans = [
        (random_steps(card, int(rng.integers(3, 9)), rng), random_state(card, rng))
        for _ in range(SESSIONS)
    ]
    async with running_app(cpu_settings(random_repository.path)) as app:
        results = await asyncio.gather(
            *(run_session(app, steps, state, i % 2 == 0) for i, (steps, state) in enumerate(plans))
        )
        labels = {"model": MODEL, "version": "1", "kind": "step"}
        calls = app.metric("rnnserve_batch_size_count", labels)
        alone = app.metric("rnnserve_batch_size_bucket", {**labels, "le": "1.0"})
        rows = app.metric("rnnserve_batch_size_sum", labels)
    assert rows == sum(len(steps) for steps, _ in plans)
    assert calls > alone, "the step batcher never ran two sessions in one call"
    for (steps, state0), (outputs, state) in zip(plans, results, strict=True):
        expected = run_alone(version_dir, steps, state0)
        assert_close(outputs, expected.y)
        assert_close(state["h"], expected.h)
        assert expected.c is not None
        assert_close(state["c"], expected.c)
