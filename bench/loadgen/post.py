"""One POST load, run by wrk when it is installed (and allowed), else by the built-in client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.loadgen.closedloop import Hook, LoadResult, Worker, noop, run_closed_loop
from bench.loadgen.rawhttp import Connection, encode_request
from bench.loadgen.wrk import PostLoad, run_wrk, wrk_path

BUILTIN = "builtin asyncio client"


@dataclass(frozen=True)
class Window:
    """How long to warm up and to measure, and what to run at the window's edges."""

    warmup_s: float
    measure_s: float
    on_start: Hook = noop
    on_end: Hook = noop


async def run_in_window(workers: list[Worker], window: Window, *, generator: str) -> LoadResult:
    """Run closed-loop workers through one window: warm up, then measure."""
    return await run_closed_loop(
        workers,
        warmup_s=window.warmup_s,
        measure_s=window.measure_s,
        generator=generator,
        on_window_start=window.on_start,
        on_window_end=window.on_end,
    )


def generator_name(preference: str) -> str:
    """What will generate POST load: `wrk` or the built-in client."""
    if preference == "builtin" or wrk_path() is None:
        return BUILTIN
    return "wrk"


def _builtin_workers(load: PostLoad, connections: list[Connection]) -> list[Worker]:
    headers = {k: v for k, v in load.headers.items() if k.lower() != "content-type"}
    content_type = load.headers.get("Content-Type", "application/json")
    raws = [
        encode_request("POST", load.path, body, content_type=content_type, headers=headers)
        for body in load.bodies
    ]

    def make(connection: Connection, offset: int) -> Worker:
        position = offset

        async def call() -> str | None:
            nonlocal position
            raw = raws[position % len(raws)]
            position += 1
            answer = await connection.request(raw)
            return None if answer.status == 200 else f"HTTP {answer.status}: {answer.body[:120]!r}"

        return call

    return [make(connection, i) for i, connection in enumerate(connections)]


async def run_post_load(
    load: PostLoad, *, port: int, window: Window, workdir: Path, preference: str = "auto"
) -> LoadResult:
    """Closed-loop POSTs at `load.concurrency` for the window."""
    if generator_name(preference) == "wrk":
        return await run_wrk(
            load,
            port=port,
            workdir=workdir,
            warmup_s=window.warmup_s,
            measure_s=window.measure_s,
            on_window_start=window.on_start,
            on_window_end=window.on_end,
        )
    connections = [Connection(port) for _ in range(load.concurrency)]
    try:
        return await run_in_window(_builtin_workers(load, connections), window, generator=BUILTIN)
    finally:
        for connection in connections:
            connection.close()
