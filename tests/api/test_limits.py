"""Every limit that protects the process refuses in-band or with a 4xx, and is counted in
/metrics under `rnnserve_limit_rejections_total{limit=...}`."""

from __future__ import annotations

import pytest

from tests.support.app import WebSocketClosedError, cpu_settings, running_app
from tests.support.models import RandomRepository

STEP = [0.1, 0.2, 0.3, 0.4]  # one step of rnn-feat
REJECTIONS = "rnnserve_limit_rejections_total"


async def test_an_oversized_websocket_message_gets_an_error_then_close_4413(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, ws_max_message_bytes=1024)
    async with running_app(settings) as app, app.ws("/v1/models/rnn-feat/stream") as ws:
        await ws.receive_json()
        await ws.send_json({"seq": 0, "inputs": [STEP]})
        assert (await ws.receive_json())["seq"] == 1  # under the limit: served
        await ws.send_json({"seq": 1, "inputs": [STEP] * 100})  # about 2 kB
        error = (await ws.receive_json())["error"]
        assert error["type"] == "limit_exceeded" and error["detail"] == {"limit": 1024}
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_text()
        assert closed.value.code == 4413
        assert app.metric(REJECTIONS, {"limit": "ws_message_bytes"}) == 1


async def test_a_connection_over_its_message_rate_gets_an_error_then_close_4429(
    random_repository: RandomRepository,
) -> None:
    # one message per 100 s: the second is over the rate however slow the machine is
    settings = cpu_settings(random_repository.path, ws_max_messages_per_s=0.01)
    async with running_app(settings) as app, app.ws("/v1/models/rnn-feat/stream") as ws:
        await ws.receive_json()
        for seq in range(2):
            await ws.send_json({"seq": seq, "inputs": [STEP]})
        answers = [await ws.receive_json() for _ in range(2)]
        assert answers[0]["seq"] == 1  # the burst: one message
        assert answers[1]["error"]["type"] == "rate_limited"
        assert answers[1]["error"]["retry_after_s"] > 0
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_text()
        assert closed.value.code == 4429
        assert app.metric(REJECTIONS, {"limit": "ws_rate"}) == 1


