"""Triton's perf_analyzer, installed once in a virtual environment of its own, and run.

perf_analyzer ships as `bin/perf_analyzer` inside tritonclient's manylinux wheels up to 2.60.0;
2.52 and newer need glibc 2.38 (Debian 12 has 2.36), so 2.51.0 is the newest that runs here. It
links `libb64.so.0d` (Debian `libb64-0d`, which .ci/run installs) and `libcudart.so.12` (PyPI
`nvidia-cuda-runtime-cu12`, whose lib directory goes on LD_LIBRARY_PATH). The environment lives
outside the repository so every worktree and CI run shares it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TRITONCLIENT = "tritonclient[http]==2.51.0"
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12"
HOME = Path(os.environ.get("RNNSERVE_PERF_ANALYZER_HOME", "~/.cache/rnnserve-perf-analyzer"))
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 300


class NotInstallableError(Exception):
    """The perf_analyzer wheel could not be installed here (the one reason to skip)."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """The binary and the environment it needs."""

    binary: Path
    env: dict[str, str]

    def run(self, *args: str) -> PerfRun:
        """Run perf_analyzer to completion; its output is kept whatever the exit status."""
        done = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        return PerfRun(done.returncode, done.stdout + done.stderr)


@dataclass(frozen=True)
class PerfRun:
    """One perf_analyzer run: exit status and everything it printed."""

    returncode: int
    output: str

    def client_figure(self, label: str) -> float:
        """A figure of the client section, e.g. "Request count" or "Throughput"."""
        match = re.search(rf"^\s*{re.escape(label)}: ([0-9.]+)", self.output, re.MULTILINE)
        if match is None:
            raise AssertionError(f"no {label!r} in perf_analyzer's output:\n{self.output}")
        return float(match.group(1))


def install(home: Path = HOME) -> PerfAnalyzer:
    """Create the environment once (a stamp marks it complete) and return the binary."""
    home = home.expanduser()
    venv = home / "venv"
    stamp = home / ".installed-2.51.0"
    if not stamp.exists():
        home.mkdir(parents=True, exist_ok=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
        pip = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                TRITONCLIENT,
                CUDA_RUNTIME,
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        if pip.returncode != 0:
            raise NotInstallableError(f"pip install {TRITONCLIENT} failed:\n{pip.stderr[-2000:]}")
        stamp.touch()
    binary = venv / "bin" / "perf_analyzer"
    if not binary.exists():
        raise NotInstallableError(f"{TRITONCLIENT} installed no {binary}")
    cudart = next(venv.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"), None)
    if cudart is None:
        raise NotInstallableError(f"{CUDA_RUNTIME} installed no nvidia/cuda_runtime/lib")
    library_path = ":".join(p for p in (str(cudart), os.environ.get("LD_LIBRARY_PATH")) if p)
    return PerfAnalyzer(binary, {**os.environ, "LD_LIBRARY_PATH": library_path})
