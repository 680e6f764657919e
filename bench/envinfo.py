"""The conditions of a run: machine, pinning, versions, generators, durations."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import Budget
from bench.loadgen.post import generator_name
from bench.loadgen.wrk import wrk_path
from bench.procs import ROOT, Pinning

PACKAGES = ("onnxruntime", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson",
            "numpy", "pydantic", "websockets")  # fmt: skip


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    binary = wrk_path()
    if binary is None:
        return "not installed"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).splitlines()[0]
    return first.split(" Copyright")[0].strip()


def _pytriton_version(python: Path | None) -> str:
    if python is None:
        return "not installed"
    done = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib.metadata import version; print(version('nvidia-pytriton'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=10,
    )
    return done.stdout.strip() or "unknown"


def conditions(
    *, budget: Budget, pinning: Pinning, generator: str, pytriton: Path | None
) -> dict[str, Any]:
    """Everything a reader needs to judge the figures."""
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    post = generator_name(generator)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if budget.quick else "full",
        "commit": _commit(),
        "cpu": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "pinning": pinning.describe(),
        "python": platform.python_version(),
        "versions": versions,
        "nvidia-pytriton": _pytriton_version(pytriton),
        "POST load generator": f"{post} ({_wrk_version()})" if post == "wrk" else post,
        "stream load generator": "built-in asyncio client (REST), raw asyncio WebSocket client "
        "(WS and mux; bench/loadgen/rawws.py), "
        "closed loop, one connection per stream",
        "durations": f"per row: {budget.warmup_s:g} s warm-up, then {budget.rounds} interleaved "
        f"round(s) of {budget.measure_s:g} s measured (wrk: whole seconds)",
        "model": "nn.RNN 32 -> 128, 2 layers, per-step head of 8, exported by export.api; "
        "onnxruntime CPU, 1 intra-op thread in every server",
        "servers": "uvicorn with uvloop + httptools, no access log, warnings-only logging",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
    }
