"""Real `rnnserve serve` processes on loopback, started and stopped by PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DEMO_REPOSITORY = ROOT / "models"


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


def server_provider_env() -> dict[str, str]:
    """The providers test servers run on: CPU, unless `bench/gpu.sh` asks for CUDA.

    `TEST_SERVER_PROVIDERS` and `TEST_SERVER_REQUIRE_PROVIDER` reach only the servers the tests
    start, not the test process (whose in-process apps build their own settings).
    """
    env = {"RNNSERVE_PROVIDERS": os.environ.get("TEST_SERVER_PROVIDERS", "CPUExecutionProvider")}
    if required := os.environ.get("TEST_SERVER_REQUIRE_PROVIDER"):
        env["RNNSERVE_REQUIRE_PROVIDER"] = required
    return env


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
    full_env = {**os.environ, **server_provider_env(), **(env or {})}
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
