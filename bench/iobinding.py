"""`python -m bench.iobinding [--provider P] [--seconds S]`: IOBinding vs `session.run`.

Runs the benchmark model (bench/model.py) through rnnserve's own runner both ways, for steps
(T=1) and predict-sized sequences (T=50) at batch sizes 1, 64 and 256, interleaving the two
ways in short rounds so that a shared machine's noise falls on both alike. Prints a markdown
table: median microseconds per batch of each way and their ratio (bound / run: below 1 means
IOBinding is faster). The answers are checked identical first.
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
from service.core.providers import CPU, ProviderConfig, choose_providers
from service.core.runtime import ModelRunner, RnnBatch, RnnResult
from service.core.state import RecurrentState
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


def per_call_us(run: Callable[[RnnBatch], RnnResult], batch: RnnBatch, seconds: float) -> float:
    """Mean microseconds per call over about `seconds`."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        run(batch)
        calls += 1
    return elapsed / calls * 1e6


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
            times: dict[str, list[float]] = {"run": [], "bound": []}
            for _ in range(ROUNDS):
                times["run"].append(per_call_us(runner.run_plain, batch, seconds / ROUNDS))
                times["bound"].append(per_call_us(runner.run_bound, batch, seconds / ROUNDS))
            run_us, bound_us = (statistics.median(times[k]) for k in ("run", "bound"))
            rows.append(
                f"| {steps} | {size} | {run_us:,.1f} | {bound_us:,.1f} | {bound_us / run_us:.2f} |"
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
    print(f"provider: {runner.provider}; median of {ROUNDS} interleaved rounds, us per batch\n")
    print("| steps | batch | session.run us | IOBinding us | bound / run |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
