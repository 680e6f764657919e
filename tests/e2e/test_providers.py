"""A real `rnnserve serve` asked for CUDA on a host without it: JSON-only warnings naming the
provider each model runs on, and, with `RNNSERVE_REQUIRE_PROVIDER`, a one-line refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import onnxruntime as ort
import orjson
import pytest

from service.core.providers import CPU, CUDA
from tests.support.models import RandomRepository
from tests.support.servers import ROOT

needs_no_cuda = pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="CUDA is available here"
)


@needs_no_cuda
def test_a_required_cuda_provider_that_is_missing_stops_the_start_in_one_line(
    random_repository: RandomRepository,
) -> None:
    env = {
        **os.environ,
        "RNNSERVE_PROVIDERS": f"{CUDA},{CPU}",
        "RNNSERVE_REQUIRE_PROVIDER": CUDA,
    }
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--repository", str(random_repository.path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "required execution provider CUDAExecutionProvider" in errors[0]
    assert "Traceback" not in result.stderr


@needs_no_cuda
def test_cuda_requested_on_a_cpu_host_logs_only_json_and_says_where_each_model_runs(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(random_repository.path, env={"RNNSERVE_PROVIDERS": f"{CUDA},{CPU}"})
    described = httpx.get(f"{server.base_url}/v1/models/gru1").json()
    assert described["provider"] == CPU
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.strip()]
    warned = {line["model"] for line in lines if line.get("failed_providers") == [CUDA]}
    assert "gru1" in warned


@pytest.mark.skipif(
    not os.environ.get("TEST_SERVER_REQUIRE_PROVIDER"), reason="bench/gpu.sh sets the provider"
)
def test_test_servers_run_every_model_on_the_provider_gpu_sh_requires(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    required = os.environ["TEST_SERVER_REQUIRE_PROVIDER"]
    server = server_factory(random_repository.path)
    models = httpx.get(f"{server.base_url}/v1/models").json()["models"]
    assert {m["provider"] for m in models if m["status"] == "ready"} == {required}
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.strip()]
    assert not [line for line in lines if "failed_providers" in line]
