"""Streaming against a real `rnnserve serve` process: REST and WebSocket on one session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import RandomRepository
from tests.reference import assert_close, card_of, run_alone
from tests.sessions.harness import random_state, random_steps

pytestmark = pytest.mark.e2e

MODEL = "lstm-tok"


async def stream_mixed(base_url: str, steps: list[Any], initial: dict[str, Any]) -> dict[str, Any]:
    """Chunks alternate REST and WebSocket, with a reconnect and a resent step in the middle."""
    ws_url = base_url.replace("http://", "ws://")
    outputs: list[Any] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        opened = await client.post(f"/v1/models/{MODEL}/sessions", json={"initial_state": initial})
        assert opened.status_code == 201, opened.text
        session_id = opened.json()["session_id"]
        first = await client.post(
            f"/v1/sessions/{session_id}/steps", json={"seq": 0, "inputs": steps[:3]}
        )
        outputs += first.json()["outputs"]
        async with websockets.connect(f"{ws_url}/v1/sessions/{session_id}/stream") as ws:
            assert json.loads(await ws.recv())["seq"] == 3  # the greeting
            for seq in range(3, 6):
                await ws.send(json.dumps({"seq": seq, "inputs": steps[seq : seq + 1]}))
                outputs += json.loads(await ws.recv())["outputs"]
            await ws.send(json.dumps({"seq": 6, "inputs": steps[6:8]}))  # answer never read
            await ws.recv()
        async with websockets.connect(f"{ws_url}/v1/sessions/{session_id}/stream") as ws:
            assert json.loads(await ws.recv())["seq"] == 8  # the greeting: the lost step applied
            await ws.send(json.dumps({"seq": 6, "inputs": steps[6:8]}))  # resent after reconnect
            outputs += json.loads(await ws.recv())["outputs"]
        last = await client.post(
            f"/v1/sessions/{session_id}/steps", json={"seq": 8, "inputs": steps[8:]}
        )
        outputs += last.json()["outputs"]
        assert last.json()["seq"] == len(steps)
        state = (await client.get(f"/v1/sessions/{session_id}/state")).json()["state"]
    return {"outputs": outputs, "state": state}


def test_a_real_server_streams_over_rest_and_websocket_like_one_run(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(random_repository.path)
    version_dir = random_repository.path / MODEL / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(8)
    steps = random_steps(card, 12, rng)
    initial = random_state(card, rng)
    got = asyncio.run(stream_mixed(server.base_url, steps, initial))
    expected = run_alone(version_dir, steps, initial)
    assert_close(got["outputs"], expected.y)
    assert_close(got["state"]["h"], expected.h)
    assert expected.c is not None
    assert_close(got["state"]["c"], expected.c)


async def open_model_stream(base_url: str, steps: list[Any]) -> list[Any]:
    ws_url = base_url.replace("http://", "ws://")
    outputs: list[Any] = []
    async with websockets.connect(f"{ws_url}/v1/models/{MODEL}/stream") as ws:
        hello = json.loads(await ws.recv())
        assert hello["seq"] == 0
        for seq, step in enumerate(steps):
            await ws.send(json.dumps({"seq": seq, "inputs": [step]}).encode())  # binary frame
            outputs += json.loads(await ws.recv())["outputs"]
    return outputs


def test_a_model_stream_opens_its_own_session_on_a_real_server(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(random_repository.path)
    version_dir = random_repository.path / MODEL / "1"
    steps = random_steps(card_of(version_dir), 6, np.random.default_rng(3))
    outputs = asyncio.run(open_model_stream(server.base_url, steps))
    assert_close(outputs, run_alone(version_dir, steps).y)
