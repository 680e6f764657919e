"""wrk (the Debian package) with a Lua script that posts pre-built bodies round-robin.

The harness installs nothing: when `wrk` is not on PATH the built-in asyncio client runs the
same load and the report says which generator ran.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.loadgen.closedloop import Hook, LoadResult, noop

WRK_TIMEOUT = "30s"
LUA_TEMPLATE = """
local files = {files}
local headers = {headers}
local path = {path}
local bodies = {{}}
local index = 0

init = function(args)
  for i, name in ipairs(files) do
    local f = assert(io.open(name, "rb"))
    bodies[i] = f:read("*a")
    f:close()
  end
end

request = function()
  index = index % #bodies + 1
  return wrk.format("POST", path, headers, bodies[index])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"connect\\": %d, \\"read\\": %d, " ..
    "\\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class PostLoad:
    """A closed-loop POST load: the route, the bodies (round-robin) and the headers."""

    path: str
    bodies: Sequence[bytes]
    concurrency: int
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def wrk_path() -> str | None:
    """The wrk binary, if installed."""
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    return json.dumps(text)


def write_script(load: PostLoad, workdir: Path) -> Path:
    """The bodies as files and a Lua script that reads them once per wrk thread."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, body in enumerate(load.bodies):
        path = workdir / f"body-{i}.bin"
        path.write_bytes(body)
        names.append(_lua_string(str(path)))
    headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in load.headers.items())
    script = LUA_TEMPLATE.format(
        files="{" + ", ".join(names) + "}",
        headers="{" + headers + "}",
        path=_lua_string(load.path),
    )
    path = workdir / "post.lua"
    path.write_text(script)
    return path


async def _run(
    binary: str, script: Path, port: int, concurrency: int, seconds: int
) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        binary,
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("WRKJSON "):
            summary: dict[str, int] = orjson.loads(line[len("WRKJSON ") :])
            return summary
    raise RuntimeError(f"wrk printed no summary (exit {process.returncode}): {output[-400:]!r}")


async def run_wrk(
    load: PostLoad,
    *,
    port: int,
    workdir: Path,
    warmup_s: float,
    measure_s: float,
    on_window_start: Hook = noop,
    on_window_end: Hook = noop,
) -> LoadResult:
    """A warm-up run, then the measured run (whole seconds: wrk's resolution)."""
    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    script = write_script(load, workdir)
    if warmup_s > 0:
        await _run(binary, script, port, load.concurrency, max(1, round(warmup_s)))
    seconds = max(1, math.ceil(measure_s))
    await on_window_start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = await _run(binary, script, port, load.concurrency, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    await on_window_end()
    duration_s = summary["duration_us"] / 1e6
    socket_errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LoadResult(
        generator="wrk",
        concurrency=load.concurrency,
        requests=summary["requests"] - summary["status"],
        errors=summary["status"] + socket_errors,
        duration_s=duration_s,
        p50_ms=summary["p50_us"] / 1000.0,
        p99_ms=summary["p99_us"] / 1000.0,
        client_cpu_pct=100.0 * cpu_s / duration_s if duration_s else None,
        error_sample=f"{summary['status']} non-2xx answers" if summary["status"] else "",
    )
