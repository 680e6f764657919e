"""Hostile bodies against a live session: each gets a 4xx (or an in-band error over a
WebSocket) and no session changes, none is created, the server keeps answering.

Predict's own bad inputs are in test_bad_input.py and V2's binary framing in test_v2_binary.py;
this file aims at what holds state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest

from tests.support.app import Harness, cpu_settings, running_app
from tests.support.models import RandomRepository
from tests.support.v2 import binary_body

STEP = [0.1, 0.2, 0.3, 0.4]  # one step of rnn-feat
MIB = 1024 * 1024

HOSTILE: dict[str, bytes] = {
    "deeply nested json": b'{"seq": 1, "inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "nested past numpy's dimensions": b'{"seq": 1, "inputs": '
    + b"[" * 200
    + b"0.5"
    + b"]" * 200
    + b"}",
    "huge feature dimension": orjson.dumps({"seq": 1, "inputs": [[0.5] * 1_000_000]}),
    "huge step count": orjson.dumps({"seq": 1, "inputs": [STEP] * 20_000}),
    "NaN literal": b'{"seq": 1, "inputs": [[NaN, 0, 0, 0]]}',
    "Infinity literal": b'{"seq": 1, "inputs": [[Infinity, 0, 0, 0]]}',
    "overflowing float": b'{"seq": 1, "inputs": [[1e400, 0, 0, 0]]}',
    "unicode features": orjson.dumps({"seq": 1, "inputs": [["①", "\u0000", "😀", "é"]]}),
    "unicode field": orjson.dumps({"seq": 1, "inputs": [STEP], "ínputs": [STEP]}),
    "invalid utf-8": b'{"seq": 1, "inputs": [["\xff\xfe", 0, 0, 0]]}',
    "10 MB of whitespace": b" " * (10 * MIB),
    "whitespace around nothing": b" " * MIB + b"{" + b" " * MIB,
    "seq beyond 64 bits": b'{"seq": 100000000000000000000000000000, "inputs": [[0, 0, 0, 0]]}',
    "negative seq": orjson.dumps({"seq": -1, "inputs": [STEP]}),
    "seq as a string": orjson.dumps({"seq": "1", "inputs": [STEP]}),
    "null inputs": orjson.dumps({"seq": 1, "inputs": None}),
    "duplicate keys": b'{"seq": 1, "inputs": [[0, 0, 0, 0]], "inputs": "x"}',
}


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    settings = cpu_settings(random_repository.path, max_body_bytes=16 * MIB, max_steps=10_000)
    async with running_app(settings) as harness:
        yield harness


async def snapshot(app: Harness, session_id: str) -> tuple[int, bytes]:
    described = await app.client.get(f"/v1/sessions/{session_id}")
    state = await app.client.get(f"/v1/sessions/{session_id}/state")
    return described.json()["seq"], state.content


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_step_gets_a_4xx_and_leaves_the_session_as_it_was(
    app: Harness, body: bytes
) -> None:
    session_id = (await app.client.post("/v1/models/rnn-feat/sessions")).json()["session_id"]
    steps = f"/v1/sessions/{session_id}/steps"
    assert (await app.client.post(steps, json={"seq": 0, "inputs": [STEP]})).status_code == 200
    before = await snapshot(app, session_id)
    answer = await app.client.post(
        steps, content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert "error" in answer.json()
    assert await snapshot(app, session_id) == before
    after = await app.client.post(steps, json={"seq": 1, "inputs": [STEP]})
    assert after.status_code == 200 and after.json()["seq"] == 2


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_session_open_creates_no_session(app: Harness, body: bytes) -> None:
    answer = await app.client.post(
        "/v1/models/rnn-feat/sessions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert app.metric("rnnserve_live_sessions") == 0
    assert app.metric("rnnserve_session_events_total", {"event": "opened"}) == 0


async def test_hostile_websocket_messages_get_in_band_errors_and_change_nothing(
    app: Harness,
) -> None:
    small = {k: v for k, v in HOSTILE.items() if len(v) < app.engine.settings.ws_max_message_bytes}
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        session_id = (await ws.receive_json())["session_id"]
        await ws.send_json({"seq": 0, "inputs": [STEP]})
        assert (await ws.receive_json())["seq"] == 1
        before = await snapshot(app, session_id)
        # fewer than MAX_MALFORMED_MESSAGES in a row, then a good one resets the count
        for name, body in small.items():
            await ws.send_bytes(body)
            assert "error" in await ws.receive_json(), name
            if name.startswith("unicode"):
                await ws.send_json({"seq": 1, "inputs": [STEP]})
                assert (await ws.receive_json())["seq"] == 2
                before = await snapshot(app, session_id)
        assert await snapshot(app, session_id) == before


async def test_a_lying_v2_binary_size_is_refused_before_allocating(app: Harness) -> None:
    x = np.ones((1, 2, 4), np.float32)
    body, length = binary_body({"x": x}, size_offsets={"x": 2**62})
    answer = await app.client.post(
        "/v2/models/rnn-feat/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(length)},
    )
    assert answer.status_code == 400
    huge = {
        "inputs": [{"name": "x", "shape": [1, 2**40, 4], "datatype": "FP32", "data": [0.5] * 8}]
    }
    assert (await app.client.post("/v2/models/rnn-feat/infer", json=huge)).status_code in (
        400,
        413,
    )
