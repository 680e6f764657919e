"""The multiplexed binary stream (issue 12): 256 and 4,096 sessions over a few connections,
and the same load on the Redis store next to the memory store, in the same rounds.

Each connection keeps one frame in flight holding one single-step record per session on it,
so a frame is a batch of `sessions / connections` steps: mux_256 sends frames of 64 records
(4 connections), mux_4096 frames of 256 (16 connections), the two batch sizes of the
onnxruntime ceiling (`ort_ceiling`) the bar compares them with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from websockets.exceptions import InvalidHandshake, InvalidStatus

from bench.checks import Check, Outcome
from bench.harness import Harness
from bench.loadgen.closedloop import LoadResult
from bench.loadgen.mux import (
    APPLIED,
    MuxError,
    describe_statuses,
    encode_request,
    mux_connect,
    mux_load,
    mux_url,
    mux_workers,
    open_slots,
    step_frame,
)
from bench.loadgen.post import Window, run_in_window
from bench.model import Array, Reference, max_error, sequence
from bench.procs import Server
from bench.report import RNNSERVE, Row, unavailable
from bench.rounds import Prepared, Target, run_targets
from bench.scenarios.variants import (
    REDIS_DB,
    REDIS_PORT,
    reaches_redis,
    relate,
    start_variant,
    unavailable_rows,
)

MUX = "mux"
GENERATOR = "raw asyncio WebSocket client, binary mux frames"


@dataclass(frozen=True)
class MuxShape:
    """How many sessions a mux load carries, over how many connections."""

    sessions: int
    connections: int

    @property
    def per_frame(self) -> int:
        """Records per frame: the batch each frame offers the server."""
        return self.sessions // self.connections


SHAPES = {"mux_256": MuxShape(256, 4), "mux_4096": MuxShape(4096, 16)}
REDIS_SHAPE = SHAPES["mux_256"]


async def check_mux(port: int, model: str, reference: Reference, steps: Array) -> Check:
    """Two slots through three frames (a two-step record, then single steps) equal
    onnxruntime; a missing route is n/a."""
    try:
        socket = await mux_connect(mux_url(port, model))
    except (InvalidHandshake, InvalidStatus) as exc:
        why = f"WS /v1/models/{{name}}/mux not offered yet (the handshake got {exc})"
        return Check(Outcome.UNAVAILABLE, why)
    outputs: dict[int, list[Array]] = {0: [], 1: []}
    try:
        await open_slots(socket, 2)
        # slot 0 gets steps[0:2] then steps[2], steps[3]; slot 1 gets steps[0], [1], [2]
        plan = [([0, 1], [0, 0], [2, 1]), ([0, 1], [2, 1], [1, 1]), ([0, 1], [3, 2], [1, 1])]
        for request_id, (slots, seqs, counts) in enumerate(plan, start=1):
            x = np.concatenate(
                [steps[s : s + c] for s, c in zip(seqs, counts, strict=True)]
            ).astype(np.float32)
            frame = encode_request(request_id, np.array(slots), np.array(seqs), np.array(counts), x)
            answer = await step_frame(socket, frame)
            if not (answer.status == APPLIED).all():
                return Check(Outcome.FAILED, f"mux records: {describe_statuses(answer.status)}")
            outputs[0].append(answer.outputs[: counts[0]])
            outputs[1].append(answer.outputs[counts[0] :])
        await socket.send('{"op":"delete","slot":0}', text=True)
        await socket.send('{"op":"delete","slot":1}', text=True)
    except MuxError as exc:
        return Check(Outcome.FAILED, f"mux check: {exc}"[:300])
    finally:
        await socket.close()
    worst = 0.0
    for slot, length in ((0, 4), (1, 3)):
        expected, _ = reference.run(steps[None, :length])
        worst = max(worst, max_error(np.concatenate(outputs[slot])[None], expected))
    if worst > 1e-4:
        return Check(Outcome.WRONG, f"max error {worst:.3g} vs onnxruntime")
    return Check(Outcome.OK, f"max error {worst:.1e}")


async def _prepare(h: Harness, server: Server, shape: MuxShape) -> Prepared:
    load = await mux_load(server.spec.port, h.model.name, shape.sessions, shape.connections)
    workers = mux_workers(load, h.rng)

    async def run(window: Window) -> LoadResult:
        return await run_in_window(workers, window, generator=GENERATOR)

    async def release() -> None:
        await load.release(delete=True)

    return Prepared(run, release)


def mux_target(
    h: Harness,
    scenario: str,
    server: Server,
    shape: MuxShape,
    *,
    label: str = RNNSERVE,
    protocol: str = MUX,
    check_key: str | None = None,
    note: str = "",
) -> Target:
    """A mux load of `shape` on one server, checked first."""
    steps = sequence(h.rng, 4)[0]
    port, name = server.spec.port, h.model.name
    frames = f"{shape.connections} connections, frames of {shape.per_frame} single-step records"
    return Target(
        scenario=scenario,
        label=label,
        protocol=protocol,
        server=server,
        unit="steps/s",
        check_key=check_key or f"{label}-mux",
        check=lambda: check_mux(port, name, h.reference, steps),
        prepare=lambda: _prepare(h, server, shape),
        batch_kind="step" if label == RNNSERVE else None,
        per_request=shape.per_frame,
        profile_name=f"{scenario}-{label}-" + protocol.replace(", ", "-").replace(" ", "_"),
        note="; ".join(n for n in (note, frames, "latency per frame") if n),
    )


async def mux_at(h: Harness, scenario: str) -> list[Row]:
    """`SHAPES[scenario]` on the default rnnserve server."""
    if RNNSERVE not in h.servers:
        why = h.missing.get(RNNSERVE, "rnnserve was not started")
        return [unavailable(scenario, RNNSERVE, MUX, why)]
    target = mux_target(h, scenario, h.servers[RNNSERVE], SHAPES[scenario])
    return await run_targets(h, [target])


async def redis_mux(h: Harness) -> list[Row]:
    """mux_256's load on a Redis-store server next to the default memory store."""
    scenario = "redis_mux"
    missing = unavailable_rows(h, scenario)
    if missing:
        return [missing[0]]
    url = f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}"
    server = start_variant(
        h, scenario, {"RNNSERVE_SESSION_STORE": url, "RNNSERVE_SESSION_TTL_S": "300"}
    )
    if isinstance(server, str):
        return [unavailable(scenario, RNNSERVE, MUX, f"Redis server did not start: {server}")]
    labels = ("Redis", "memory store")
    try:
        if not await reaches_redis(h, server):
            why = f"sessions did not reach Redis db {REDIS_DB}"
            return [unavailable(scenario, RNNSERVE, MUX, why)]
        targets: list[Target | Row] = [
            mux_target(
                h,
                scenario,
                server,
                REDIS_SHAPE,
                protocol=f"{MUX}, {labels[0]}",
                check_key="rnnserve-redis_mux",
                note=f"Redis db {REDIS_DB}",
            ),
            mux_target(
                h,
                scenario,
                h.servers[RNNSERVE],
                REDIS_SHAPE,
                protocol=f"{MUX}, {labels[1]}",
                note="reference: the default server in the same rounds",
            ),
        ]
        rows = await run_targets(h, targets)
    finally:
        h.pool.stop(server)
    relate(rows, *labels)
    return rows
