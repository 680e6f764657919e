"""The CPU image, built and run on a real Docker engine: healthy by its own HEALTHCHECK, README's
walk-throughs answered through it, a WebSocket stream, non-root on a read-only root filesystem,
no torch and no installer inside, and SIGTERM drains an in-flight request and exits 143 with
every log line JSON. The engine, the base image and its stand-in: tests/deploy/engine.py."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.deploy.conftest import BuiltImage, report
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.engine import Engine
from tests.deploy.readme import matches, parse_output, walkthroughs
from tests.support.servers import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE_UID = "10001"
# what the Kubernetes manifests promise the pod: read-only root, a writable /tmp
RUN_OPTIONS = ("--read-only", "--tmpfs", "/tmp", "-e", "RNNSERVE_PROVIDERS=CPUExecutionProvider")


@dataclass(frozen=True)
class Container:
    """A running container of the image, published on a loopback port."""

    name: str
    base_url: str
    ready_s: float
    healthy_s: float


def run_container(engine: Engine, image: str, *extra: str) -> tuple[str, str]:
    """`docker run -d` the image on a free loopback port; (name, base URL)."""
    name = f"rnnserve-ci-{secrets.token_hex(4)}"
    port = free_port()
    engine.run(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", *RUN_OPTIONS, *extra, image
    )
    return name, f"http://127.0.0.1:{port}"


def wait_ready(base_url: str, engine: Engine, name: str) -> float:
    """Seconds until /health/ready answers 200 (bounded); fails with the logs if it exits."""
    began = time.monotonic()
    for _ in range(1200):
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                return time.monotonic() - began
        except httpx.TransportError:
            pass
        state = engine.run("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", engine.run("logs", name).stderr
        time.sleep(0.1)
    pytest.fail(f"{name} never ready:\n{engine.run('logs', name).stderr}")


def wait_healthy(engine: Engine, name: str) -> None:
    """Until Docker's own HEALTHCHECK says healthy (bounded by its start period and retries)."""
    for _ in range(900):
        health = engine.run("inspect", "--format", "{{.State.Health.Status}}", name).stdout
        if health.strip() == "healthy":
            return
        assert health.strip() in ("starting", ""), health
        time.sleep(0.2)
    pytest.fail(f"{name} never healthy")


@pytest.fixture(scope="module")
def container(
    engine: Engine, cpu_image: BuiltImage, request: pytest.FixtureRequest
) -> Iterator[Container]:
    """The image running with the defaults of its Dockerfile, removed afterwards."""
    began = time.monotonic()
    name, base_url = run_container(engine, cpu_image.name)
    try:
        ready_s = wait_ready(base_url, engine, name)
        wait_healthy(engine, name)
        healthy_s = time.monotonic() - began
        report(request, f"ready in {ready_s:.1f} s, HEALTHCHECK healthy in {healthy_s:.1f} s")
        yield Container(name, base_url, ready_s, healthy_s)
    finally:
        engine.run("rm", "--force", name, check=False)


def replay(exchanges: list[Any], base_url: str) -> list[str]:
    """Run README's commands against `base_url`; the mismatches, described."""
    problems = []
    env = {**os.environ, "SID": ""}
    for exchange in exchanges:
        if exchange.command.startswith("SID="):
            continue  # README's literal id: the live one was taken from the create answer
        command = exchange.command.replace("localhost:8000", base_url.removeprefix("http://"))
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60
        )
        actual = done.stdout.strip()
        expected = parse_output(exchange.output)
        if expected is not None:
            answer = json.loads(actual)
            if "session_id" in answer and not env["SID"]:
                env["SID"] = answer["session_id"]
            ok = matches(expected, answer)
        elif "..." in exchange.output:
            shown = exchange.output.split(" ...")[0].rsplit(",", 1)[0]
            ok = actual.startswith(shown)
        else:
            ok = actual == exchange.output.strip()
        if not ok:
            problems.append(f"$ {exchange.command}\nREADME: {exchange.output}\nimage:  {actual}")
    return problems


def test_image_answers_every_readme_walkthrough_as_readme_shows(container: Container) -> None:
    blocks = walkthroughs()
    assert len(blocks) >= 2  # the quick start (predict) and the sessions walk-through
    problems = [p for block in blocks for p in replay(block, container.base_url)]
    assert not problems, "\n\n".join(problems)


