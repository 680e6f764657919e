"""Triton sequence parameters on rnnserve sessions, through the app in process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from service.core.sessions import MemorySessionStore
from service.edges.v2.contract import parse_sequence_control
from service.errors import InvalidInputError
from service.metrics import Metrics
from service.operations.infer import alias_of
from tests.support.app import app_client, cpu_settings, running_app
from tests.support.clock import ManualClock
from tests.support.models import RANDOM_MODELS, RandomRepository
from tests.support.reference import assert_close, card_of, run_alone
from tests.support.v2 import input_name, json_tensor, random_batch, random_states

STREAMABLE = sorted(n for n, kw in RANDOM_MODELS.items() if not kw.get("bidirectional"))


async def step(
    client: httpx.AsyncClient,
    model: str,
    tensors: dict[str, np.ndarray],
    *,
    headers: dict[str, str] | None = None,
    **parameters: Any,
) -> httpx.Response:
    body = {
        "inputs": [json_tensor(name, array) for name, array in tensors.items()],
        "parameters": parameters,
    }
    return await client.post(f"/v2/models/{model}/infer", json=body, headers=headers)


def outputs_of(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


@pytest.mark.parametrize("name", STREAMABLE)
async def test_chunks_of_a_sequence_equal_one_run_over_the_whole_of_it(
    client: httpx.AsyncClient, random_repository: RandomRepository, name: str
) -> None:
    version_dir = random_repository.path / name / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(9)
    x = random_batch(card, 1, 7, rng)
    h0 = random_states(card, 1, rng)
    chunks = [(0, 1), (1, 4), (4, 5), (5, 7)]
    ys = []
    for i, (a, b) in enumerate(chunks):
        tensors = {input_name(card): x[:, a:b], **(h0 if i == 0 else {})}
        out = outputs_of(
            await step(
                client,
                name,
                tensors,
                sequence_id=42,
                sequence_start=i == 0,
                sequence_end=i == len(chunks) - 1,
            )
        )
        ys.append(out["y"][0])
    expected = run_alone(version_dir, x[0], {k[0]: v[0] for k, v in h0.items()})
    assert_close(np.concatenate(ys), expected.y)
    assert_close(out["hn"][0], expected.h)


async def test_a_step_after_the_end_or_without_a_start_is_refused_by_name(
    client: httpx.AsyncClient,
) -> None:
    x = {"x": np.ones((1, 1, 2), np.float32)}
    unknown = await step(client, "gru1", x, sequence_id="never-started")
    assert unknown.status_code == 400
    assert "sequence 'never-started' is unknown or has ended" in unknown.json()["error"]
    one_shot = await step(client, "gru1", x, sequence_id=5, sequence_start=True, sequence_end=True)
    assert one_shot.status_code == 200
    after_end = await step(client, "gru1", x, sequence_id=5)
    assert after_end.status_code == 400
    assert "sequence 5 is unknown or has ended" in after_end.json()["error"]


async def test_start_on_a_live_sequence_restarts_it_from_zeros(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "gru1" / "1"
    x = np.full((1, 3, 2), 0.5, np.float32)
    await step(client, "gru1", {"x": x}, sequence_id=7, sequence_start=True)
    restarted = outputs_of(await step(client, "gru1", {"x": x}, sequence_id=7, sequence_start=True))
    assert_close(restarted["y"][0], run_alone(version_dir, x[0]).y)


async def test_sequence_ids_are_scoped_per_model_and_uint_and_string_ids_differ(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    x = np.full((1, 2, 2), 0.25, np.float32)
    for model in ("gru1", "lstm3"):
        assert (
            await step(client, model, {"x": x}, sequence_id=1, sequence_start=True)
        ).status_code == 200
    as_string = await step(client, "gru1", {"x": x}, sequence_id="1")
    assert as_string.status_code == 400
    second = outputs_of(await step(client, "lstm3", {"x": x}, sequence_id=1, sequence_end=True))
    version_dir = random_repository.path / "lstm3" / "1"
    assert_close(second["y"][0], run_alone(version_dir, np.concatenate([x[0], x[0]])).y[2:])


async def test_interleaved_concurrent_sequences_each_equal_their_own_run(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "lstm-tok" / "1"
    card = card_of(version_dir)
    tokens = random_batch(card, 12, 5, np.random.default_rng(1))
    ys: dict[int, list[np.ndarray]] = {i: [] for i in range(12)}
    for t in range(5):
        answers = await asyncio.gather(
            *(
                step(
                    client,
                    "lstm-tok",
                    {"tokens": tokens[i : i + 1, t : t + 1]},
                    sequence_id=f"stream-{i}",
                    sequence_start=t == 0,
                    sequence_end=t == 4,
                )
                for i in range(12)
            )
        )
        for i, answer in enumerate(answers):
            ys[i].append(outputs_of(answer)["y"][0])
    for i in range(12):
        assert_close(np.concatenate(ys[i]), run_alone(version_dir, tokens[i]).y)


@pytest.mark.parametrize(
    ("model", "tensors", "parameters", "message"),
    [
        ("gru1", {"x": np.ones((2, 1, 2), np.float32)}, {"sequence_start": True}, "batch 1"),
        (
            "gru1",
            {"x": np.ones((1, 1, 2), np.float32), "h0": np.ones((1, 1, 4), np.float32)},
            {},
            "only with sequence_start",
        ),
        (
            "bi-rnn",
            {"x": np.ones((1, 1, 2), np.float32)},
            {"sequence_start": True},
            "bidirectional",
        ),
    ],
)
async def test_sequence_requests_the_model_cannot_stream_are_refused(
    client: httpx.AsyncClient,
    model: str,
    tensors: dict[str, np.ndarray],
    parameters: dict[str, Any],
    message: str,
) -> None:
    if "sequence_start" not in parameters:
        await step(client, model, {"x": tensors["x"]}, sequence_id=3, sequence_start=True)
    response = await step(client, model, tensors, sequence_id=3, **parameters)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_v2_sequences_are_v1_sessions_with_their_limits_and_ttl(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, max_sessions=1, session_ttl_s=0.3)
    x = {"x": np.ones((1, 1, 2), np.float32)}
    clock = ManualClock()
    async with running_app(settings, clock=clock) as app:
        client = app.client
        assert (
            await step(client, "gru1", x, sequence_id=1, sequence_start=True)
        ).status_code == 200
        full = await client.post("/v1/models/gru1/sessions", json={})
        assert full.status_code == 429
        too_many = await step(client, "gru1", x, sequence_id=2, sequence_start=True)
        assert too_many.status_code == 429
        clock.advance(0.6)
        expired = await step(client, "gru1", x, sequence_id=1)
        assert expired.status_code == 400 and "unknown or has ended" in expired.json()["error"]


async def test_sequences_of_different_api_keys_never_meet(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, api_keys=["key-a", "key-b"])
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    x = {"x": np.ones((1, 1, 2), np.float32)}
    async for client in app_client(settings):
        started = await step(client, "gru1", x, headers=a, sequence_id=9, sequence_start=True)
        assert started.status_code == 200, started.text
        other = await step(client, "gru1", x, headers=b, sequence_id=9)
        assert other.status_code == 400
        assert (await step(client, "gru1", x, headers=a, sequence_id=9)).status_code == 200


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, None),
        ({"sequence_id": 0, "sequence_start": False, "sequence_end": False}, None),
        ({"sequence_id": ""}, None),
        (
            {"sequence_id": 2**64 - 1, "sequence_start": True},
            ("u:18446744073709551615", True, False),
        ),
        ({"sequence_id": "abc", "sequence_end": True}, ("s:abc", False, True)),
    ],
)
def test_sequence_parameters_as_triton_clients_send_them(
    parameters: dict[str, Any], expected: tuple[str, bool, bool] | None
) -> None:
    control = parse_sequence_control(parameters)
    got = None if control is None else (control.key, control.start, control.end)
    assert got == expected


@pytest.mark.parametrize(
    "parameters",
    [
        {"sequence_id": 2**64},
        {"sequence_id": -1},
        {"sequence_id": True},
        {"sequence_id": 1.5},
        {"sequence_start": True},
        {"sequence_id": 3, "sequence_end": "yes"},
    ],
)
def test_malformed_sequence_parameters_are_refused(parameters: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        parse_sequence_control(parameters)


async def test_memory_store_aliases_point_expire_and_go() -> None:
    now = [1000.0]
    store = MemorySessionStore(
        max_sessions=10, max_sessions_per_owner=10, metrics=Metrics(), clock=lambda: now[0]
    )
    control = parse_sequence_control({"sequence_id": 4})
    assert control is not None
    alias = alias_of("gru1", None, control)
    assert await store.get_alias(alias) is None
    await store.set_alias(alias, "s1", expires_at=1010.0)
    await store.set_alias(alias, "s2", expires_at=1010.0)
    assert await store.get_alias(alias) == "s2"
    now[0] = 1010.0
    assert await store.get_alias(alias) is None
    await store.set_alias(alias, "s3", expires_at=1020.0)
    await store.delete_alias(alias)
    assert await store.get_alias(alias) is None
    await store.delete_alias(alias)
