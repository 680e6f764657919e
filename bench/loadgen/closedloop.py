"""Closed-loop load: N workers, each sends its next request when the previous one is answered.

Counts what completes inside the measurement window (after a warm-up), with per-request
latency, errors, and the CPU this process (the load generator) used in the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# A worker sends one request and returns None when the answer was right, else why not.
Worker = Callable[[], Awaitable[str | None]]
Hook = Callable[[], Awaitable[None]]
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LoadResult:
    """What one bounded load produced."""

    generator: str
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    p50_ms: float | None
    p99_ms: float | None
    client_cpu_pct: float | None
    error_sample: str = ""

    @property
    def throughput(self) -> float:
        """Successful answers per second in the window."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class _Tally:
    start: float
    end: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_sample: str = ""

    def add(self, t0: float, t1: float, error: str | None) -> None:
        if not self.start <= t1 <= self.end:
            return
        if error is None:
            self.latencies_s.append(t1 - t0)
        else:
            self.errors += 1
            self.error_sample = self.error_sample or error[:200]


async def _drive(worker: Worker, tally: _Tally) -> None:
    while time.perf_counter() < tally.end:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                error = await worker()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        tally.add(t0, time.perf_counter(), error)
        if error is not None and time.perf_counter() < tally.end:
            await asyncio.sleep(0.01)


async def noop() -> None:
    return None


async def run_closed_loop(
    workers: Sequence[Worker],
    *,
    warmup_s: float,
    measure_s: float,
    generator: str,
    on_window_start: Hook = noop,
    on_window_end: Hook = noop,
) -> LoadResult:
    """Run every worker until the window closes; hooks run at the window's edges."""
    now = time.perf_counter()
    tally = _Tally(start=now + warmup_s, end=now + warmup_s + measure_s)
    cpu: list[float] = []

    async def window() -> None:
        await asyncio.sleep(max(0.0, tally.start - time.perf_counter()))
        await on_window_start()
        cpu.append(time.process_time())
        await asyncio.sleep(max(0.0, tally.end - time.perf_counter()))
        cpu.append(time.process_time())
        await on_window_end()

    await asyncio.gather(window(), *(_drive(w, tally) for w in workers))
    latencies = np.asarray(tally.latencies_s) * 1000.0
    return LoadResult(
        generator=generator,
        concurrency=len(workers),
        requests=len(latencies),
        errors=tally.errors,
        duration_s=measure_s,
        p50_ms=float(np.percentile(latencies, 50)) if latencies.size else None,
        p99_ms=float(np.percentile(latencies, 99)) if latencies.size else None,
        client_cpu_pct=100.0 * (cpu[1] - cpu[0]) / measure_s if len(cpu) == 2 else None,
        error_sample=tally.error_sample,
    )