async def stream_steps(base_url: str, steps: list[list[float]]) -> list[Any]:
    """Open a session over `WS /v1/models/co2-forecaster/stream` and send one step per frame."""
    outputs: list[Any] = []
    ws_url = base_url.replace("http://", "ws://")
    async with websockets.connect(f"{ws_url}/v1/models/co2-forecaster/stream") as ws:
        opened = json.loads(await ws.recv())
        assert opened["seq"] == 0
        for seq, step in enumerate(steps):
            await ws.send(json.dumps({"seq": seq, "inputs": [step]}))
            outputs += json.loads(await ws.recv())["outputs"]
    return outputs


def test_image_streams_over_a_websocket_exactly_as_one_predict(container: Container) -> None:
    steps = [[v] for v in np.random.default_rng(4).uniform(310, 360, 12).round(2).tolist()]
    streamed = asyncio.run(stream_steps(container.base_url, steps))
    predicted = httpx.post(
        f"{container.base_url}/v1/models/co2-forecaster/predict",
        json={"inputs": [steps], "output": "all"},
    )
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_allclose(streamed, predicted.json()["outputs"][0], rtol=1e-5)


def inside(engine: Engine, image: str, code: str) -> Any:
    """Run Python in a fresh container of the image (its venv, its user) and read its JSON."""
    done = engine.run("run", "--rm", "--entrypoint", "python", image, "-c", code)
    return json.loads(done.stdout)


def test_image_runs_as_its_non_root_user(
    engine: Engine, container: Container, dockerfile: Dockerfile
) -> None:
    uid = engine.run("exec", container.name, "id", "-u").stdout.strip()
    assert uid == IMAGE_UID == dockerfile.in_stage(dockerfile.final_stage, "USER")[-1].args[:5]
    configured = engine.run("inspect", "--format", "{{.Config.User}}", container.name).stdout
    assert configured.strip().split(":")[0] == IMAGE_UID


def test_image_venv_holds_no_torch_and_no_installer(engine: Engine, cpu_image: BuiltImage) -> None:
    found = inside(
        engine,
        cpu_image.name,
        "import json, sys; from importlib import metadata as m; "
        "print(json.dumps({'prefix': sys.prefix, "
        "'dists': sorted(d.metadata['Name'].lower() for d in m.distributions())}))",
    )
    assert found["prefix"] == "/opt/venv"
    assert "onnxruntime" in found["dists"] and "rnnserve" in found["dists"]
    assert not {"torch", "onnxruntime-gpu", "pip", "setuptools", "wheel"} & set(found["dists"])


def heavy_predict() -> dict[str, Any]:
    """64 sequences of 4,000 tokens for char-lm: ~5 s of work on the 2-core CI machine (1.1 s
    for 32 x 2,000, which a fast machine could finish before the signal goes out)."""
    tokens = np.random.default_rng(5).integers(0, 100, (64, 4000))
    return {"inputs": tokens.tolist(), "output": "last"}


def test_sigterm_finishes_the_in_flight_request_exits_143_and_logs_only_json(
    engine: Engine, cpu_image: BuiltImage, request: pytest.FixtureRequest
) -> None:
    grace_s = 30  # several times the request's work here, so only a hang runs out of it
    grace = f"RNNSERVE_SHUTDOWN_GRACE_S={grace_s}"
    name, base_url = run_container(engine, cpu_image.name, "-e", grace)
    try:
        wait_ready(base_url, engine, name)
        answers: list[httpx.Response] = []
        body = heavy_predict()
        in_flight = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{base_url}/v1/models/char-lm/predict", json=body, timeout=120)
            )
        )
        in_flight.start()
        time.sleep(0.5)  # the body is on its way or being computed
        assert in_flight.is_alive(), "the request finished before SIGTERM: make it heavier"
        began = time.monotonic()
        # docker stop: SIGTERM, then SIGKILL (exit 137) only if the grace period runs out
        engine.run("stop", "--time", str(grace_s + 5), name, timeout=120)
        stopped_s = time.monotonic() - began
        in_flight.join(timeout=120)
        exit_code = engine.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = engine.run("logs", name)
    finally:
        engine.run("rm", "--force", name, check=False)
    report(request, f"docker stop with a request in flight: exit {exit_code} in {stopped_s:.1f} s")
    assert answers and answers[0].status_code == 200, answers
    assert len(answers[0].json()["outputs"]) == len(body["inputs"])
    assert exit_code == "143"
    lines = (logs.stdout + logs.stderr).splitlines()
    assert lines
    for line in lines:
        assert "\x1b" not in line, line
        assert isinstance(json.loads(line), dict), line
