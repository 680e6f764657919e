"""V2 routes through the app in process: metadata, readiness, JSON infer, errors, batching."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import (
    DEMO_REPOSITORY,
    RANDOM_MODELS,
    RandomRepository,
    app_client,
    cpu_settings,
)
from tests.reference import assert_close, card_of, run_alone
from tests.v2.helpers import input_name, json_tensor, random_batch, random_states


async def infer(client: httpx.AsyncClient, model: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/v2/models/{model}/infer", json=body)


def outputs_of(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


async def test_server_metadata_lists_the_binary_extension(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v2")).json()
    assert body["name"] == "rnnserve"
    assert "binary_tensor_data" in body["extensions"]
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
async def test_model_metadata_has_dynamic_batch_and_seq_axes_and_fixed_sizes(
    client: httpx.AsyncClient, random_repository: RandomRepository, name: str
) -> None:
    card = card_of(random_repository.path / name / "1")
    meta = (await client.get(f"/v2/models/{name}")).json()
    assert meta == (await client.get(f"/v2/models/{name}/versions/1")).json()
    assert (meta["name"], meta["versions"], meta["platform"]) == (name, ["1"], "onnxruntime_onnx")
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    if card.get("vocab_size"):
        assert inputs.pop("tokens") == ("INT64", [-1, -1])
    else:
        assert inputs.pop("x") == ("FP32", [-1, -1, card["input_size"]])
    assert inputs.pop("seq_lens") == ("INT32", [-1])
    assert outputs.pop("y") == ("FP32", [-1, -1, card["output_size"]])
    assert inputs == {s["input"]: ("FP32", [s["rows"], -1, s["width"]]) for s in card["states"]}
    assert outputs == {s["output"]: ("FP32", [s["rows"], -1, s["width"]]) for s in card["states"]}


async def test_model_readiness_and_unknown_models(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/models/gru1/ready")).status_code == 200
    assert (await client.get("/v2/models/gru1/versions/1/ready")).status_code == 200
    for path in ("/v2/models/nope/ready", "/v2/models/gru1/versions/9/ready", "/v2/models/nope"):
        response = await client.get(path)
        assert response.status_code == 404
        assert isinstance(response.json()["error"], str)
    bad_version = await client.get("/v2/models/gru1/versions/one")
    assert bad_version.status_code == 400
    assert "positive integer" in bad_version.json()["error"]


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
async def test_json_infer_with_lengths_and_states_equals_each_sequence_run_alone(
    client: httpx.AsyncClient, random_repository: RandomRepository, name: str
) -> None:
    version_dir = random_repository.path / name / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(3)
    x = random_batch(card, 3, 6, rng)
    lengths = np.array([6, 2, 4], np.int32)
    states = random_states(card, 3, rng)
    tensors = [json_tensor(input_name(card), x), json_tensor("seq_lens", lengths)]
    tensors += [json_tensor(n, a) for n, a in states.items()]
    response = await infer(client, name, {"id": "req-7", "inputs": tensors})
    out = outputs_of(response)
    assert response.json()["id"] == "req-7"
    assert response.json()["model_name"] == name
    assert out["y"].shape == (3, 6, card["output_size"])
    for i, length in enumerate(lengths):
        state = {n[0]: a[:, i] for n, a in states.items()}
        expected = run_alone(version_dir, x[i, :length], state)
        assert_close(out["y"][i, :length], expected.y)
        assert not out["y"][i, length:].any()
        assert_close(out["hn"][:, i], expected.h)
        if expected.c is not None:
            assert_close(out["cn"][:, i], expected.c)


async def test_only_requested_outputs_come_back_in_the_order_asked(
    client: httpx.AsyncClient,
) -> None:
    x = np.zeros((1, 3, 2), np.float32)
    response = await infer(
        client,
        "lstm3",
        {"inputs": [json_tensor("x", x)], "outputs": [{"name": "cn"}, {"name": "y"}]},
    )
    assert [o["name"] for o in response.json()["outputs"]] == ["cn", "y"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"inputs": [{"name": "x", "shape": [1, 2, 4], "datatype": "FP32", "data": [0.0] * 7}]},
            400,
            "needs 8 values, data has 7",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 2, 4], "datatype": "INT64", "data": [0] * 8}]},
            400,
            "the model takes FP32",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [1, 2, 4], "datatype": "FP32", "data": [0.0] * 8},
                    {"name": "seq_lens", "shape": [1], "datatype": "INT32", "data": [3]},
                ]
            },
            400,
            "seq_lens value must be in 1..2",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 0, 4], "datatype": "FP32", "data": []}]},
            400,
            "seq >= 1",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [1, 1, 4], "datatype": "FP32", "data": [0.0] * 4},
                    {"name": "h0", "shape": [2, 2, 8], "datatype": "FP32", "data": [0.0] * 32},
                ]
            },
            400,
            "h0 has batch 2 on axis 1",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 1, 4], "datatype": "FP32", "data": [1e39] * 4}]},
            400,
            "NaN or infinite",
        ),
        ({"inputs": "x"}, 400, "non-empty list"),
    ],
)
async def test_bad_tensors_get_400_in_the_protocol_error_shape(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, message: str
) -> None:
    response = await infer(client, "rnn-feat", body)
    assert response.status_code == status
    assert message in response.json()["error"]


async def test_token_ids_outside_the_vocabulary_are_refused(client: httpx.AsyncClient) -> None:
    tokens = np.array([[1, 11]], np.int64)
    response = await infer(client, "lstm-tok", {"inputs": [json_tensor("tokens", tokens)]})
    assert response.status_code == 400
    assert "[0, 11)" in response.json()["error"]


async def test_unknown_model_and_malformed_json_answer_in_the_protocol_shape(
    client: httpx.AsyncClient,
) -> None:
    missing = await infer(client, "nope", {"inputs": []})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    broken = await client.post("/v2/models/gru1/infer", content=b"{not json")
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


async def test_batch_and_seq_limits_answer_413(random_repository: RandomRepository) -> None:
    settings = cpu_settings(random_repository.path, max_sequences=2, max_steps=3)
    async for client in app_client(settings):
        wide = await infer(
            client, "gru1", {"inputs": [json_tensor("x", np.zeros((3, 1, 2), np.float32))]}
        )
        long = await infer(
            client, "gru1", {"inputs": [json_tensor("x", np.zeros((1, 4, 2), np.float32))]}
        )
        assert (wide.status_code, long.status_code) == (413, 413)
        assert "limit is 2" in wide.json()["error"]


async def test_v2_infer_and_v1_predict_share_one_dynamic_batch(
    random_repository: RandomRepository,
) -> None:
    # a long delay and a batch of two: the first arrival waits for the second, whichever API
    settings = cpu_settings(random_repository.path, max_queue_delay_ms=5_000, max_batch_size=2)
    version_dir = random_repository.path / "rnn-feat" / "1"
    x = random_batch(card_of(version_dir), 1, 5, np.random.default_rng(0))
    async for client in app_client(settings):
        v2, v1 = await asyncio.gather(
            infer(client, "rnn-feat", {"inputs": [json_tensor("x", x)]}),
            client.post("/v1/models/rnn-feat/predict", json={"inputs": [x[0, :3].tolist()]}),
        )
        assert v1.status_code == 200
        assert_close(outputs_of(v2)["y"][0], run_alone(version_dir, x[0]).y)
        metrics = (await client.get("/metrics")).text
    samples = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("rnnserve_batch_size_")
        and 'model="rnn-feat"' in line
        and 'kind="predict"' in line
        and "_bucket" not in line
    }
    assert samples["rnnserve_batch_size_count"] == 1
    assert samples["rnnserve_batch_size_sum"] == 2


async def test_every_demo_model_answers_json_infer(demo_client: httpx.AsyncClient) -> None:
    demo = sorted(p for p in DEMO_REPOSITORY.glob("*/*") if (p / "model.json").is_file())
    assert demo, "models/ holds the demo models"
    rng = np.random.default_rng(5)
    for version_dir in demo:
        card = card_of(version_dir)
        x = random_batch(card, 2, 7, rng)
        path = f"/v2/models/{card['name']}/versions/{card['version']}/infer"
        response = await demo_client.post(path, json={"inputs": [json_tensor(input_name(card), x)]})
        out = outputs_of(response)
        for i in range(2):
            assert_close(out["y"][i], run_alone(version_dir, x[i]).y)
