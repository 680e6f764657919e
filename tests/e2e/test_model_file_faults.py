"""A model file that goes bad on disk while it serves: truncated, or replaced by another graph.

onnxruntime holds the graph it loaded in memory and rnnserve never reloads a version it serves
(versions are immutable once exported), so the serving copy answers exactly as before, sessions
step on, and a broken new version is listed unavailable without replacing the working one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.models import RandomRepository

pytestmark = [pytest.mark.e2e]

PREDICT = {"inputs": [[[0.5, -1.0], [0.25, 2.0]]], "return_state": True}
POLL_S = 0.1
SETTLE_S = 1.0  # ten polls: long enough for the poller to have seen every change


def predict(base_url: str) -> Any:
    answer = httpx.post(f"{base_url}/v1/models/gru1/predict", json=PREDICT, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def status_of(base_url: str, version: int) -> str:
    models = httpx.get(f"{base_url}/v1/models", timeout=30).json()
    listed = models["models"] if isinstance(models, dict) else models
    for model in listed:
        for entry in model.get("versions", [model]):
            if model.get("name") == "gru1" and entry.get("version") == version:
                return str(entry.get("status"))
    return "absent"


def test_a_served_graph_truncated_or_replaced_on_disk_keeps_serving_its_loaded_copy(
    server_factory: Any, random_repository: RandomRepository, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(random_repository.path / "gru1", repository / "gru1")
    graph = repository / "gru1" / "1" / "model.onnx"
    server = server_factory(
        repository, env={"RNNSERVE_REPOSITORY_POLL_S": str(POLL_S), "RNNSERVE_ACCESS_LOG": "false"}
    )
    base = server.base_url
    before = predict(base)
    session = httpx.post(f"{base}/v1/models/gru1/sessions", timeout=30).json()["session_id"]
    steps = f"{base}/v1/sessions/{session}/steps"
    assert httpx.post(steps, json={"seq": 0, "inputs": [[0.5, -1.0]]}).status_code == 200

    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 2])  # truncated in place
    time.sleep(SETTLE_S)
    assert predict(base) == before
    graph.write_bytes((random_repository.path / "rnn-feat" / "1" / "model.onnx").read_bytes())
    time.sleep(SETTLE_S)
    assert predict(base) == before  # replaced by another graph: still the loaded one
    assert httpx.post(steps, json={"seq": 1, "inputs": [[0.25, 2.0]]}).status_code == 200

    # a new version whose graph is broken: listed unavailable, the working one stays default
    shutil.copytree(repository / "gru1" / "1", repository / "gru1" / "2")
    (repository / "gru1" / "2" / "model.onnx").write_bytes(data[:100])
    time.sleep(SETTLE_S)
    assert status_of(base, 2) == "unavailable"
    assert predict(base) == before
    # an explicit load request rescans; it still never touches the serving version
    loaded = httpx.post(f"{base}/v2/repository/models/gru1/load", timeout=30)
    assert loaded.status_code in (200, 400, 503), loaded.text
    assert predict(base) == before
    assert server.process.poll() is None
