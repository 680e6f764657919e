"""The commands the image runs work outside Docker: its install line, its CMD, its HEALTHCHECK.

No engine runs here, so this rebuilds the image's layout in a plain venv: the files the builder
stage copies, installed with the Dockerfile's own `pip install` target into a fresh venv whose
dependencies come from the dev venv (the image's dependency layer), then the exact CMD and the
exact HEALTHCHECK command, with only the venv path, repository, providers and port changed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.dockerfile import ROOT, Dockerfile, Instruction
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE_VENV = "/opt/venv"


def source_install(dockerfile: Dockerfile) -> list[str]:
    """The builder's `pip install --no-deps <target>` command, words as Docker runs them."""
    runs: list[Instruction] = dockerfile.in_stage("builder", "RUN")
    for run in runs:
        words = shlex.split(run.args)
        commands = [c.split() for c in " ".join(words).split(" && ")]
        for command in commands:
            if command[:2] == ["pip", "install"] and "--no-deps" in command:
                return command
    raise AssertionError("the builder stage has no `pip install --no-deps` line")


def lay_out_build_context(dockerfile: Dockerfile, context: Path) -> None:
    """Copy what the builder stage COPYs from the context, where it puts it."""
    for copy in dockerfile.copies():
        if copy.stage != "builder" or copy.from_stage is not None:
            continue
        for source in copy.sources:
            origin = ROOT / source
            assert origin.exists(), f"the Dockerfile copies {source}, missing from the repository"
            target = context / copy.destination
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory, dockerfile: Dockerfile) -> Path:
    """A fresh venv holding rnnserve installed the way the Dockerfile installs it."""
    root = tmp_path_factory.mktemp("image")
    context = root / "build"
    lay_out_build_context(dockerfile, context)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = venv / "lib" / version / "site-packages"
    (site_packages / "image_dependency_layer.pth").write_text(sysconfig.get_paths()["purelib"])
    install = source_install(dockerfile)
    assert [w for w in install[2:] if not w.startswith("-")] == ["."]
    # Offline here: setuptools from the dependency layer instead of an isolated build env.
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *install[1:]]
    subprocess.run(
        [*command, "--no-build-isolation", "--quiet"], cwd=context, check=True, timeout=300
    )
    return venv


def image_environment(dockerfile: Dockerfile, venv: Path, port: int) -> dict[str, str]:
    """The final stage's ENV with the venv moved, plus CPU, the committed models and `port`."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RNNSERVE_", "PYTHON", "VIRTUAL_ENV"))
    }
    env = dict(keep)
    for key, value in dockerfile.env(dockerfile.final_stage).items():
        env[key] = value.replace(IMAGE_VENV, str(venv)).replace("$PATH", os.environ["PATH"])
    env["RNNSERVE_REPOSITORY"] = str(ROOT / "models")
    env["RNNSERVE_PROVIDERS"] = "CPUExecutionProvider"
    env["RNNSERVE_PORT"] = str(port)
    return env


def healthcheck(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """Run the HEALTHCHECK command as Docker would and return its exit code."""
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=30).returncode


def test_healthcheck_fails_when_nothing_listens(
    dockerfile: Dockerfile, image_venv: Path, tmp_path: Path
) -> None:
    env = image_environment(dockerfile, image_venv, free_port())
    assert healthcheck(dockerfile.healthcheck().command, env, tmp_path) == 1


def test_image_cmd_serves_the_models_and_passes_its_own_healthcheck(
    dockerfile: Dockerfile, image_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = image_environment(dockerfile, image_venv, port)
    check = dockerfile.healthcheck().command
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            dockerfile.cmd(), env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        for _ in range(600):
            assert server.poll() is None, log_path.read_text()
            if healthcheck(check, env, tmp_path) == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the HEALTHCHECK never passed:\n{log_path.read_text()}")
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:2] == [bytes(image_venv / "bin" / n) for n in ("python", "rnnserve")]
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready").json()
        committed = {
            f"{version.parent.name}/{version.name}"
            for version in (ROOT / "models").glob("*/*")
            if (version / "model.json").exists()
        }
        assert set(ready["models"]) == committed
    finally:
        server.terminate()
        returncode = server.wait(timeout=30)
    # not PID 1 here: uvicorn finishes its shutdown, then dies of the SIGTERM it re-raises
    assert returncode == -signal.SIGTERM, log_path.read_text()


def child_of(pid: int) -> int:
    """The one child process of `pid` (bounded wait until it exists)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for _ in range(200):
        found = children.read_text().split()
        if found:
            return int(found[0])
        time.sleep(0.05)
    raise AssertionError(f"{pid} has no child")


def test_image_cmd_as_pid_1_exits_143_on_sigterm(
    dockerfile: Dockerfile, image_venv: Path, tmp_path: Path
) -> None:
    """In a container the server is PID 1, whose re-raised SIGTERM the kernel ignores: the
    exit status must still say SIGTERM. A new PID namespace makes it PID 1 without Docker."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare to run as PID 1 of a new PID namespace")
    port = free_port()
    env = image_environment(dockerfile, image_venv, port)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        wrapper = subprocess.Popen(
            [unshare, "--pid", "--fork", "--kill-child", *dockerfile.cmd()],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            assert wrapper.poll() is None, log_path.read_text()
            if healthcheck(dockerfile.healthcheck().command, env, tmp_path) == 0:
                break
            time.sleep(0.1)
        server = child_of(wrapper.pid)
        status = Path(f"/proc/{server}/status").read_text()
        assert re.search(r"^NSpid:\s+\d+\s+1$", status, re.MULTILINE), status  # PID 1 inside
        os.kill(server, signal.SIGTERM)
        returncode = wrapper.wait(timeout=60)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
    assert returncode == 128 + signal.SIGTERM, log_path.read_text()
