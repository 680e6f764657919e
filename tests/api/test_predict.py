"""v1 predict through the app in process: answers equal onnxruntime run per sequence."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.conftest import RANDOM_MODELS, RandomRepository, app_client, cpu_settings
from tests.reference import assert_close, card_of, run_alone
from tests.sessions.harness import random_steps


def random_state(card: dict, rng: np.random.Generator) -> dict:
    """A non-zero initial state for one sequence."""
    return {s["name"]: rng.normal(size=(s["rows"], s["width"])).tolist() for s in card["states"]}


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
async def test_predict_with_mixed_lengths_equals_each_sequence_run_alone(
    client: httpx.AsyncClient, random_repository: RandomRepository, name: str
) -> None:
    version_dir = random_repository.path / name / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(7)
    sequences = [random_steps(card, n, rng) for n in (5, 1, 17, 3)]
    states = [random_state(card, rng) for _ in sequences]
    response = await client.post(
        f"/v1/models/{name}/predict",
        json={"inputs": sequences, "initial_state": states, "output": "all", "return_state": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == (name, 1)
    for seq, state, out, got_state in zip(
        sequences, states, body["outputs"], body["state"], strict=True
    ):
        expected = run_alone(version_dir, seq, state)
        assert_close(out, expected.y)
        assert_close(got_state["h"], expected.h)
        if expected.c is not None:
            assert_close(got_state["c"], expected.c)


async def test_last_output_is_each_sequences_own_last_step_not_the_padded_end(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "rnn-feat" / "1"
    rng = np.random.default_rng(1)
    sequences = [random_steps(card_of(version_dir), n, rng) for n in (9, 2)]
    response = await client.post(
        "/v1/models/rnn-feat/predict", json={"inputs": sequences, "output": "last"}
    )
    outputs = response.json()["outputs"]
    for seq, out in zip(sequences, outputs, strict=True):
        assert_close(out, run_alone(version_dir, seq).y[-1])


async def test_default_output_follows_the_card_head(client: httpx.AsyncClient) -> None:
    per_step = await client.post("/v1/models/gru1/predict", json={"inputs": [[[0.1, 0.2]] * 4]})
    last_step = await client.post("/v1/models/gru-last/predict", json={"inputs": [[[0.1] * 3] * 4]})
    assert np.asarray(per_step.json()["outputs"]).shape == (1, 4, 1)
    assert np.asarray(last_step.json()["outputs"]).shape == (1, 4)
    assert "state" not in per_step.json()


async def test_classifier_answers_labels_with_last_output(demo_client: httpx.AsyncClient) -> None:
    listing = (await demo_client.get("/v1/models")).json()["models"]
    classifiers = [
        m for m in listing if m.get("card", {}).get("labels") and m["card"]["head"] == "last_step"
    ]
    assert classifiers, "the demo repository has a classifier"
    card = classifiers[0]["card"]
    sequence = [[1.0] * card["input_size"]] * 8
    body = (
        await demo_client.post(f"/v1/models/{card['name']}/predict", json={"inputs": [sequence]})
    ).json()
    best = int(np.argmax(body["outputs"][0]))
    assert body["labels"] == [card["labels"][best]]


async def test_concurrent_requests_are_batched_and_equal_unbatched_answers(
    random_repository: RandomRepository,
) -> None:
    version_dir = random_repository.path / "lstm3" / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(3)
    sequences = [random_steps(card, int(n), rng) for n in rng.integers(1, 40, 64)]
    settings = cpu_settings(random_repository.path, max_queue_delay_ms=5.0)
    async for client in app_client(settings):
        responses = await asyncio.gather(
            *(client.post("/v1/models/lstm3/predict", json={"inputs": [s]}) for s in sequences)
        )
        metrics = (await client.get("/metrics")).text
    for seq, response in zip(sequences, responses, strict=True):
        assert response.status_code == 200
        assert_close(response.json()["outputs"][0], run_alone(version_dir, seq).y)
    sums = [
        line
        for line in metrics.splitlines()
        if line.startswith("rnnserve_batch_size_count")
        and 'model="lstm3"' in line
        and 'kind="predict"' in line
    ]
    calls = float(sums[0].rsplit(" ", 1)[1])
    assert calls < len(sequences), f"64 requests ran in {calls} onnxruntime calls: no batch formed"


async def test_pinned_version_and_unknown_version(client: httpx.AsyncClient) -> None:
    body = {"inputs": [[[0.0, 0.0]]]}
    assert (await client.post("/v1/models/gru1/predict?version=1", json=body)).status_code == 200
    missing = await client.post("/v1/models/gru1/predict?version=9", json=body)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "model_not_found"


async def test_responses_carry_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health/live")
    second = await client.get("/health/live")
    assert generated.headers["x-request-id"] != second.headers["x-request-id"]
