"""rnnserve_client against a real `rnnserve serve`: exactly-once steps through a proxy that loses
answers, typed errors, WebSocket streams that resume and close cleanly, keys kept out of URLs."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
import websockets
from rnnserve_client import (
    AsyncClient,
    Client,
    InvalidInputError,
    ModelNotFoundError,
    Retry,
    SessionConflictError,
    SessionNotFoundError,
    StreamClosedError,
    UnauthorizedError,
)

from tests.e2e.client.proxy import DroppingProxy
from tests.support.servers import DEMO_REPOSITORY

pytestmark = pytest.mark.e2e

MODEL = "co2-forecaster"
# Mauna Loa monthly means 1992-1993 (ppm), as the examples stream them
SERIES = [
    355.9, 356.68, 357.9, 359.08, 359.54, 359.12, 357.0, 354.86, 353.02, 353.42, 354.2, 355.35,
    356.68, 357.17, 358.42, 359.33, 360.18, 359.5, 357.42, 355.33, 353.77, 354.06, 355.35, 356.77,
]  # fmt: skip
PATIENT = Retry(attempts=12, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def server(server_factory: Any) -> Any:
    return server_factory(DEMO_REPOSITORY)


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def whole_run(base_url: str) -> list[float]:
    """What one predict over the whole series answers, month by month."""
    with Client(base_url) as client:
        outputs = client.predict(MODEL, [[[v] for v in SERIES]], output="all").outputs[0]
    return [step[0] for step in outputs]


def test_session_steps_are_exactly_once_when_answers_are_lost(server: Any) -> None:
    expected = whole_run(server.base_url)
    with (
        DroppingProxy(port_of(server.base_url), drop_every=3) as proxy,
        Client(f"http://127.0.0.1:{proxy.port}", retry=PATIENT) as client,
        client.open(MODEL) as session,
    ):
        streamed = [session.step([[v]]).outputs[0][0] for v in SERIES]
        on_server = session.refresh().seq
    assert proxy.drops >= 3, f"the proxy dropped {proxy.drops} answers; the test needs some"
    assert on_server == len(SERIES), "a resent step was applied twice"
    # a doubled step would shift the carried state and every later output with it
    np.testing.assert_allclose(streamed, expected, rtol=1e-6)
    assert "Traceback" not in server.log()


def test_session_steps_are_exactly_once_when_answers_time_out(server: Any) -> None:
    expected = whole_run(server.base_url)[:12]
    with (
        DroppingProxy(port_of(server.base_url), drop_every=4, stall=True) as proxy,
        # the stalled answers never come: any timeout ends them, a short one keeps the test short
        Client(f"http://127.0.0.1:{proxy.port}", retry=PATIENT, timeout_s=0.5) as client,
        client.open(MODEL) as session,
    ):
        streamed = [session.step([[v]]).outputs[0][0] for v in SERIES[:12]]
        on_server = session.refresh().seq
    assert proxy.drops >= 2
    assert on_server == 12
    np.testing.assert_allclose(streamed, expected, rtol=1e-6)


async def test_async_session_steps_are_exactly_once_when_answers_are_lost(server: Any) -> None:
    expected = whole_run(server.base_url)
    with DroppingProxy(port_of(server.base_url), drop_every=3) as proxy:
        async with (
            AsyncClient(f"http://127.0.0.1:{proxy.port}", retry=PATIENT) as client,
            await client.open(MODEL) as session,
        ):
            streamed = [(await session.step([[v]])).outputs[0][0] for v in SERIES]
            assert (await session.refresh()).seq == len(SERIES)
    assert proxy.drops >= 3
    np.testing.assert_allclose(streamed, expected, rtol=1e-6)


async def test_a_stream_resumes_after_dropped_sockets_and_applies_each_step_once(
    server: Any,
) -> None:
    expected = whole_run(server.base_url)
    with DroppingProxy(port_of(server.base_url), drop_every=5) as proxy:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", retry=PATIENT) as client:
            stream = await client.stream(MODEL)
            async with stream:
                streamed = [r.outputs[0][0] async for r in stream.steps([[v]] for v in SERIES)]
    assert proxy.drops >= 3
    async with AsyncClient(server.base_url) as direct:
        assert (await direct.session(stream.session_id)).seq == len(SERIES)
    np.testing.assert_allclose(streamed, expected, rtol=1e-6)


async def test_breaking_out_of_the_stream_iterator_closes_cleanly_and_keeps_the_session(
    server: Any,
) -> None:
    async with AsyncClient(server.base_url) as client:
        async with await client.stream(MODEL) as stream:
            seen = []
            async for result in stream.steps([[v]] for v in SERIES):
                seen.append(result)
                if len(seen) == 3:
                    break
        assert stream.closed
        with pytest.raises(StreamClosedError):
            await stream.step([[1.0]])
        session = await client.session(stream.session_id)
        assert session.seq == 3  # nothing was sent after the break
        async with await client.resume(stream.session_id) as resumed:
            assert resumed.seq == 3  # the session stream's greeting says where it stands
            assert (await resumed.step([[SERIES[3]]])).seq == 4
    assert "Traceback" not in server.log()


def test_server_errors_arrive_as_typed_exceptions_with_type_message_and_detail(
    server: Any,
) -> None:
    with Client(server.base_url) as client:
        with pytest.raises(InvalidInputError) as bad:
            client.predict("digits-rnn", [[[1, 2, 3]]])
        assert (bad.value.status, bad.value.type) == (400, "invalid_input")
        assert "8 numbers" in bad.value.message
        with pytest.raises(ModelNotFoundError) as missing:
            client.model("no-such-model")
        assert (missing.value.status, missing.value.type) == (404, "model_not_found")
        session = client.open(MODEL)
        session.step([[SERIES[0]]])
        session.seq = 5
        with pytest.raises(SessionConflictError) as conflict:
            session.step([[SERIES[1]]])
        assert conflict.value.expected_seq == 1 and conflict.value.status == 409
        session.close()
        with pytest.raises(SessionNotFoundError) as gone:
            session.state()
        assert gone.value.type == "session_not_found"


async def test_a_stream_that_cannot_open_raises_the_servers_error(server: Any) -> None:
    async with AsyncClient(server.base_url) as client:
        with pytest.raises(ModelNotFoundError) as missing:
            await client.stream("no-such-model")
        assert "no-such-model" in missing.value.message
        with pytest.raises(SessionNotFoundError):
            await client.resume("no-such-session")


async def test_sockets_take_the_key_as_a_subprotocol_and_refuse_without_it_with_4401(
    server_factory: Any,
) -> None:
    key = "s3cret-key/with+odd=chars"
    server = server_factory(DEMO_REPOSITORY, env={"RNNSERVE_API_KEYS": key})
    ws_url = server.base_url.replace("http", "ws", 1)
    async with websockets.connect(f"{ws_url}/v1/models/{MODEL}/stream") as ws:
        refusal = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert refusal["error"]["type"] == "unauthorized"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    protocols: Any = ["rnnserve", f"rnnserve.key.{encoded}"]
    async with websockets.connect(
        f"{ws_url}/v1/models/{MODEL}/stream", subprotocols=protocols
    ) as ws:
        assert ws.subprotocol == "rnnserve"
        assert json.loads(await ws.recv())["seq"] == 0
    async with AsyncClient(server.base_url) as anonymous:
        with pytest.raises(UnauthorizedError) as denied:
            await anonymous.models()
        assert denied.value.status == 401
        with pytest.raises(UnauthorizedError):
            await anonymous.stream(MODEL)
    async with (
        AsyncClient(server.base_url, api_key=key) as client,
        await client.stream(MODEL) as stream,
    ):
        assert (await stream.step([[SERIES[0]]])).seq == 1
    await asyncio.sleep(0.2)  # let the access log catch up
    assert key not in server.log() and encoded not in server.log()
