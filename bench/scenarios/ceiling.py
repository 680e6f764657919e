"""Ceilings (issue 12): what onnxruntime alone does with a batch of single steps on the server
core, and what the load generators themselves can drive against the bare server's constant
answers, so a figure near either is known to be bound by it."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from bench.checks import Check
from bench.harness import Harness
from bench.loadgen.closedloop import LoadResult
from bench.loadgen.post import Window, run_in_window
from bench.loadgen.streams import close_sockets, open_sessions, step_inputs, ws_workers
from bench.report import Row, unavailable
from bench.rounds import Prepared, Target, run_targets
from bench.scenarios.mux import GENERATOR, MUX, MuxShape, _prepare
from bench.scenarios.predict import BARE_CHECK

ONNXRUNTIME = "onnxruntime"
CEILING_BATCHES = (64, 256)
BARE = "bare"
WS_STREAMS = (64, 1024)
MUX_SHAPES = (MuxShape(256, 4), MuxShape(4096, 16))


def _pinned(h: Harness, command: list[str]) -> list[str]:
    if h.pool.pinning.method == "taskset":
        return ["taskset", "-c", ",".join(map(str, h.pool.pinning.server_cpus)), *command]
    return command


async def _one_run(h: Harness, batch: int) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.ort_ceiling", "--model", str(h.model.onnx_path),
        "--batch", str(batch), "--seconds", str(h.budget.measure_s),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *_pinned(h, command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.ort_ceiling exited {process.returncode}: {err[-300:]!r}")
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


async def ort_ceiling(h: Harness) -> list[Row]:
    """Bare InferenceSession.run over batches of 64 and 256 single steps, pinned to the server
    CPU, one run per round (1 intra-op thread, the state fed back)."""
    rows = []
    for batch in CEILING_BATCHES:
        runs = [await _one_run(h, batch) for _ in range(h.budget.rounds)]
        calls = sum(r["calls"] for r in runs)
        seconds = sum(r["seconds"] for r in runs)
        cpu = sum(r["cpu_s"] for r in runs)
        steps = calls * batch
        rows.append(
            Row(
                "ort_ceiling",
                ONNXRUNTIME,
                f"InferenceSession.run, batch {batch}",
                concurrency=batch,
                value=steps / seconds,
                unit="steps/s",
                p50_ms=1000.0 * seconds / calls,
                requests=steps,
                server_cpu_pct=100.0 * cpu / seconds,
                note=f"{calls:,} calls of [{batch}, 1, 32] in {seconds:.1f} s over "
                f"{len(runs)} run(s); p50 column: mean ms per call",
            )
        )
    return rows


def _ws_target(h: Harness, streams: int) -> Target:
    server = h.servers[BARE]

    async def prepare() -> Prepared:
        port = server.spec.port
        ids = await open_sessions(port, h.model.name, streams)
        workers, sockets = await ws_workers(port, ids, step_inputs(h.rng))

        async def run(window: Window) -> LoadResult:
            return await run_in_window(workers, window, generator="raw asyncio WebSocket client")

        async def release() -> None:
            await close_sockets(sockets)

        return Prepared(run, release)

    return Target(
        scenario="loadgen_ceiling",
        label=BARE,
        protocol=f"WS, {streams} streams",
        server=server,
        unit="steps/s",
        check_key=BARE,
        check=_bare_check,
        prepare=prepare,
        note="constant answers: the WebSocket stream generator's ceiling",
    )


async def _bare_check() -> Check:
    return BARE_CHECK


def _mux_target(h: Harness, shape: MuxShape) -> Target:
    server = h.servers[BARE]
    return Target(
        scenario="loadgen_ceiling",
        label=BARE,
        protocol=f"{MUX}, {shape.sessions} sessions",
        server=server,
        unit="steps/s",
        check_key=BARE,
        check=_bare_check,
        prepare=lambda: _prepare(h, server, shape),
        per_request=shape.per_frame,
        note=f"constant answers: the mux generator's ceiling ({GENERATOR}); "
        f"{shape.connections} connections, frames of {shape.per_frame} records",
    )


async def loadgen_ceiling(h: Harness) -> list[Row]:
    """The stream and mux load generators against the bare server (constant answers): what
    they can drive at most on their core."""
    if BARE not in h.servers:
        why = h.missing.get(BARE, "the bare server was not started")
        return [unavailable("loadgen_ceiling", BARE, "WS", why)]
    entries: list[Target | Row] = [_ws_target(h, n) for n in WS_STREAMS]
    entries += [_mux_target(h, shape) for shape in MUX_SHAPES]
    return await run_targets(h, entries)
