"""The run's shared state: the budget, the server specs and processes, the checks done."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.checks import Check, Outcome
from bench.model import BenchModel, Reference
from bench.procs import ROOT, Server, ServerPool, ServerSpec
from bench.report import RNNSERVE, Row

PYTRITON = "pytriton"
BASELINE_MODULES = {
    "textbook": "bench.baselines.textbook",
    "hand-tuned": "bench.baselines.handtuned",
    "bare": "bench.baselines.bare",
}
DEFAULT_PYTRITON_PYTHON = Path.home() / ".cache/rnnserve-bench/pytriton-venv/bin/python"
# bench/gpu.sh sets BENCH_PROVIDERS (and BENCH_REQUIRE_PROVIDER) for rnnserve and the baselines
BENCH_PROVIDERS = os.environ.get("BENCH_PROVIDERS", "CPUExecutionProvider")
RNNSERVE_ENV = {
    "RNNSERVE_PROVIDERS": BENCH_PROVIDERS,
    "RNNSERVE_REQUIRE_PROVIDER": os.environ.get("BENCH_REQUIRE_PROVIDER", ""),
    "RNNSERVE_INTRA_OP_THREADS": "1",
    "RNNSERVE_ACCESS_LOG": "false",
    "RNNSERVE_LOG_LEVEL": "warning",
}


@dataclass(frozen=True)
class Budget:
    """How long each load runs and how big the session counts get."""

    quick: bool
    warmup_s: float
    measure_s: float
    cold_start_reps: int
    memory_targets: dict[str, int | None]
    rounds: int
    large_streams: int = 1024
    # 10,000 WebSocket streams take ~30 s to set up: full mode only
    huge_streams: int | None = None


QUICK = Budget(True, 0.0, 1.0, 1, {"memory_10k": 2_000, "memory_100k": None}, rounds=1)
FULL = Budget(
    False, 2.0, 2.0, 3, {"memory_10k": 10_000, "memory_100k": 100_000}, rounds=3,
    huge_streams=10_000,
)  # fmt: skip


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pytriton_python(configured: str | None) -> tuple[Path | None, str]:
    """The interpreter that has nvidia-pytriton, or None and why not."""
    path = Path(configured) if configured else DEFAULT_PYTRITON_PYTHON
    if not path.exists():
        return None, (
            f"nvidia-pytriton not installed ({path} missing; bench/setup_pytriton.sh installs it)"
        )
    probe = subprocess.run(
        [str(path), "-c", "import pytriton, onnxruntime"], capture_output=True, timeout=60
    )
    if probe.returncode != 0:
        return None, f"{path} cannot import pytriton/onnxruntime"
    return path, ""


@dataclass
class Harness:
    """Everything the scenarios share."""

    budget: Budget
    out_dir: Path
    pool: ServerPool
    model: BenchModel
    reference: Reference
    generator: str = "auto"
    profile: bool = False
    pytriton: Path | None = None
    servers: dict[str, Server] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    routes: set[str] = field(default_factory=set)
    checks: dict[tuple[str, str], Check] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def rnnserve_spec(
        self,
        *,
        name: str = RNNSERVE,
        repository: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> ServerSpec:
        """`rnnserve serve` as users run it (same uvicorn settings as the baselines)."""
        port = free_port()
        command = (
            sys.executable, "-m", "service.cli", "serve",
            "--repository", str(repository or self.model.repository), "--port", str(port),
        )  # fmt: skip
        return ServerSpec(name, command, port, env={**RNNSERVE_ENV, **(env or {})})

    def baseline_spec(self, name: str) -> ServerSpec:
        """One of the FastAPI baselines over the same ONNX file."""
        port = free_port()
        command = (
            sys.executable, "-m", BASELINE_MODULES[name],
            "--model", str(self.model.onnx_path), "--port", str(port),
        )  # fmt: skip
        return ServerSpec(name, command, port)

    def pytriton_spec(self) -> ServerSpec:
        """PyTriton under its own interpreter; ready when the model is."""
        assert self.pytriton is not None
        port = free_port()
        command = (
            str(self.pytriton), str(ROOT / "bench/baselines/pytriton_server.py"),
            "--model", str(self.model.onnx_path), "--name", self.model.name,
            "--port", str(port), "--grpc-port", str(free_port()),
        )  # fmt: skip
        return ServerSpec(PYTRITON, command, port, ready_path=f"/v2/models/{self.model.name}/ready")

    def spec_for(self, name: str) -> ServerSpec:
        """The spec of a named load server."""
        if name == RNNSERVE:
            return self.rnnserve_spec()
        if name == PYTRITON:
            return self.pytriton_spec()
        return self.baseline_spec(name)

    def start_servers(self, names: list[str]) -> None:
        """Start the load servers side by side, then wait for each (a failure is recorded)."""
        started = {}
        for name in names:
            if name == PYTRITON and self.pytriton is None:
                continue
            started[name] = self.pool.start(self.spec_for(name))
        for name, server in started.items():
            try:
                self.pool.wait_ready(server)
                self.servers[name] = server
            except RuntimeError as exc:
                self.missing[name] = f"did not start: {exc}"
                self.pool.stop(server)

    def stop_servers(self) -> None:
        """Stop the load servers (the pool also stops anything left at exit)."""
        for server in self.servers.values():
            self.pool.stop(server)
        self.servers.clear()

    async def checked(
        self, server: str, protocol: str, run: Callable[[], Awaitable[Check]]
    ) -> Check:
        """Run a server's correctness check once per protocol and remember it."""
        key = (server, protocol)
        if key not in self.checks:
            try:
                self.checks[key] = await run()
            except Exception as exc:
                self.checks[key] = Check(
                    Outcome.FAILED, f"check raised {type(exc).__name__}: {exc}"
                )
        return self.checks[key]
