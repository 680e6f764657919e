"""Model listing, description, health, metrics, docs and API keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.support.app import app_client, cpu_settings
from tests.support.models import RandomRepository


async def test_list_shows_every_model_with_status_provider_and_spec(
    client: httpx.AsyncClient,
) -> None:
    models = {m["name"]: m for m in (await client.get("/v1/models")).json()["models"]}
    assert {"rnn-feat", "lstm-tok", "bi-rnn"} <= set(models)
    lstm = models["lstm-tok"]
    assert lstm["status"] == "ready"
    assert lstm["provider"] == "CPUExecutionProvider"
    assert lstm["spec"]["input"] == {
        "name": "tokens",
        "dtype": "int64",
        "shape": [-1, -1],
        "vocab_size": 11,
    }
    assert lstm["spec"]["state"] == {"h": [1, 6], "c": [1, 6]}
    assert models["bi-rnn"]["card"]["streamable"] is False


async def test_describe_a_model_lists_its_versions(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models/gru-last")).json()
    assert body["version"] == 1
    assert body["versions"] == [{"version": 1, "status": "ready"}]
    assert body["card"]["head"] == "last_step"
    assert (await client.get("/v1/models/gru-last?version=2")).status_code == 404


async def test_unavailable_model_is_listed_with_reason_and_predict_answers_503(
    random_repository: RandomRepository, tmp_path: Path
) -> None:
    shutil.copytree(random_repository.path / "gru1", tmp_path / "gru1")
    graph = tmp_path / "gru1" / "1" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    async for client in app_client(cpu_settings(tmp_path)):
        listed = (await client.get("/v1/models")).json()["models"][0]
        assert listed["status"] == "unavailable"
        assert "sha256" in listed["reason"]
        response = await client.post("/v1/models/gru1/predict", json={"inputs": [[[0, 0]]]})
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "model_unavailable"
        assert "Retry-After" in response.headers
        assert (await client.get("/health/ready")).json()["unavailable"] == 1


async def test_health_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "live"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["models"]["rnn-feat/1"] == "ready"


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    await client.post("/v1/models/gru1/predict", json={"inputs": [[[0.0, 1.0]]]})
    await client.post("/v1/models/gru1/predict", json={"inputs": [[[0.0]]]})
    text = (await client.get("/metrics")).text
    assert (
        'rnnserve_requests_total{method="POST",route="/v1/models/{name}/predict",status="200"} 1.0'
        in text
    )
    assert 'status="400"' in text
    assert (
        'rnnserve_model_ready{model="gru1",provider="CPUExecutionProvider",version="1"} 1.0' in text
    )
    assert "rnnserve_inference_seconds_bucket" in text


async def test_openapi_documents_every_route_with_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["example"]["inputs"]
    assert "413" in predict["responses"]
    assert (await client.get("/docs")).status_code == 200


async def test_api_keys_guard_every_route_but_health(random_repository: RandomRepository) -> None:
    settings = cpu_settings(random_repository.path, api_keys=["k1", "k2"])
    body = {"inputs": [[[0.0, 1.0]]]}
    async for client in app_client(settings):
        assert (await client.get("/health/ready")).status_code == 200
        denied = await client.post("/v1/models/gru1/predict", json=body)
        assert denied.status_code == 401
        assert denied.json()["error"]["type"] == "unauthorized"
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        bearer = await client.post(
            "/v1/models/gru1/predict", json=body, headers={"Authorization": "Bearer k1"}
        )
        assert bearer.status_code == 200
        header = await client.get("/v1/models", headers={"X-API-Key": "k2"})
        assert header.status_code == 200
