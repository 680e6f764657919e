"""`python -m bench.iobinding [--provider P] [--seconds S]`: IOBinding and the state pool.

Runs the benchmark model (bench/model.py) through rnnserve's own runner:
1. IOBinding vs `session.run`, for steps (T=1) and predict-sized sequences (T=50) at batch
   sizes 1, 64 and 256;
2. a batch of single steps of distinct sessions from host states (what the step batcher does
   without the pool: `run_batch`) vs from the device state pool (`run_pooled_steps`, every
   state already pooled, new states copied to the host as the Redis store needs them, and not).
Each pair is measured in interleaved rounds so that a shared machine's noise falls on both
alike; the tables give median microseconds per batch and the ratio (below 1: faster). Answers
are compared first: IOBinding must be bit for bit; the pool's largest difference is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.model import HIDDEN_SIZE, INPUT_SIZE, NUM_LAYERS, export_bench_model
from service.core.batching import run_batch
from service.core.pooled_steps import PooledStep, run_pooled_steps
from service.core.providers import CPU, ProviderConfig, choose_providers
from service.core.runtime import ModelRunner, RnnBatch
from service.core.state import RecurrentState
from service.core.state_pool import PoolGraphs, StatePool, StateTag
from service.core.version import load_version
from service.settings import DeviceFeature

BATCH_SIZES = (1, 64, 256)
STEPS = (1, 50)
ROUNDS = 10


def make_batch(batch: int, steps: int, rng: np.random.Generator) -> RnnBatch:
    """Full-length random sequences with a random initial state."""
    inputs = rng.standard_normal((batch, steps, INPUT_SIZE)).astype(np.float32)
    state = rng.standard_normal((NUM_LAYERS, batch, HIDDEN_SIZE)).astype(np.float32)
    return RnnBatch(inputs, np.full(batch, steps, np.int32), RecurrentState((state,)))


def per_call_us(run: Callable[[], object], seconds: float) -> float:
    """Mean microseconds per call over about `seconds`."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        run()
        calls += 1
    return elapsed / calls * 1e6


def interleaved(ways: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Median microseconds per call of each way over ROUNDS interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(ROUNDS):
        for name, way in ways.items():
            times[name].append(per_call_us(way, seconds / ROUNDS))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(runner: ModelRunner, seconds: float) -> list[str]:
    """One table row per (steps, batch): run vs bound, medians over interleaved rounds."""
    rng = np.random.default_rng(0)
    rows = []
    for steps in STEPS:
        for size in BATCH_SIZES:
            batch = make_batch(size, steps, rng)
            plain, bound = runner.run_plain(batch), runner.run_bound(batch)
            if not np.array_equal(plain.y, bound.y):
                raise SystemExit("IOBinding answered differently from session.run")
            us = interleaved(
                {
                    "run": lambda b=batch: runner.run_plain(b),
                    "bound": lambda b=batch: runner.run_bound(b),
                },
                seconds,
            )
            run_us, bound_us = us["run"], us["bound"]
            rows.append(
                f"| {steps} | {size} | {run_us:,.1f} | {bound_us:,.1f} | {bound_us / run_us:.2f} |"
            )
    return rows


def measure_pool(runner: ModelRunner, seconds: float) -> list[str]:
    """One table row per batch size: single steps from host states vs from the pool."""
    rng = np.random.default_rng(1)
    graphs = PoolGraphs(provider=runner.provider, device_id=runner.device_id)
    rows = []
    for size in BATCH_SIZES:
        batch = make_batch(size, 1, rng)
        ids = [f"s{i}" for i in range(size)]
        tag = StateTag(0, b"", 0.0)
        steps = [
            PooledStep(sid, batch.inputs[i], tag, batch.state.rows(i, i + 1), tag)
            for i, sid in enumerate(ids)
        ]
        pool = StatePool(runner.card.states, graphs, max_slots=4 * max(BATCH_SIZES))
        pool.put_many(ids, [tag] * size, [s.state for s in steps])
        host = run_batch(batch, runner)
        pooled = run_pooled_steps(runner, pool, steps, host_states=True)
        pool.put_many(ids, [tag] * size, [s.state for s in steps])  # back to the start state
        diff = max(
            max(float(np.max(np.abs(h.y - p.y))) for h, p in zip(host, pooled, strict=True)),
            max(
                float(np.max(np.abs(h.state.arrays[0] - p.state.arrays[0])))
                for h, p in zip(host, pooled, strict=True)
                if p.state is not None
            ),
        )
        # every way starts from the same tag: the pool always hits, as a session's next step does
        us = interleaved(
            {
                "host": lambda b=batch: run_batch(b, runner),
                "pool": lambda s=steps, p=pool: run_pooled_steps(runner, p, s, host_states=True),
                "pool_device": lambda s=steps, p=pool: run_pooled_steps(
                    runner, p, s, host_states=False
                ),
            },
            seconds,
        )
        rows.append(
            f"| {size} | {us['host']:,.1f} | {us['pool']:,.1f} | {us['pool_device']:,.1f} "
            f"| {us['pool'] / us['host']:.2f} | {us['pool_device'] / us['host']:.2f} "
            f"| {diff:.1e} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Export the bench model, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.iobinding")
    parser.add_argument("--provider", default=CPU, help="execution provider (default CPU)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell and way")
    args = parser.parse_args(argv)
    config = ProviderConfig(io_binding=DeviceFeature.OFF, required=args.provider)
    with tempfile.TemporaryDirectory(prefix="rnnserve-iobinding-") as tmp:
        model = export_bench_model(Path(tmp) / "models")
        providers = choose_providers(list(dict.fromkeys([args.provider, CPU])), config)
        runner = load_version(
            model.onnx_path.parent, providers=providers, intra_op_threads=1, config=config
        ).runner
        rows = measure(runner, args.seconds)
        pool_rows = measure_pool(runner, args.seconds)
    print(f"provider: {runner.provider}; median of {ROUNDS} interleaved rounds, us per batch\n")
    print("| steps | batch | session.run us | IOBinding us | bound / run |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nSingle steps of distinct sessions: host states vs the device state pool\n")
    print(
        "| batch | host us | pool us (new states to host) | pool us (states stay) "
        "| pool / host | pool-stay / host | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(pool_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
