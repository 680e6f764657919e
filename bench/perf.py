"""Triton's perf_analyzer against rnnserve and the PyTriton baseline, side by side.

Runs only when perf_analyzer is installed where tests/perf puts it
(`~/.cache/rnnserve-perf-analyzer`, or `RNNSERVE_PERF_ANALYZER_HOME`); the harness installs
nothing, so without it the rows say n/a. Each profile is one perf_analyzer run with only `x` in
`--input-data`, pinned like the harness (the servers keep their own CPU):

- stateless: `x` [50, 32] per request (the predict scenarios' T=50), HTTP and gRPC. rnnserve
  runs with `RNNSERVE_V2_SEQUENCE_BATCHING=false`, since perf_analyzer sends sequence
  parameters to any model whose configuration declares sequence batching.
- sequences: single steps `x` [1, 32]. rnnserve declares sequence batching, so perf_analyzer
  streams sequences of 20 steps (`--sequence-length 20`) and the server carries the state:
  HTTP, and gRPC with `--streaming`. PyTriton's model has no sequence batching (its streams
  carry `h0`/`hn` through the client), so its row sends the same single steps without a state:
  the same compute per request, no session.

Figures per row: perf_analyzer's throughput and latency percentiles, and the server's CPU per
inference (its process group's CPU time over the inferences its own statistics counted), which
holds steadier than throughput when other work shares the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness import PYTRITON, Harness, free_port
from bench.model import INPUT_SIZE
from bench.probes import group_sched
from bench.procs import ROOT, Server, ServerSpec
from bench.report import RNNSERVE, Row, unavailable

SCENARIO = "perf_analyzer"
HOME = Path(os.environ.get("RNNSERVE_PERF_ANALYZER_HOME", "~/.cache/rnnserve-perf-analyzer"))
CONCURRENCY = 8
STATELESS_STEPS = 50
SEQUENCE_LENGTH = 20
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class Profile:
    """One perf_analyzer run against one server."""

    server: str
    protocol: str
    mode: str
    args: tuple[str, ...]


def locate() -> tuple[Path | None, dict[str, str], str]:
    """perf_analyzer and its environment, or None and why not."""
    venv = HOME.expanduser() / "venv"
    binary = venv / "bin" / "perf_analyzer"
    cudart = next(venv.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"), None)
    if not binary.exists() or cudart is None:
        return None, {}, f"perf_analyzer not installed ({binary}; tests/perf installs it)"
    library_path = ":".join(p for p in (str(cudart), os.environ.get("LD_LIBRARY_PATH")) if p)
    return binary, {**os.environ, "LD_LIBRARY_PATH": library_path}, ""


def _input_data(directory: Path, steps: int) -> Path:
    x = np.random.default_rng(0).normal(size=(steps, INPUT_SIZE)).round(4)
    path = directory / f"x-{steps}.json"
    path.write_text(
        json.dumps({"data": [{"x": {"content": x.ravel().tolist(), "shape": [steps, INPUT_SIZE]}}]})
    )
    return path


def _inference_count(server: Server, model: str) -> int:
    url = f"{server.spec.base_url}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as answer:
        stats = json.loads(answer.read())["model_stats"]
    return sum(int(entry["inference_count"]) for entry in stats)


def _window(h: Harness) -> tuple[str, ...]:
    # count windows, accepted whatever their spread: a shared 2-core machine is never "stable"
    count = 200 if h.budget.quick else 1000
    return (
        "--measurement-mode", "count_windows", "--measurement-request-count", str(count),
        "--stability-percentage", "999", "--max-trials", "3",
    )  # fmt: skip


def _figure(output: str, label: str) -> float | None:
    match = re.search(rf"^\s*{re.escape(label)}: ([0-9.]+)", output, re.MULTILINE)
    return float(match.group(1)) if match else None


def _row(profile: Profile, output: str, returncode: int, cpu_ms: float | None) -> Row:
    errors = 0 if returncode == 0 and "error" not in output.lower() else 1
    if errors:
        last = next((line for line in reversed(output.splitlines()) if line.strip()), "no output")
        return Row(SCENARIO, profile.server, f"{profile.protocol} {profile.mode}",
                   concurrency=CONCURRENCY, status="error", note=last[:240])  # fmt: skip
    p50, p99 = _figure(output, "p50 latency"), _figure(output, "p99 latency")
    note = "" if cpu_ms is None else f"server CPU {cpu_ms:.3f} ms/inference"
    return Row(
        SCENARIO,
        profile.server,
        f"{profile.protocol} {profile.mode}",
        concurrency=CONCURRENCY,
        value=_figure(output, "Throughput"),
        unit="infer/s",
        p50_ms=None if p50 is None else p50 / 1000,
        p99_ms=None if p99 is None else p99 / 1000,
        errors=0,
        requests=int(_figure(output, "Request count") or 0),
        generator="perf_analyzer",
        note=note,
    )


async def _profile(
    h: Harness, binary: Path, env: dict[str, str], server: Server, grpc_port: int, profile: Profile
) -> Row:
    url = server.spec.base_url.removeprefix("http://")
    if profile.protocol == "grpc":
        url = f"127.0.0.1:{grpc_port}"
    command = [str(binary), "-m", h.model.name, "-i", profile.protocol, "-u", url,
               "--concurrency-range", str(CONCURRENCY), *_window(h), *profile.args]  # fmt: skip
    inferences = _inference_count(server, h.model.name)
    cpu = group_sched(server.pid).cpu_s
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env,
        timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    cpu_s = group_sched(server.pid).cpu_s - cpu
    counted = _inference_count(server, h.model.name) - inferences
    slug = re.sub(r"[^a-z0-9]+", "-", f"{profile.server} {profile.protocol} {profile.mode}")
    log_path = h.out_dir / "logs" / f"perf-{slug.strip('-')}.txt"
    log_path.write_text(" ".join(command) + "\n\n" + done.stdout + done.stderr)
    cpu_ms = 1000 * cpu_s / counted if counted else None
    return _row(profile, done.stdout + done.stderr, done.returncode, cpu_ms)


def _pytriton_spec(h: Harness, grpc_port: int) -> ServerSpec:
    assert h.pytriton is not None
    port = free_port()
    command = (
        str(h.pytriton), str(ROOT / "bench/baselines/pytriton_server.py"),
        "--model", str(h.model.onnx_path), "--name", h.model.name,
        "--port", str(port), "--grpc-port", str(grpc_port),
    )  # fmt: skip
    return ServerSpec(PYTRITON, command, port, ready_path=f"/v2/models/{h.model.name}/ready")


def _targets(
    h: Harness, data: dict[str, Path]
) -> list[tuple[ServerSpec | str, int, list[Profile]]]:
    stateless = ("--input-data", str(data["stateless"]))
    step = ("--input-data", str(data["step"]))
    sequences = (
        *step,
        "--sequence-length",
        str(SEQUENCE_LENGTH),
        "--sequence-length-variation",
        "0",
    )
    targets: list[tuple[ServerSpec | str, int, list[Profile]]] = []
    port = free_port()
    stateless_env = {"RNNSERVE_GRPC_PORT": str(port), "RNNSERVE_V2_SEQUENCE_BATCHING": "false"}
    spec = h.rnnserve_spec(name="rnnserve-stateless", env=stateless_env)
    targets.append(
        (spec, port, [Profile(RNNSERVE, p, "stateless", stateless) for p in ("http", "grpc")])
    )
    port = free_port()
    spec = h.rnnserve_spec(name="rnnserve-sequences", env={"RNNSERVE_GRPC_PORT": str(port)})
    targets.append((spec, port, [
        Profile(RNNSERVE, "http", "sequences", sequences),
        Profile(RNNSERVE, "grpc", "sequences", (*sequences, "--streaming")),
    ]))  # fmt: skip
    port = free_port()
    pytriton: ServerSpec | str = h.missing.get(PYTRITON, "nvidia-pytriton not installed")
    if h.pytriton is not None:
        pytriton = _pytriton_spec(h, port)
    targets.append((pytriton, port, [
        *(Profile(PYTRITON, p, "stateless", stateless) for p in ("http", "grpc")),
        Profile(PYTRITON, "http", "steps (no state)", step),
        Profile(PYTRITON, "grpc", "steps (no state)", (*step, "--streaming")),
    ]))  # fmt: skip
    return targets


async def perf_analyzer_profiles(h: Harness) -> list[Row]:
    """Every profile of every server, each server started for its profiles and stopped after."""
    binary, env, why = locate()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rnnserve-perf-") as tmp:
        data = {
            "stateless": _input_data(Path(tmp), STATELESS_STEPS),
            "step": _input_data(Path(tmp), 1),
        }
        for spec, grpc_port, profiles in _targets(h, data):
            if binary is None or isinstance(spec, str):
                reason = why if binary is None else str(spec)
                rows += [
                    unavailable(SCENARIO, p.server, f"{p.protocol} {p.mode}", reason)
                    for p in profiles
                ]
                continue
            server = h.pool.launch(spec)
            try:
                for profile in profiles:
                    rows.append(await _profile(h, binary, env, server, grpc_port, profile))
            finally:
                h.pool.stop(server)
    return rows
