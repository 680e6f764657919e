"""Triton's extensions through the app in process: configuration, statistics, classification,
repository index, and the answers for what rnnserve does not support."""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.app import app_client, cpu_settings
from tests.support.models import RANDOM_MODELS, RandomRepository
from tests.support.reference import card_of, run_alone
from tests.support.servers import DEMO_REPOSITORY
from tests.support.v2 import json_tensor, random_batch


async def infer(client: httpx.AsyncClient, model: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/v2/models/{model}/infer", json=body)


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
async def test_config_declares_batch_first_tensors_and_only_the_sequence_input_as_required(
    client: httpx.AsyncClient, random_repository: RandomRepository, name: str
) -> None:
    card = card_of(random_repository.path / name / "1")
    config = (await client.get(f"/v2/models/{name}/config")).json()
    assert config == (await client.get(f"/v2/models/{name}/versions/1/config")).json()
    assert (config["name"], config["platform"]) == (name, "onnxruntime_onnx")
    assert config["max_batch_size"] == 64
    inputs = {i["name"]: (i["data_type"], i["dims"], i["optional"]) for i in config["input"]}
    if card.get("vocab_size"):
        assert inputs.pop("tokens") == ("TYPE_INT64", [-1], False)
    else:
        assert inputs.pop("x") == ("TYPE_FP32", [-1, card["input_size"]], False)
    assert inputs.pop("seq_lens") == ("TYPE_INT32", [1], True)
    for spec in card["states"]:
        dims = [spec["rows"], spec["width"]]
        assert inputs.pop(spec["input"]) == ("TYPE_FP32", dims, True)
    assert inputs == {}
    outputs = {o["name"]: o["dims"] for o in config["output"]}
    assert outputs.pop("y") == [-1, card["output_size"]]
    for spec in card["states"]:
        assert outputs.pop(spec["output"]) == [spec["rows"], spec["width"]]
    assert outputs == {}
    # the metadata shows the same tensors with the batch axis in front
    meta = (await client.get(f"/v2/models/{name}")).json()
    for tensor in config["input"]:
        shown = next(i for i in meta["inputs"] if i["name"] == tensor["name"])
        assert shown["shape"] == [-1, *tensor["dims"]]


async def test_streamable_models_declare_sequence_batching_and_the_others_dynamic_batching(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, max_queue_delay_ms=2.5, session_ttl_s=30)
    async for client in app_client(settings):
        streamable = (await client.get("/v2/models/gru1/config")).json()
        assert "dynamic_batching" not in streamable
        assert streamable["sequence_batching"]["max_sequence_idle_microseconds"] == 30_000_000
        bidirectional = (await client.get("/v2/models/bi-rnn/config")).json()
        assert "sequence_batching" not in bidirectional
        assert bidirectional["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    stateless = cpu_settings(random_repository.path, v2_sequence_batching=False)
    async for client in app_client(stateless):
        config = (await client.get("/v2/models/gru1/config")).json()
        assert "sequence_batching" not in config and "dynamic_batching" in config


async def test_config_of_unknown_model_or_version_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/models/nope/config")).status_code == 404
    response = await client.get("/v2/models/gru1/versions/9/config")
    assert response.status_code == 404 and "error" in response.json()


async def test_seq_lens_is_taken_as_batch_by_one_or_flat(client: httpx.AsyncClient) -> None:
    x = np.ones((2, 3, 2), np.float32)
    answers = []
    for lengths in (np.array([[3], [1]], np.int32), np.array([3, 1], np.int32)):
        body = {"inputs": [json_tensor("x", x), json_tensor("seq_lens", lengths)]}
        response = await infer(client, "gru1", body)
        assert response.status_code == 200, response.text
        answers.append(response.json()["outputs"])
    assert answers[0] == answers[1]


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def test_statistics_count_every_request_and_agree_with_metrics(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    card = card_of(random_repository.path / "rnn-feat" / "1")
    rng = np.random.default_rng(0)
    for batch in (1, 3, 2):
        x = random_batch(card, batch, 4, rng)
        assert (
            await infer(client, "rnn-feat", {"inputs": [json_tensor("x", x)]})
        ).status_code == 200
    predict = {"inputs": [random_batch(card, 1, 2, rng)[0].tolist()]}
    assert (await client.post("/v1/models/rnn-feat/predict", json=predict)).status_code == 200
    stats = (await client.get("/v2/models/rnn-feat/stats")).json()["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("rnn-feat", "1")]
    entry = stats[0]
    inference = entry["inference_stats"]
    assert inference["success"]["count"] == 4 and inference["fail"]["count"] == 0
    assert inference["queue"]["count"] == inference["compute_infer"]["count"] == 4
    assert entry["inference_count"] == 1 + 3 + 2 + 1
    batches = {b["batch_size"]: b["compute_infer"]["count"] for b in entry["batch_stats"]}
    assert sum(size * count for size, count in batches.items()) == entry["inference_count"]
    assert sum(batches.values()) == entry["execution_count"]
    assert entry["last_inference"] > 0
    text = (await client.get("/metrics")).text
    seconds = metric_sum(text, "rnnserve_model_request_duration_seconds_sum", model="rnn-feat")
    assert inference["success"]["ns"] == round(seconds * 1e9)
    counted = metric_sum(text, "rnnserve_model_requests_total", model="rnn-feat", outcome="success")
    assert counted == 4
    everything = (await client.get("/v2/models/stats")).json()["model_stats"]
    assert {s["name"] for s in everything} == set(RANDOM_MODELS)
    assert next(s for s in everything if s["name"] == "rnn-feat") == entry
    assert (await client.get("/v2/models/rnn-feat/versions/1/stats")).json()["model_stats"] == [
        entry
    ]


async def test_stats_is_never_read_as_a_model_name(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/stats")
    assert response.status_code == 200 and "model_stats" in response.json()
    assert (await client.get("/v2/models/nope/stats")).status_code == 404
    assert (await client.post("/v2/models/stats/infer", json={})).status_code == 404


async def test_classification_answers_top_k_strings_with_labels() -> None:
    version_dir = DEMO_REPOSITORY / "digits-rnn" / "1"
    card = card_of(version_dir)
    assert card["labels"] and card["head"] == "last_step"
    x = random_batch(card, 2, 8, np.random.default_rng(1))
    lengths = np.array([8, 5], np.int32)
    body = {
        "inputs": [json_tensor("x", x), json_tensor("seq_lens", lengths)],
        "outputs": [{"name": "y", "parameters": {"classification": 3}}, {"name": "hn"}],
    }
    async for client in app_client(cpu_settings(DEMO_REPOSITORY)):
        response = await infer(client, "digits-rnn", body)
    assert response.status_code == 200, response.text
    y, hn = response.json()["outputs"]
    assert (y["datatype"], y["shape"]) == ("BYTES", [2, 3])
    assert hn["datatype"] == "FP32"
    for i, length in enumerate(lengths):
        scores = run_alone(version_dir, x[i, :length]).y[-1]
        top = np.argsort(-scores, kind="stable")[:3]
        answered = [item.split(":") for item in y["data"][i * 3 : i * 3 + 3]]
        assert [(int(j), label) for _, j, label in answered] == [
            (j, card["labels"][j]) for j in top
        ]
        values = [float(value) for value, _, _ in answered]
        np.testing.assert_allclose(values, scores[top], atol=2e-6)


async def test_classification_of_a_per_step_model_ranks_every_step(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "rnn-feat" / "1"
    card = card_of(version_dir)
    x = random_batch(card, 1, 4, np.random.default_rng(2))
    body = {
        "inputs": [json_tensor("x", x)],
        "outputs": [{"name": "y", "parameters": {"classification": 2}}],
    }
    response = await infer(client, "rnn-feat", body)
    (y,) = response.json()["outputs"]
    assert y["shape"] == [1, 4, 2]
    expected = run_alone(version_dir, x[0]).y
    for step in range(4):
        best = int(np.argmax(expected[step]))
        value, index = y["data"][step * 2].split(":")
        assert int(index) == best and float(value) == pytest.approx(expected[step, best], abs=1e-5)


@pytest.mark.parametrize(
    ("outputs", "parameters", "message"),
    [
        ([{"name": "y", "parameters": {"classification": 0}}], None, "classification must be"),
        ([{"name": "y", "parameters": {"classification": 99}}], None, "in 1..3"),
        ([{"name": "y", "parameters": {"classification": "2"}}], None, "integer"),
        ([{"name": "hn", "parameters": {"classification": 1}}], None, "applies to 'y' only"),
        ([{"name": "y", "parameters": {"top_k": 1}}], None, "parameter 'top_k' is not supported"),
        (
            [{"name": "y", "parameters": {"shared_memory_region": "r"}}],
            None,
            "shared memory extension is not supported",
        ),
        (None, {"reduce": "mean"}, "request parameter 'reduce' is not supported"),
    ],
)
async def test_parameters_rnnserve_would_not_honour_are_400(
    client: httpx.AsyncClient,
    outputs: list[dict[str, Any]] | None,
    parameters: dict[str, Any] | None,
    message: str,
) -> None:
    body: dict[str, Any] = {"inputs": [json_tensor("x", np.zeros((1, 2, 4), np.float32))]}
    if outputs is not None:
        body["outputs"] = outputs
    if parameters is not None:
        body["parameters"] = parameters
    response = await infer(client, "rnn-feat", body)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_repository_index_lists_every_version_with_its_state(
    client: httpx.AsyncClient,
) -> None:
    everything = (await client.post("/v2/repository/index")).json()
    assert [m["name"] for m in everything] == sorted(RANDOM_MODELS)
    assert all(
        m == {"name": m["name"], "version": "1", "state": "READY", "reason": ""} for m in everything
    )
    ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert ready == everything
    bad = await client.post("/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "extension"),
    [
        ("GET", "/v2/systemsharedmemory/status", "system shared memory"),
        ("POST", "/v2/cudasharedmemory/region/r/register", "CUDA shared memory"),
        ("GET", "/v2/trace/setting", "trace"),
        ("POST", "/v2/models/gru1/trace/setting", "trace"),
        ("GET", "/v2/logging", "logging"),
    ],
)
async def test_unsupported_extensions_answer_501_naming_the_extension(
    client: httpx.AsyncClient, method: str, path: str, extension: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 501
    assert response.json() == {"error": f"the {extension} extension is not supported by rnnserve"}


async def test_server_metadata_advertises_the_extensions_served(client: httpx.AsyncClient) -> None:
    extensions = (await client.get("/v2")).json()["extensions"]
    for name in ("classification", "model_configuration", "statistics", "model_repository"):
        assert name in extensions
    assert "system_shared_memory" not in extensions
