"""WebSocket streaming in process: opening, stepping, in-band errors, closing, reconnecting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from tests.support.app import Harness, WebSocketClosedError, cpu_settings, running_app
from tests.support.models import RandomRepository
from tests.support.reference import assert_close, run_alone

STEP = [0.1, 0.2, 0.3, 0.4]  # one step of rnn-feat


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    async with running_app(cpu_settings(random_repository.path)) as harness:
        yield harness


async def test_the_model_stream_opens_a_session_and_says_its_id_first(app: Harness) -> None:
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        hello = await ws.receive_json()
        assert (hello["model"], hello["version"], hello["seq"]) == ("rnn-feat", 1, 0)
        await ws.send_json({"seq": 0, "inputs": [STEP, STEP]})
        answer = await ws.receive_json()
        assert (answer["session_id"], answer["seq"]) == (hello["session_id"], 2)
    described = await app.client.get(f"/v1/sessions/{hello['session_id']}")
    assert described.json()["seq"] == 2


async def test_stream_answers_are_the_bytes_rest_answers(
    app: Harness, random_repository: RandomRepository
) -> None:
    response = await app.client.post("/v1/models/rnn-feat/sessions")
    session_id = response.json()["session_id"]
    async with app.ws(f"/v1/sessions/{session_id}/stream") as ws:
        assert (await ws.receive_json())["session_id"] == session_id  # the greeting
        await ws.send_json({"seq": 0, "inputs": [STEP]})
        over_ws = await ws.receive_text()
    over_rest = await app.client.post(
        f"/v1/sessions/{session_id}/steps", json={"seq": 0, "inputs": [STEP]}
    )
    assert over_rest.content == over_ws.encode()  # a retry over REST of the WS step
    expected = run_alone(random_repository.path / "rnn-feat" / "1", [STEP]).y
    assert_close(orjson.loads(over_ws)["outputs"], expected)


async def test_binary_frames_holding_json_are_accepted(app: Harness) -> None:
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        await ws.receive_json()
        await ws.send_bytes(orjson.dumps({"seq": 0, "inputs": [STEP]}))
        assert (await ws.receive_json())["seq"] == 1


async def test_leaving_seq_out_applies_the_next_steps(app: Harness) -> None:
    async with app.ws("/v1/models/lstm-tok/stream") as ws:
        await ws.receive_json()
        for expected_seq in (1, 3, 4):
            count = 2 if expected_seq == 3 else 1
            await ws.send_json({"inputs": [5] * count})
            assert (await ws.receive_json())["seq"] == expected_seq


async def test_errors_come_in_band_and_the_stream_goes_on(app: Harness) -> None:
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        await ws.receive_json()
        await ws.send_text("not json")
        assert (await ws.receive_json())["error"]["type"] == "invalid_input"
        await ws.send_json({"seq": 0, "inputs": [[1.0]]})
        assert (await ws.receive_json())["error"]["type"] == "invalid_input"
        await ws.send_json({"seq": 7, "inputs": [STEP]})
        conflict = (await ws.receive_json())["error"]
        assert conflict["type"] == "session_conflict"
        assert conflict["detail"] == {"expected_seq": 0}
        await ws.send_json({"seq": 0, "inputs": [STEP]})
        assert (await ws.receive_json())["seq"] == 1


async def test_a_client_that_keeps_sending_garbage_is_disconnected(app: Harness) -> None:
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        await ws.receive_json()
        for _ in range(9):
            await ws.send_text("{")
            assert "error" in await ws.receive_json()
        await ws.send_json({"seq": 0, "inputs": [STEP]})  # a good one resets the count
        assert (await ws.receive_json())["seq"] == 1
        for _ in range(10):
            await ws.send_text("[")
            assert "error" in await ws.receive_json()
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_json()
        assert closed.value.code == 1008


async def test_a_reconnecting_client_resumes_the_same_stream(
    app: Harness, random_repository: RandomRepository
) -> None:
    steps = [[float(i), 0.5, -0.5, 1.0] for i in range(5)]
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        session_id = (await ws.receive_json())["session_id"]
        await ws.send_json({"seq": 0, "inputs": steps[:2]})
        outputs = (await ws.receive_json())["outputs"]
        await ws.send_json({"seq": 2, "inputs": steps[2:3]})  # sent, answer lost
    async with app.ws(f"/v1/sessions/{session_id}/stream") as ws:
        greeting = await ws.receive_json()  # says where the session is: the lost step applied
        assert (greeting["session_id"], greeting["seq"]) == (session_id, 3)
        await ws.send_json({"seq": 2, "inputs": steps[2:3]})  # resend: answered, not reapplied
        outputs += (await ws.receive_json())["outputs"]
        await ws.send_json({"seq": 3, "inputs": steps[3:]})
        answer = await ws.receive_json()
        outputs += answer["outputs"]
    assert answer["seq"] == 5
    assert_close(outputs, run_alone(random_repository.path / "rnn-feat" / "1", steps).y)


@pytest.mark.parametrize(
    ("url", "code", "error_type"),
    [
        ("/v1/sessions/nope/stream", 4404, "session_not_found"),
        ("/v1/models/nope/stream", 4404, "model_not_found"),
        ("/v1/models/bi-rnn/stream", 4400, "not_streamable"),
        ("/v1/models/rnn-feat/stream?version=x", 4400, "invalid_input"),
        ("/v1/models/rnn-feat/stream?version=3", 4404, "model_not_found"),
    ],
)
async def test_a_stream_that_cannot_start_says_why_then_closes(
    app: Harness, url: str, code: int, error_type: str
) -> None:
    async with app.ws(url) as ws:
        assert (await ws.receive_json())["error"]["type"] == error_type
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_json()
        assert closed.value.code == code


async def test_a_session_deleted_mid_stream_ends_the_stream(app: Harness) -> None:
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        session_id = (await ws.receive_json())["session_id"]
        await app.client.delete(f"/v1/sessions/{session_id}")
        await ws.send_json({"seq": 0, "inputs": [STEP]})
        assert (await ws.receive_json())["error"]["type"] == "session_not_found"
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_json()
        assert closed.value.code == 4404


async def test_streams_need_the_key_that_owns_the_session(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, api_keys="key-a,key-b")
    async with running_app(settings) as app:
        async with app.ws("/v1/models/rnn-feat/stream") as ws:
            assert (await ws.receive_json())["error"]["type"] == "unauthorized"
            with pytest.raises(WebSocketClosedError) as refused:
                await ws.receive_json()
        assert refused.value.code == 4401
        async with app.ws("/v1/models/rnn-feat/stream", {"X-API-Key": "key-a"}) as ws:
            session_id = (await ws.receive_json())["session_id"]
        async with app.ws(f"/v1/sessions/{session_id}/stream", {"X-API-Key": "key-b"}) as ws:
            assert (await ws.receive_json())["error"]["type"] == "session_not_found"
        async with app.ws(f"/v1/sessions/{session_id}/stream", {"X-API-Key": "key-a"}) as ws:
            assert (await ws.receive_json())["seq"] == 0
            await ws.send_json({"seq": 0, "inputs": [STEP]})
            assert (await ws.receive_json())["seq"] == 1


async def test_the_session_cap_refuses_a_stream_with_a_retry_hint(
    random_repository: RandomRepository,
) -> None:
    async with running_app(cpu_settings(random_repository.path, max_sessions=1)) as app:
        await app.client.post("/v1/models/rnn-feat/sessions")
        async with app.ws("/v1/models/rnn-feat/stream") as ws:
            error = (await ws.receive_json())["error"]
            assert error["type"] == "too_many_sessions" and error["retry_after_s"] >= 1
            with pytest.raises(WebSocketClosedError) as closed:
                await ws.receive_json()
            assert closed.value.code == 4429