async def test_an_api_key_over_its_rate_across_sockets_is_refused_and_others_are_not(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(
        random_repository.path, api_keys="k1,k2", ws_max_messages_per_s_per_key=0.01
    )
    k1, k2 = ({"Authorization": f"Bearer {k}"} for k in ("k1", "k2"))
    async with running_app(settings) as app:
        async with (
            app.ws("/v1/models/rnn-feat/stream", k1) as a,
            app.ws("/v1/models/rnn-feat/stream", k1) as b,
            app.ws("/v1/models/rnn-feat/stream", k2) as other,
        ):
            for ws in (a, b, other):
                await ws.receive_json()
            await a.send_json({"seq": 0, "inputs": [STEP]})
            assert (await a.receive_json())["seq"] == 1  # the key's one message per 100 s
            await b.send_json({"seq": 0, "inputs": [STEP]})  # same key, another socket
            assert (await b.receive_json())["error"]["type"] == "rate_limited"
            with pytest.raises(WebSocketClosedError) as closed:
                await b.receive_text()
            assert closed.value.code == 4429
            await other.send_json({"seq": 0, "inputs": [STEP]})  # another key: its own budget
            assert (await other.receive_json())["seq"] == 1
        assert app.metric(REJECTIONS, {"limit": "ws_key_rate"}) == 1


async def test_a_silent_websocket_is_closed_4408_after_its_idle_timeout(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, ws_idle_timeout_s=0.2)
    async with running_app(settings) as app, app.ws("/v1/models/rnn-feat/stream") as ws:
        hello = await ws.receive_json()
        assert (await ws.receive_json())["error"]["type"] == "idle_timeout"
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_text()
        assert closed.value.code == 4408
        assert app.metric(REJECTIONS, {"limit": "ws_idle_timeout"}) == 1
        # the session outlives the socket
        assert (await app.client.get(f"/v1/sessions/{hello['session_id']}")).status_code == 200


async def test_above_the_memory_watermark_new_sessions_get_429_and_the_rest_still_serves(
    random_repository: RandomRepository,
) -> None:
    # one byte: any live process is above it
    settings = cpu_settings(random_repository.path, memory_watermark_bytes=1)
    async with running_app(settings) as app:
        refused = await app.client.post("/v1/models/rnn-feat/sessions")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["type"] == "memory_pressure"
        with pytest.raises(WebSocketClosedError) as closed:
            async with app.ws("/v1/models/rnn-feat/stream") as ws:
                assert (await ws.receive_json())["error"]["type"] == "memory_pressure"
                await ws.receive_text()
        assert closed.value.code == 4429
        predicted = await app.client.post("/v1/models/rnn-feat/predict", json={"inputs": [[STEP]]})
        assert predicted.status_code == 200
        assert app.metric(REJECTIONS, {"limit": "memory"}) == 2
        assert app.metric("rnnserve_memory_bytes", {"source": "rss"}) > 1
        assert app.metric("rnnserve_live_sessions") == 0


async def test_body_steps_sequences_and_per_key_session_caps_are_counted(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(
        random_repository.path,
        max_body_bytes=1024,
        max_steps=4,
        max_sequences=2,
        max_sessions_per_key=1,
        api_keys="k1",
    )
    key = {"Authorization": "Bearer k1"}
    async with running_app(settings) as app:
        predict = "/v1/models/rnn-feat/predict"
        big = await app.client.post(predict, content=b"[" * 2000, headers=key)
        steps = await app.client.post(predict, json={"inputs": [[STEP] * 5]}, headers=key)
        seqs = await app.client.post(predict, json={"inputs": [[STEP]] * 3}, headers=key)
        first = await app.client.post("/v1/models/rnn-feat/sessions", headers=key)
        second = await app.client.post("/v1/models/rnn-feat/sessions", headers=key)
        assert [r.status_code for r in (big, steps, seqs, first, second)] == [
            413,
            413,
            413,
            201,
            429,
        ]
        for limit in ("body_bytes", "steps", "sequences", "sessions_per_key"):
            assert app.metric(REJECTIONS, {"limit": limit}) == 1, limit
        exposition = (await app.client.get("/metrics", headers=key)).text
        assert 'rnnserve_limit_rejections_total{limit="sessions_per_key"} 1.0' in exposition


async def test_the_mux_stream_applies_the_same_guard_in_its_own_error_shape(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, ws_max_message_bytes=1024)
    async with running_app(settings) as app, app.ws("/v1/models/rnn-feat/mux") as ws:
        await ws.send_json({"op": "open", "slot": 0})
        assert (await ws.receive_json())["op"] == "opened"
        await ws.send_json({"op": "open", "slot": 1, "padding": "x" * 2000})
        error = await ws.receive_json()
        assert (error["op"], error["type"]) == ("error", "limit_exceeded")
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_text()
        assert closed.value.code == 4413
        assert app.metric(REJECTIONS, {"limit": "ws_message_bytes"}) == 1


async def test_a_socket_that_keeps_talking_is_never_idle(
    random_repository: RandomRepository,
) -> None:
    import asyncio

    settings = cpu_settings(random_repository.path, ws_idle_timeout_s=1.0)
    async with running_app(settings) as app, app.ws("/v1/models/rnn-feat/stream") as ws:
        await ws.receive_json()
        for seq in range(30):  # 30 x 50 ms: longer than the idle timeout, never silent for it
            await ws.send_json({"seq": seq, "inputs": [STEP]})
            assert (await ws.receive_json())["seq"] == seq + 1
            await asyncio.sleep(0.05)
        assert app.metric(REJECTIONS, {"limit": "ws_idle_timeout"}) == 0
