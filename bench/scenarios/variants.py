"""rnnserve under other settings — the step batcher off (max step batch 1), the Redis session
store — each on a server started for the scenario, measured in the same interleaved rounds as
the default rnnserve server, so "on vs off" and "Redis vs memory" are same-run ratios."""

from __future__ import annotations

import re

from bench.harness import Harness
from bench.loadgen.closedloop import Hook
from bench.loadgen.streams import delete_sessions, open_sessions
from bench.probes import redis_command, redis_commands_processed, redis_up
from bench.procs import Server
from bench.report import RNNSERVE, Row, unavailable
from bench.rounds import Target, run_targets
from bench.scenarios.streams import NO_SESSIONS, REST, WS, stream_target

REDIS_PORT = 6379
REDIS_DB = 13
STREAMS = 64


def start_variant(h: Harness, scenario: str, env: dict[str, str]) -> Server | str:
    """The variant server, or why it could not start."""
    try:
        return h.pool.launch(h.rnnserve_spec(name=f"rnnserve-{scenario}", env=env))
    except RuntimeError as exc:
        return str(exc)


def _pair(
    h: Harness, scenario: str, variant: Server, labels: tuple[str, str], *, note: str
) -> list[Target | Row]:
    """The variant and the default server, REST and WS, as one scenario's targets."""
    variant_label, default_label = labels
    targets: list[Target | Row] = []
    for protocol in (REST, WS):
        targets.append(
            stream_target(
                h,
                scenario,
                RNNSERVE,
                variant,
                protocol=f"{protocol}, {variant_label}",
                transport=protocol,
                streams=STREAMS,
                check_key=f"rnnserve-{scenario}",
                note=note,
            )
        )
    for protocol in (REST, WS):
        targets.append(
            stream_target(
                h,
                scenario,
                RNNSERVE,
                h.servers[RNNSERVE],
                protocol=f"{protocol}, {default_label}",
                transport=protocol,
                streams=STREAMS,
                note="reference: the default server in the same rounds",
            )
        )
    return targets


def relate(rows: list[Row], variant_label: str, default_label: str) -> None:
    """Note each variant row's ratio to the default row of its protocol."""
    for row in rows:
        protocol, _, label = row.protocol.partition(", ")
        if label != variant_label or row.value is None:
            continue
        reference = next(
            (r for r in rows if r.protocol == f"{protocol}, {default_label}" and r.value), None
        )
        if reference is not None and reference.value:
            row.note = f"{row.value / reference.value:.2f}x the {default_label} server; " + row.note


def unavailable_rows(h: Harness, scenario: str) -> list[Row] | None:
    """The scenario's n/a rows when rnnserve or its sessions are missing, else None."""
    if RNNSERVE not in h.servers:
        why = h.missing.get(RNNSERVE, "rnnserve was not started")
        return [unavailable(scenario, RNNSERVE, p, why) for p in (REST, WS)]
    if "sessions" not in h.routes:
        return [unavailable(scenario, RNNSERVE, p, NO_SESSIONS) for p in (REST, WS)]
    return None


async def step_batcher_off(h: Harness) -> list[Row]:
    """64 streams, REST and WS, with RNNSERVE_MAX_STEP_BATCH_SIZE=1 next to the default."""
    scenario = "step_batcher_off"
    missing = unavailable_rows(h, scenario)
    if missing:
        return missing
    server = start_variant(h, scenario, {"RNNSERVE_MAX_STEP_BATCH_SIZE": "1"})
    if isinstance(server, str):
        return [Row(scenario, RNNSERVE, REST, status="error", note=server)]
    labels = ("batcher off", "batcher on")
    try:
        rows = await run_targets(
            h, _pair(h, scenario, server, labels, note="RNNSERVE_MAX_STEP_BATCH_SIZE=1")
        )
    finally:
        h.pool.stop(server)
    relate(rows, *labels)
    return rows


def _redis_keys(db: int) -> int:
    info = redis_command(REDIS_PORT, "INFO", "keyspace").decode(errors="replace")
    match = re.search(rf"^db{db}:keys=(\d+)", info, re.MULTILINE)
    return int(match.group(1)) if match else 0


async def redis_store(h: Harness) -> list[Row]:
    """64 streams, REST and WS, with RNNSERVE_SESSION_STORE=redis://127.0.0.1:6379/13 next to
    the default memory store; Redis commands per step from its own counter."""
    scenario = "redis_store"
    missing = unavailable_rows(h, scenario)
    if missing:
        return missing
    if not redis_up(REDIS_PORT):
        return [
            unavailable(scenario, RNNSERVE, p, "no Redis on 127.0.0.1:6379") for p in (REST, WS)
        ]
    url = f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}"
    server = start_variant(
        h, scenario, {"RNNSERVE_SESSION_STORE": url, "RNNSERVE_SESSION_TTL_S": "300"}
    )
    if isinstance(server, str):
        why = f"rnnserve did not start with RNNSERVE_SESSION_STORE={url}: {server[-300:]}"
        return [unavailable(scenario, RNNSERVE, p, why) for p in (REST, WS)]
    labels = ("Redis", "memory store")
    counts: dict[str, list[int | None]] = {REST: [], WS: []}
    try:
        if not await reaches_redis(h, server):
            why = f"sessions did not reach Redis db {REDIS_DB} (Redis store not implemented yet?)"
            return [unavailable(scenario, RNNSERVE, p, why) for p in (REST, WS)]
        targets = _pair(h, scenario, server, labels, note=f"Redis db {REDIS_DB}")
        for target, protocol in zip(targets[:2], (REST, WS), strict=True):
            assert isinstance(target, Target)
            target.extra = _counter(counts[protocol])
        rows = await run_targets(h, targets)
    finally:
        h.pool.stop(server)
    relate(rows, *labels)
    for row in rows:
        protocol, _, label = row.protocol.partition(", ")
        if label == labels[0]:
            _add_commands_per_step(row, counts[protocol])
    return rows


async def reaches_redis(h: Harness, server: Server) -> bool:
    """Whether a session opened on `server` lands in Redis (the store is really in use)."""
    before = _redis_keys(REDIS_DB)
    try:
        ids = await open_sessions(server.spec.port, h.model.name, 1, concurrency=1)
    except RuntimeError:
        return False
    reached = _redis_keys(REDIS_DB) > before
    await delete_sessions(server.spec.port, ids)
    return reached


def _counter(counts: list[int | None]) -> tuple[Hook, Hook]:
    """Window hooks that read Redis's command counter at each edge."""

    async def mark() -> None:
        counts.append(redis_commands_processed(REDIS_PORT))

    return mark, mark


def _add_commands_per_step(row: Row, counts: list[int | None]) -> None:
    pairs = list(zip(counts[::2], counts[1::2], strict=False))
    if not row.requests or not pairs or any(a is None or b is None for a, b in pairs):
        return
    commands = sum(b - a for a, b in pairs if a is not None and b is not None)
    row.note += (
        f"; {commands / row.requests:.1f} Redis commands per step "
        "(server-wide counter over the windows)"
    )
