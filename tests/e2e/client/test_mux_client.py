"""MuxStream against a real `rnnserve serve`: many sessions per frame, exactly once through a
proxy that drops the server's answers (the stream reconnects, re-attaches and resends)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from rnnserve_client import AsyncClient, MuxStatus

from tests.e2e.client.proxy import DroppingProxy
from tests.e2e.client.test_client import MODEL, PATIENT, SERIES, port_of
from tests.support.servers import DEMO_REPOSITORY

pytestmark = pytest.mark.e2e

SESSIONS = 6


@pytest.fixture
def server(server_factory: Any) -> Any:
    return server_factory(DEMO_REPOSITORY)


def series_of(index: int) -> list[float]:
    """Each session its own series: the real one shifted by a few ppm."""
    return [v + 0.5 * index for v in SERIES]


async def test_mux_sessions_resume_after_dropped_sockets_and_apply_each_step_once(
    server: Any,
) -> None:
    async with AsyncClient(server.base_url) as direct:
        expected = (
            await direct.predict(
                MODEL, [[[v] for v in series_of(i)] for i in range(SESSIONS)], output="all"
            )
        ).outputs
        opener = await direct.mux(MODEL)
        async with opener:
            ids = [(await opener.open()).session_id for _ in range(SESSIONS)]
    with DroppingProxy(port_of(server.base_url), drop_every=9) as proxy:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", retry=PATIENT) as client:
            mux = await client.mux(MODEL)
            async with mux:
                sessions = [await mux.attach(session_id) for session_id in ids]
                streamed: list[list[float]] = [[] for _ in sessions]
                for month in range(len(SERIES)):
                    frame = {s: [[series_of(i)[month]]] for i, s in enumerate(sessions)}
                    results = await mux.step(frame)
                    for i, session in enumerate(sessions):
                        assert results[session].ok, results[session]
                        outputs = results[session].outputs
                        assert outputs is not None
                        streamed[i].append(outputs[0][0])
    assert proxy.drops >= 3, f"the proxy dropped {proxy.drops} answers; the test needs some"
    async with AsyncClient(server.base_url) as direct:
        for session_id in ids:
            assert (await direct.session(session_id)).seq == len(SERIES)
    for got, want in zip(streamed, expected, strict=True):
        np.testing.assert_allclose(got, np.asarray(want)[:, 0], rtol=1e-6)


async def test_a_conflicting_record_comes_back_with_the_expected_seq(server: Any) -> None:
    async with AsyncClient(server.base_url) as client:
        mux = await client.mux(MODEL)
        async with mux:
            session = await mux.open()
            assert (await mux.step({session: [[355.9], [356.68]]}))[session].seq == 2
            session.seq = 0  # as a client that lost track would send
            result = (await mux.step({session: [[357.9]]}))[session]
    assert (result.status, result.seq, result.outputs) == (MuxStatus.CONFLICT, 2, None)
