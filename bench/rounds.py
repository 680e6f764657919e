"""Interleaved rounds: a scenario's targets are measured in turn, several times over, so the
noise of a shared machine falls on rnnserve and its baselines alike; each row aggregates its
rounds (throughput over all of them, median of the per-round percentiles).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.checks import Check, Outcome
from bench.harness import Harness
from bench.loadgen.closedloop import Hook, LoadResult
from bench.loadgen.post import Window
from bench.probes import BatchTotals, Profiler, batch_totals, group_sched, summarise_collapsed
from bench.procs import Server
from bench.report import Row

REWARM_S = 0.5


@dataclass(frozen=True)
class Prepared:
    """A target ready for load: how to run one window, and what to release afterwards."""

    run: Callable[[Window], Awaitable[LoadResult]]
    release: Callable[[], Awaitable[None]]


@dataclass
class Target:
    """One server and protocol under one scenario's load."""

    scenario: str
    label: str
    protocol: str
    server: Server
    unit: str
    check_key: str
    check: Callable[[], Awaitable[Check]]
    prepare: Callable[[], Awaitable[Prepared]]
    batch_kind: str | None = None
    profile_name: str | None = None
    extra: tuple[Hook, Hook] | None = None
    note: str = ""
    # operations per completed request: a mux frame carries one step per session on its socket
    per_request: int = 1


@dataclass
class Sample:
    """One round of one target."""

    load: LoadResult
    server_cpu_pct: float | None
    server_wait_pct: float | None
    batch_delta: tuple[float, float] | None
    profile: str = ""


@dataclass
class _Running:
    target: Target
    check: Check
    prepared: Prepared
    samples: list[Sample] = field(default_factory=list)


async def measure(h: Harness, target: Target, prepared: Prepared, *, round_index: int) -> Sample:
    """One window with the server's CPU, its batch sizes and (with --profile) its stacks."""
    first = round_index == 0
    server: Server = target.server
    marks: dict[str, float] = {}
    totals: list[BatchTotals | None] = []
    profiler = None
    if h.profile and target.profile_name:
        path = h.out_dir / "profiles" / f"{target.profile_name}.round{round_index}.txt"
        profiler = Profiler(server.pid, path, h.budget.measure_s)

    async def on_start() -> None:
        if target.batch_kind:
            totals.append(await batch_totals(server.spec.port, target.batch_kind))
        if profiler:
            await profiler.start()
        if target.extra:
            await target.extra[0]()
        sched = group_sched(server.pid)
        marks["cpu"], marks["wait"], marks["t"] = sched.cpu_s, sched.waited_s, time.perf_counter()

    async def on_end() -> None:
        elapsed = time.perf_counter() - marks["t"]
        sched = group_sched(server.pid)
        marks["pct"] = 100.0 * (sched.cpu_s - marks["cpu"]) / elapsed
        marks["wait_pct"] = 100.0 * (sched.waited_s - marks["wait"]) / elapsed
        if target.batch_kind:
            totals.append(await batch_totals(server.spec.port, target.batch_kind))
        if target.extra:
            await target.extra[1]()

    warmup_s = h.budget.warmup_s if first else min(REWARM_S, h.budget.warmup_s)
    load = await prepared.run(Window(warmup_s, h.budget.measure_s, on_start, on_end))
    delta = None
    if len(totals) == 2 and totals[0] is not None and totals[1] is not None:
        delta = (totals[1].total - totals[0].total, totals[1].count - totals[0].count)
    profile = await profiler.finish() if profiler else ""
    return Sample(load, marks.get("pct"), marks.get("wait_pct"), delta, profile)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(running: _Running, profiles_dir: Path | None = None) -> Row:
    """The target's row over all its rounds (and its profile, when one was asked for)."""
    target, samples = running.target, running.samples
    loads = [s.load for s in samples]
    requests = sum(load.requests for load in loads)
    duration_s = sum(load.duration_s for load in loads)
    batch_sum = sum(s.batch_delta[0] for s in samples if s.batch_delta)
    batch_count = sum(s.batch_delta[1] for s in samples if s.batch_delta)
    client_cpu = _median([load.client_cpu_pct for load in loads])
    notes = [n for n in (target.note, f"check: {running.check.detail}") if n]
    if len(samples) > 1:
        notes.append(f"{len(samples)} interleaved rounds")
    sample_error = next((load.error_sample for load in loads if load.error_sample), "")
    if sample_error:
        notes.append(f"first error: {sample_error}")
    if requests == 0:
        notes.append("no request completed inside the window")
    if client_cpu is not None and client_cpu > 90:
        notes.append(f"load generator at {client_cpu:.0f}% CPU: figure may be client-bound")
    if profiles_dir is not None and target.profile_name:
        notes.append(_write_profile(samples, profiles_dir / f"{target.profile_name}.summary.txt"))
    return Row(
        scenario=target.scenario,
        server=target.label,
        protocol=target.protocol,
        concurrency=loads[0].concurrency,
        value=requests * target.per_request / duration_s if duration_s else None,
        unit=target.unit,
        p50_ms=_median([load.p50_ms for load in loads]),
        p99_ms=_median([load.p99_ms for load in loads]),
        errors=sum(load.errors for load in loads),
        requests=requests * target.per_request,
        batch_mean=batch_sum / batch_count if batch_count else None,
        server_cpu_pct=_median([s.server_cpu_pct for s in samples]),
        server_wait_pct=_median([s.server_wait_pct for s in samples]),
        client_cpu_pct=client_cpu,
        generator=loads[0].generator,
        note="; ".join(notes),
        check=running.check.detail,
    )


def _write_profile(samples: list[Sample], path: Path) -> str:
    stacks = "\n".join(s.profile for s in samples if s.profile)
    if not stacks:
        return "no profile: py-spy missing or it could not attach"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summarise_collapsed(stacks))
    return f"profiled: profiles/{path.name}"


def check_row(target: Target, check: Check) -> Row:
    """The row of a target that was not put under load: n/a, an error, or wrong answers."""
    prefix = "n/a: " if check.outcome is Outcome.UNAVAILABLE else ""
    return Row(
        target.scenario,
        target.label,
        target.protocol,
        status=check.outcome.value,
        note=prefix + check.detail,
    )


async def run_targets(h: Harness, entries: list[Target | Row]) -> list[Row]:
    """Check and prepare every target, run the rounds interleaved, release, aggregate."""
    rows: dict[int, Row] = {}
    running: dict[int, _Running] = {}
    try:
        for i, entry in enumerate(entries):
            if isinstance(entry, Row):
                rows[i] = entry
                continue
            check = await h.checked(entry.check_key, entry.protocol, entry.check)
            if not check.ok:
                rows[i] = check_row(entry, check)
                continue
            try:
                prepared = await entry.prepare()
            except (RuntimeError, OSError, KeyError, ValueError) as exc:
                why = f"setting up the load failed: {type(exc).__name__}: {exc}"[:300]
                rows[i] = Row(entry.scenario, entry.label, entry.protocol, status="error", note=why)
                continue
            running[i] = _Running(entry, check, prepared)
        order = list(running)
        for round_index in range(h.budget.rounds):
            shift = round_index % max(1, len(order))
            for i in order[shift:] + order[:shift]:
                sample = await measure(
                    h, running[i].target, running[i].prepared, round_index=round_index
                )
                running[i].samples.append(sample)
    finally:
        for item in running.values():
            await item.prepared.release()
    profiles_dir = h.out_dir / "profiles" if h.profile else None
    rows.update({i: aggregate(item, profiles_dir) for i, item in running.items()})
    return [rows[i] for i in sorted(rows)]
