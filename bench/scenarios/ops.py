"""Cold start (process start to ready) and memory per live session."""

from __future__ import annotations

import asyncio
import statistics

import orjson

from bench.harness import PYTRITON, Harness
from bench.loadgen.rawhttp import Connection, encode_request
from bench.loadgen.streams import SETUP_CONCURRENCY, step_body, step_inputs
from bench.probes import rss_bytes
from bench.procs import ROOT, ServerSpec
from bench.report import RNNSERVE, Row, unavailable
from bench.scenarios.streams import NO_SESSIONS

DEMO_REPOSITORY = ROOT / "models"
WARM_SESSIONS = 100
SETTLE_S = 0.5


def _cold_targets(h: Harness) -> list[tuple[str, str, ServerSpec | str]]:
    demo: ServerSpec | str = "models/ holds no committed model yet"
    if any(DEMO_REPOSITORY.glob("*/*/model.json")):
        demo = h.rnnserve_spec(name="rnnserve-demo", repository=DEMO_REPOSITORY)
    targets: list[tuple[str, str, ServerSpec | str]] = [
        (RNNSERVE, "demo repository", demo),
        (RNNSERVE, "bench model", h.rnnserve_spec()),
    ]
    targets += [
        (name, "bench model", h.baseline_spec(name)) for name in ("textbook", "hand-tuned", "bare")
    ]
    if h.pytriton is None:
        targets.append((PYTRITON, "bench model", h.missing.get(PYTRITON, "not installed")))
    else:
        targets.append((PYTRITON, "bench model", h.pytriton_spec()))
    return targets


def _respec(h: Harness, label: str, spec: ServerSpec) -> ServerSpec:
    """The same server on a fresh port for the next start."""
    if label == PYTRITON:
        return h.pytriton_spec()
    if label == RNNSERVE:
        repository = DEMO_REPOSITORY if spec.name == "rnnserve-demo" else None
        return h.rnnserve_spec(name=spec.name, repository=repository)
    return h.baseline_spec(label)


async def cold_start(h: Harness) -> list[Row]:
    """Median seconds from launching the process to the first 200 on its ready route."""
    rows = []
    for label, protocol, spec in _cold_targets(h):
        if isinstance(spec, str):
            rows.append(unavailable("cold_start", label, protocol, spec))
            continue
        times = []
        try:
            for _ in range(h.budget.cold_start_reps):
                server = h.pool.start(spec)
                try:
                    times.append(h.pool.wait_ready(server))
                finally:
                    h.pool.stop(server)
                spec = _respec(h, label, spec)
        except RuntimeError as exc:
            rows.append(Row("cold_start", label, protocol, status="error", note=str(exc)[-300:]))
            continue
        rows.append(
            Row(
                "cold_start",
                label,
                protocol,
                value=statistics.median(times),
                unit="s",
                note=f"median of {len(times)} starts (min {min(times):.2f}, "
                f"max {max(times):.2f} s); launch -> {spec.ready_path} 200",
            )
        )
    return rows


async def _open_and_step(port: int, model: str, count: int, inputs: list[bytes]) -> None:
    """Open `count` sessions and step each once (a live session holds a real state)."""
    opener = encode_request("POST", f"/v1/models/{model}/sessions", b"{}")

    async def worker(share: int) -> None:
        connection = Connection(port)
        try:
            for i in range(share):
                answer = await connection.request(opener)
                if answer.status not in (200, 201):
                    raise RuntimeError(f"open: HTTP {answer.status} {answer.body[:200]!r}")
                session_id = orjson.loads(answer.body)["session_id"]
                body = step_body(0, inputs[i % len(inputs)])
                path = f"/v1/sessions/{session_id}/steps"
                answer = await connection.request(encode_request("POST", path, body))
                if answer.status != 200:
                    raise RuntimeError(f"step: HTTP {answer.status} {answer.body[:200]!r}")
        finally:
            connection.close()

    slots = SETUP_CONCURRENCY
    await asyncio.gather(*(worker(count // slots + (i < count % slots)) for i in range(slots)))


async def memory(h: Harness, wanted: list[str]) -> list[Row]:
    """RSS delta of a fresh server per live (opened and stepped once) session."""
    targets = {k: v for k, v in h.budget.memory_targets.items() if k in wanted}
    if "sessions" not in h.routes:
        return [unavailable(k, RNNSERVE, "REST", NO_SESSIONS) for k in targets]
    cap = str(max((n for n in targets.values() if n), default=0) + 10 * WARM_SESSIONS)
    spec = h.rnnserve_spec(
        name="rnnserve-memory",
        env={
            "RNNSERVE_MAX_SESSIONS": cap,
            "RNNSERVE_MAX_SESSIONS_PER_KEY": cap,
            "RNNSERVE_SESSION_TTL_S": "3600",
        },
    )
    server = h.pool.launch(spec)
    rows = []
    inputs = step_inputs(h.rng)
    try:
        port = server.spec.port
        await _open_and_step(port, h.model.name, WARM_SESSIONS, inputs)
        await asyncio.sleep(SETTLE_S)
        base = rss_bytes(server.pid)
        live = WARM_SESSIONS
        for scenario, target in sorted(targets.items(), key=lambda kv: kv[1] or 0):
            if target is None:
                rows.append(unavailable(scenario, RNNSERVE, "REST", "skipped in --quick"))
                continue
            loop = asyncio.get_running_loop()
            started = loop.time()
            await _open_and_step(port, h.model.name, target - live, inputs)
            rate = (target - live) / (loop.time() - started)
            live = target
            await asyncio.sleep(SETTLE_S)
            rss = rss_bytes(server.pid)
            per_session = (rss - base) / (live - WARM_SESSIONS)
            raw = h.model.state_bytes
            rows.append(
                Row(
                    scenario,
                    RNNSERVE,
                    "REST",
                    concurrency=SETUP_CONCURRENCY,
                    value=per_session,
                    unit="B/session",
                    note=f"{live:,} live sessions, each stepped once; "
                    f"{per_session / raw:.2f}x the raw state of {raw} B (2 layers x 128 hidden "
                    f"x float32); RSS {base / 2**20:.0f} -> {rss / 2**20:.0f} MiB; "
                    f"opened+stepped at {rate:,.0f}/s",
                )
            )
    finally:
        h.pool.stop(server)
    return rows
