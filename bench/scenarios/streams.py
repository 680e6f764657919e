"""Streams: concurrent single-step streams over REST and the WebSocket, 1024 over the WebSocket,
the step batcher off, and the Redis session store."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from bench.checks import (
    Check,
    check_rest_stream,
    check_triton_stream,
    check_ws_stream,
)
from bench.harness import PYTRITON, Harness
from bench.loadgen.closedloop import Hook, LoadResult
from bench.loadgen.post import Window, run_in_window
from bench.loadgen.rawhttp import Connection
from bench.loadgen.streams import (
    close_sockets,
    delete_sessions,
    open_sessions,
    rest_workers,
    step_inputs,
    triton_workers,
    ws_workers,
)
from bench.model import sequence
from bench.procs import Server
from bench.report import RNNSERVE, Row, unavailable
from bench.rounds import Prepared, Target, run_targets

REST, WS, V2_STATE = "REST", "WS", "V2 JSON, state via client"
PROFILED = (RNNSERVE, "hand-tuned")  # with --profile: rnnserve, and the baseline it must beat
PROFILED_SCENARIOS = (
    "streams64_rest", "streams64_ws", "streams1024_ws", "streams10k_ws", "redis_store",
)  # fmt: skip
NO_SESSIONS = (
    "rnnserve offers no sessions routes yet (POST /v1/models/{name}/sessions, "
    "POST /v1/sessions/{id}/steps)"
)


def _check_for(
    h: Harness, label: str, server: Server, protocol: str
) -> Callable[[], Awaitable[Check]]:
    steps = sequence(h.rng, 5)[0]
    port, name = server.spec.port, h.model.name
    if label == PYTRITON:
        return lambda: check_triton_stream(port, name, h.reference, steps)
    if protocol == WS:
        return lambda: check_ws_stream(port, name, h.reference, steps)
    return lambda: check_rest_stream(port, name, h.reference, steps)


async def _prepare(h: Harness, label: str, server: Server, protocol: str, streams: int) -> Prepared:
    """Open the sessions (and sockets) the streams use, and how to release them afterwards."""
    port = server.spec.port
    sockets: list[Any] = []
    connections: list[Connection] = []
    ids: list[str] = []
    if label == PYTRITON:
        workers, connections = triton_workers(port, h.model.name, streams, h.rng)
    else:
        ids = await open_sessions(port, h.model.name, streams)
        if protocol == WS:
            workers, sockets = await ws_workers(port, ids, step_inputs(h.rng))
        else:
            workers, connections = rest_workers(port, ids, step_inputs(h.rng))
    generator = "raw asyncio WebSocket client" if protocol == WS else "builtin asyncio client"

    async def run(window: Window) -> LoadResult:
        return await run_in_window(workers, window, generator=generator)

    async def release() -> None:
        for connection in connections:
            connection.close()
        await close_sockets(sockets)
        if label == RNNSERVE and ids:
            with contextlib.suppress(Exception):
                await delete_sessions(port, ids)

    return Prepared(run, release)


def _profile_name(scenario: str, label: str, protocol: str) -> str:
    """`scenario-label`, plus the variant (`redis_store-rnnserve-WS-Redis`) where one scenario
    measures one server under several protocols and stores."""
    if scenario in ("streams64_rest", "streams64_ws", "streams1024_ws", "streams10k_ws"):
        return f"{scenario}-{label}"
    variant = "-".join(part.replace(" ", "_") for part in protocol.split(", "))
    return f"{scenario}-{label}-{variant}"


def stream_target(
    h: Harness,
    scenario: str,
    label: str,
    server: Server,
    *,
    protocol: str,
    streams: int,
    transport: str | None = None,
    check_key: str | None = None,
    extra: tuple[Hook, Hook] | None = None,
    note: str = "",
) -> Target:
    """`streams` closed-loop single-step streams on one server, checked first; `transport`
    (REST or WS) defaults to `protocol`, which may carry a label such as "WS, batcher off"."""
    transport = transport or protocol
    profiled = label in PROFILED and scenario in PROFILED_SCENARIOS
    return Target(
        scenario=scenario,
        label=label,
        protocol=protocol,
        server=server,
        unit="steps/s",
        check_key=check_key or label,
        check=_check_for(h, label, server, transport),
        prepare=lambda: _prepare(h, label, server, transport, streams),
        batch_kind="step" if label == RNNSERVE else None,
        profile_name=_profile_name(scenario, label, protocol) if profiled else None,
        extra=extra,
        note=note,
    )


def _missing(h: Harness, scenario: str, label: str, protocol: str) -> Row | None:
    if label not in h.servers:
        return unavailable(scenario, label, protocol, h.missing.get(label, f"{label} not started"))
    if label == RNNSERVE and "sessions" not in h.routes:
        return unavailable(scenario, label, protocol, NO_SESSIONS)
    return None


async def _rows(
    h: Harness, scenario: str, targets: list[tuple[str, str]], streams: int
) -> list[Row]:
    entries: list[Target | Row] = []
    for label, protocol in targets:
        missing = _missing(h, scenario, label, protocol)
        if missing is None:
            server = h.servers[label]
            entries.append(
                stream_target(h, scenario, label, server, protocol=protocol, streams=streams)
            )
        else:
            entries.append(missing)
    return await run_targets(h, entries)


async def streams64_rest(h: Harness) -> list[Row]:
    """64 concurrent single-step streams over REST (PyTriton: V2 with client-carried state)."""
    targets = [(RNNSERVE, REST), ("textbook", REST), ("hand-tuned", REST), (PYTRITON, V2_STATE)]
    return await _rows(h, "streams64_rest", targets, 64)


async def streams64_ws(h: Harness) -> list[Row]:
    """64 concurrent single-step streams over the WebSocket."""
    return await _rows(h, "streams64_ws", [(RNNSERVE, WS), ("hand-tuned", WS)], 64)


async def streams1024_ws(h: Harness) -> list[Row]:
    """1024 concurrent WebSocket streams on rnnserve; the step batcher's mean batch."""
    return await _rows(h, "streams1024_ws", [(RNNSERVE, WS)], h.budget.large_streams)


async def streams10k_ws(h: Harness) -> list[Row]:
    """10,000 concurrent WebSocket streams on rnnserve (full mode only)."""
    if h.budget.huge_streams is None:
        return [unavailable("streams10k_ws", RNNSERVE, WS, "skipped in --quick")]
    return await _rows(h, "streams10k_ws", [(RNNSERVE, WS)], h.budget.huge_streams)
