"""Shared fixtures: random models built through the real exporter, apps, real server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from export.api import export_module
from export.architectures import RecurrentModel
from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_REPOSITORY = ROOT / "models"

# name -> RecurrentModel kwargs; small enough to export in milliseconds, varied enough to cover
# every cell, tokens and features, 1 and 3 layers, both heads, relu, and a bidirectional model.
RANDOM_MODELS: dict[str, dict[str, Any]] = {
    "rnn-feat": {
        "cell": "rnn",
        "input_size": 4,
        "hidden_size": 8,
        "num_layers": 2,
        "output_size": 3,
    },
    "rnn-relu3": {
        "cell": "rnn",
        "nonlinearity": "relu",
        "input_size": 3,
        "hidden_size": 6,
        "num_layers": 3,
        "output_size": 2,
    },
    "lstm-tok": {
        "cell": "lstm",
        "vocab_size": 11,
        "embedding_dim": 5,
        "hidden_size": 6,
        "num_layers": 1,
        "output_size": 11,
    },
    "lstm3": {"cell": "lstm", "input_size": 2, "hidden_size": 5, "num_layers": 3, "output_size": 2},
    "gru-last": {
        "cell": "gru",
        "input_size": 3,
        "hidden_size": 7,
        "num_layers": 3,
        "output_size": 4,
        "head": "last_step",
    },
    "gru1": {"cell": "gru", "input_size": 2, "hidden_size": 4, "num_layers": 1, "output_size": 1},
    "bi-rnn": {
        "cell": "rnn",
        "input_size": 2,
        "hidden_size": 5,
        "num_layers": 2,
        "output_size": 2,
        "bidirectional": True,
    },
}


@dataclass(frozen=True)
class RandomRepository:
    """A repository of random exported models and the torch modules they came from."""

    path: Path
    modules: dict[str, RecurrentModel]


def export_random_model(
    repository: Path, name: str, *, seed: int = 0, **kwargs: Any
) -> RecurrentModel:
    """Build a seeded random RecurrentModel and export it through the real exporter."""
    torch.manual_seed(seed)
    module = RecurrentModel(**kwargs).eval()
    export_module(module, name=name, repository=repository)
    return module


@pytest.fixture(scope="session")
def random_repository(tmp_path_factory: pytest.TempPathFactory) -> RandomRepository:
    """Every model in RANDOM_MODELS, exported once per test session."""
    path = tmp_path_factory.mktemp("models")
    modules = {
        name: export_random_model(path, name, seed=i, **kwargs)
        for i, (name, kwargs) in enumerate(RANDOM_MODELS.items())
    }
    return RandomRepository(path, modules)


def cpu_settings(repository: Path, **overrides: Any) -> Settings:
    """Settings for tests: CPU provider, no access log noise."""
    values: dict[str, Any] = {
        "repository": repository,
        "providers": ["CPUExecutionProvider"],
        "access_log": False,
        **overrides,
    }
    return Settings(**values)


async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in process, lifespan on."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rnnserve") as client:
            yield client


@pytest.fixture
async def client(random_repository: RandomRepository) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client over the random repository with default settings."""
    async for c in app_client(cpu_settings(random_repository.path)):
        yield c


@pytest.fixture
async def demo_client() -> AsyncIterator[httpx.AsyncClient]:
    """In-process client over the committed demo models."""
    async for c in app_client(cpu_settings(DEMO_REPOSITORY)):
        yield c


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A real `rnnserve serve` process on loopback."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self, sig: int | None = None) -> int:
        """Stop the process we started (by PID) and return its exit code."""
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace")


def start_server(
    repository: Path,
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> ServerProcess:
    """Start `rnnserve serve` on a free port and wait until /health/ready answers 200."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    full_env = {**os.environ, "RNNSERVE_PROVIDERS": "CPUExecutionProvider", **(env or {})}
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--repository",
        str(repository),
        "--port",
        str(port),
        *(args or []),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready within 60 s:\n{server.log()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real servers; every one started is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(repository: Path, **kwargs: Any) -> ServerProcess:
        server = start_server(repository, tmp_path, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
