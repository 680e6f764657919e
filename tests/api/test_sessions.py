"""Session REST routes in process: lifecycle, seq and retry rules, TTL, caps, keys, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.app import Harness, cpu_settings, running_app
from tests.support.clock import ManualClock
from tests.support.models import RandomRepository
from tests.support.reference import assert_close, card_of, random_state, random_steps, run_alone

STEP = [0.1, 0.2, 0.3, 0.4]  # one step of rnn-feat (4 features, hidden 8 x 2 layers)


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    async with running_app(cpu_settings(random_repository.path)) as harness:
        yield harness


async def open_session(client: httpx.AsyncClient, model: str = "rnn-feat", **body: Any) -> str:
    response = await client.post(f"/v1/models/{model}/sessions", json=body or None)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_opening_a_session_answers_its_id_version_seq_and_expiry(app: Harness) -> None:
    response = await app.client.post("/v1/models/rnn-feat/sessions")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "session_id",
        "model",
        "version",
        "seq",
        "created_at",
        "expires_at",
        "ttl_s",
    }
    assert (body["model"], body["version"], body["seq"]) == ("rnn-feat", 1, 0)
    assert len(body["session_id"]) >= 22  # 128 random bits, URL-safe
    assert response.headers["location"] == f"/v1/sessions/{body['session_id']}"
    described = (await app.client.get(f"/v1/sessions/{body['session_id']}")).json()
    assert described == body


async def test_ids_are_unique(app: Harness) -> None:
    ids = {await open_session(app.client) for _ in range(20)}
    assert len(ids) == 20


async def test_steps_answer_outputs_and_the_next_seq(
    app: Harness, random_repository: RandomRepository
) -> None:
    session_id = await open_session(app.client)
    response = await app.client.post(
        f"/v1/sessions/{session_id}/steps", json={"seq": 0, "inputs": [STEP, STEP, STEP]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["session_id"], body["seq"]) == (session_id, 3)
    assert_close(
        body["outputs"], run_alone(random_repository.path / "rnn-feat" / "1", [STEP] * 3).y
    )
    assert (await app.client.get(f"/v1/sessions/{session_id}")).json()["seq"] == 3


async def test_a_duplicate_seq_returns_identical_bytes_without_advancing(app: Harness) -> None:
    session_id = await open_session(app.client)
    body = {"seq": 0, "inputs": [STEP, STEP]}
    first = await app.client.post(f"/v1/sessions/{session_id}/steps", json=body)
    state = (await app.client.get(f"/v1/sessions/{session_id}/state")).content
    again = await app.client.post(f"/v1/sessions/{session_id}/steps", json=body)
    assert again.status_code == 200 and again.content == first.content
    assert (await app.client.get(f"/v1/sessions/{session_id}/state")).content == state


@pytest.mark.parametrize(
    ("seq", "inputs"), [(5, [STEP]), (1, [[1.0, 1.0, 1.0, 1.0]]), (0, [STEP])], ids=str
)
async def test_gaps_old_seqs_and_changed_retries_are_409_with_the_expected_seq(
    app: Harness, seq: int, inputs: Any
) -> None:
    session_id = await open_session(app.client)
    await app.client.post(f"/v1/sessions/{session_id}/steps", json={"seq": 0, "inputs": [STEP]})
    await app.client.post(f"/v1/sessions/{session_id}/steps", json={"seq": 1, "inputs": [STEP]})
    response = await app.client.post(
        f"/v1/sessions/{session_id}/steps", json={"seq": seq, "inputs": inputs}
    )
    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["type"] == "session_conflict"
    assert error["detail"] == {"expected_seq": 2}


async def test_racing_duplicate_requests_are_applied_exactly_once(app: Harness) -> None:
    session_id = await open_session(app.client)
    body = {"seq": 0, "inputs": [STEP]}
    responses = await asyncio.gather(
        *(app.client.post(f"/v1/sessions/{session_id}/steps", json=body) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert (await app.client.get(f"/v1/sessions/{session_id}")).json()["seq"] == 1
    assert app.metric("rnnserve_session_steps_total", {"outcome": "applied"}) == 1


async def test_racing_different_requests_for_one_seq_leave_one_winner(app: Harness) -> None:
    session_id = await open_session(app.client)
    responses = await asyncio.gather(
        *(
            app.client.post(
                f"/v1/sessions/{session_id}/steps", json={"seq": 0, "inputs": [[i, 0, 0, 0]]}
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{nope", 400),
        ([1, 2], 400),
        ({"inputs": [STEP]}, 400),
        ({"seq": -1, "inputs": [STEP]}, 400),
        ({"seq": True, "inputs": [STEP]}, 400),
        ({"seq": "0", "inputs": [STEP]}, 400),
        ({"seq": 0}, 400),
        ({"seq": 0, "inputs": []}, 400),
        ({"seq": 0, "inputs": [[1.0, 2.0]]}, 400),
        ({"seq": 0, "inputs": [STEP], "extra": 1}, 400),
        ({"seq": 0, "inputs": [[1e39, 0, 0, 0]]}, 400),
        ({"seq": 0, "inputs": [STEP] * 10_001}, 413),
    ],
    ids=lambda v: str(v)[:40],
)
async def test_bad_step_requests_are_client_errors_and_leave_the_state_alone(
    app: Harness, body: Any, status: int
) -> None:
    session_id = await open_session(app.client)
    await app.client.post(f"/v1/sessions/{session_id}/steps", json={"seq": 0, "inputs": [STEP]})
    before = (await app.client.get(f"/v1/sessions/{session_id}/state")).content
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    response = await app.client.post(f"/v1/sessions/{session_id}/steps", content=content)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert (await app.client.get(f"/v1/sessions/{session_id}/state")).content == before


@pytest.mark.parametrize(
    ("method", "path_suffix"),
    [("GET", ""), ("GET", "/state"), ("DELETE", ""), ("POST", "/reset"), ("POST", "/steps")],
)
async def test_unknown_sessions_are_404(app: Harness, method: str, path_suffix: str) -> None:
    body = {"seq": 0, "inputs": [STEP]} if path_suffix == "/steps" else None
    response = await app.client.request(
        method, f"/v1/sessions/doesnotexist{path_suffix}", json=body
    )
    assert response.status_code == 404
    assert error_of(response)["type"] == "session_not_found"


async def test_bidirectional_models_cannot_open_a_session(app: Harness) -> None:
    response = await app.client.post("/v1/models/bi-rnn/sessions")
    assert response.status_code == 400
    assert error_of(response)["type"] == "not_streamable"
    assert "bidirectional" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/models/nope/sessions", None, 404),
        ("/v1/models/rnn-feat/sessions?version=2", None, 404),
        ("/v1/models/rnn-feat/sessions", {"version": 2}, 404),
        ("/v1/models/rnn-feat/sessions?version=1", {"version": 2}, 400),
        ("/v1/models/rnn-feat/sessions", {"version": 0}, 400),
        ("/v1/models/rnn-feat/sessions", {"initial_state": {"h": [[0.0]]}}, 400),
        ("/v1/models/rnn-feat/sessions", {"initial_state": [1]}, 400),
        ("/v1/models/rnn-feat/sessions", {"bogus": 1}, 400),
    ],
)
async def test_bad_open_requests_are_refused(
    app: Harness, path: str, body: Any, status: int
) -> None:
    response = await app.client.post(path, json=body)
    assert response.status_code == status, response.text


async def test_version_can_be_pinned_in_the_query_or_the_body(app: Harness) -> None:
    for kwargs in ({"params": {"version": 1}}, {"json": {"version": 1}}):
        response = await app.client.post("/v1/models/rnn-feat/sessions", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 201 and response.json()["version"] == 1


async def test_delete_closes_the_session(app: Harness) -> None:
    session_id = await open_session(app.client)
    response = await app.client.delete(f"/v1/sessions/{session_id}")
    assert response.status_code == 204 and response.content == b""
    assert (await app.client.get(f"/v1/sessions/{session_id}")).status_code == 404
    assert app.metric("rnnserve_live_sessions") == 0


async def test_reset_starts_over_from_the_initial_state(
    app: Harness, random_repository: RandomRepository
) -> None:
    card = card_of(random_repository.path / "lstm3" / "1")
    rng = np.random.default_rng(3)
    initial = random_state(card, rng)
    steps = random_steps(card, 3, rng)
    session_id = await open_session(app.client, "lstm3", initial_state=initial)
    url = f"/v1/sessions/{session_id}/steps"
    first = await app.client.post(url, json={"seq": 0, "inputs": steps})
    reset = await app.client.post(f"/v1/sessions/{session_id}/reset")
    assert reset.status_code == 200 and reset.json()["seq"] == 0
    again = await app.client.post(url, json={"seq": 0, "inputs": steps})
    assert again.content == first.content
    assert app.metric("rnnserve_session_events_total", {"event": "reset"}) == 1


async def test_exported_state_continues_the_stream_in_a_new_session(
    app: Harness, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "lstm3" / "1"
    rng = np.random.default_rng(4)
    steps = random_steps(card_of(version_dir), 7, rng)
    source = await open_session(app.client, "lstm3")
    await app.client.post(f"/v1/sessions/{source}/steps", json={"seq": 0, "inputs": steps[:4]})
    exported = (await app.client.get(f"/v1/sessions/{source}/state")).json()
    assert (exported["model"], exported["seq"]) == ("lstm3", 4)
    target = await open_session(app.client, "lstm3", initial_state=exported["state"])
    tail = await app.client.post(
        f"/v1/sessions/{target}/steps", json={"seq": 0, "inputs": steps[4:]}
    )
    assert_close(tail.json()["outputs"], run_alone(version_dir, steps).y[4:])
    imported = await app.client.post(
        f"/v1/sessions/{source}/reset", json={"initial_state": exported["state"]}
    )
    assert imported.status_code == 200
    resumed = (await app.client.get(f"/v1/sessions/{source}/state")).json()
    assert resumed["state"] == exported["state"] and resumed["seq"] == 0


async def test_idle_sessions_expire_after_the_ttl(random_repository: RandomRepository) -> None:
    settings = cpu_settings(random_repository.path, session_ttl_s=0.25)
    clock = ManualClock()
    async with running_app(settings, clock=clock) as app:
        busy = await open_session(app.client)
        idle = await open_session(app.client)
        for seq in range(4):  # steps refresh the idle TTL
            clock.advance(0.1)
            response = await app.client.post(
                f"/v1/sessions/{busy}/steps", json={"seq": seq, "inputs": [STEP]}
            )
            assert response.status_code == 200
        assert (await app.client.get(f"/v1/sessions/{idle}")).status_code == 404
        assert (await app.client.get(f"/v1/sessions/{busy}")).status_code == 200
        assert app.metric("rnnserve_session_events_total", {"event": "expired"}) >= 1


async def test_the_session_cap_answers_429_with_retry_after(
    random_repository: RandomRepository,
) -> None:
    async with running_app(cpu_settings(random_repository.path, max_sessions=3)) as app:
        opened = [await open_session(app.client) for _ in range(3)]
        response = await app.client.post("/v1/models/rnn-feat/sessions")
        assert response.status_code == 429
        assert error_of(response)["type"] == "too_many_sessions"
        assert int(response.headers["retry-after"]) >= 1
        assert app.metric("rnnserve_session_events_total", {"event": "rejected"}) == 1
        await app.client.delete(f"/v1/sessions/{opened[0]}")
        assert (await app.client.post("/v1/models/rnn-feat/sessions")).status_code == 201


async def test_sessions_belong_to_the_key_that_opened_them(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, api_keys="key-a,key-b", max_sessions_per_key=2)
    a, b = {"Authorization": "Bearer key-a"}, {"X-API-Key": "key-b"}
    async with running_app(settings) as app:
        response = await app.client.post("/v1/models/rnn-feat/sessions", headers=a)
        session_id = response.json()["session_id"]
        for method, suffix in (("GET", ""), ("GET", "/state"), ("POST", "/reset")):
            foreign = await app.client.request(
                method, f"/v1/sessions/{session_id}{suffix}", headers=b
            )
            assert foreign.status_code == 404, (method, suffix)
        step = {"seq": 0, "inputs": [STEP]}
        foreign = await app.client.post(f"/v1/sessions/{session_id}/steps", json=step, headers=b)
        assert foreign.status_code == 404
        assert (await app.client.delete(f"/v1/sessions/{session_id}", headers=b)).status_code == 404
        mine = await app.client.post(f"/v1/sessions/{session_id}/steps", json=step, headers=a)
        assert mine.status_code == 200
        assert (
            await app.client.post(f"/v1/sessions/{session_id}/steps", json=step)
        ).status_code == 401
        await app.client.post("/v1/models/rnn-feat/sessions", headers=a)
        capped = await app.client.post("/v1/models/rnn-feat/sessions", headers=a)
        assert capped.status_code == 429 and "retry-after" in capped.headers
        assert (await app.client.post("/v1/models/rnn-feat/sessions", headers=b)).status_code == 201
