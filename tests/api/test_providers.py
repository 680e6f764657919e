"""A model that asked for CUDA and did not get it shows the provider it really runs on, in
`/v1/models`, in the `rnnserve_model_ready{provider}` label and in the V2 config; IOBinding on
serves the same answers as `session.run`."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from service.core.providers import CPU, CUDA
from service.settings import DeviceFeature
from tests.support.app import app_client, cpu_settings
from tests.support.models import RandomRepository

pytestmark = pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="CUDA is available here"
)


async def test_cuda_requested_on_a_cpu_host_shows_the_cpu_everywhere(
    random_repository: RandomRepository,
) -> None:
    settings = cpu_settings(random_repository.path, providers=[CUDA, CPU])
    async for client in app_client(settings):
        described = (await client.get("/v1/models/gru1")).json()
        assert described["provider"] == CPU
        listed = {
            m["name"]: m["provider"] for m in (await client.get("/v1/models")).json()["models"]
        }
        assert set(listed.values()) == {CPU}
        metrics = (await client.get("/metrics")).text
        assert f'rnnserve_model_ready{{model="gru1",provider="{CPU}",version="1"}} 1.0' in metrics
        assert f'provider="{CUDA}"' not in metrics
        config = (await client.get("/v2/models/gru1/config")).json()
        assert config["instance_group"][0]["kind"] == "KIND_CPU"


async def test_predict_and_steps_answer_the_same_with_io_binding_on(
    random_repository: RandomRepository,
) -> None:
    rng = np.random.default_rng(3)
    body = {"inputs": [rng.standard_normal((n, 3)).tolist() for n in (4, 1, 6)]}
    answers = []
    for mode in (DeviceFeature.OFF, DeviceFeature.ON):
        async for client in app_client(cpu_settings(random_repository.path, io_binding=mode)):
            predicted = await client.post("/v1/models/gru-last/predict", json=body)
            opened = await client.post("/v1/models/gru-last/sessions")
            session = opened.json()["session_id"]
            step = await client.post(
                f"/v1/sessions/{session}/steps", json={"seq": 0, "inputs": body["inputs"][0]}
            )
            answers.append((predicted.json()["outputs"], step.json()["outputs"]))
    assert answers[0] == answers[1]
