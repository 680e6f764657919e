"""`python -m bench [--quick] [--only SCENARIO...] [--out DIR]`: one table, baselines included.

Exports the benchmark model, starts every server itself on loopback (pinned, recorded in
OUT/pids.json, always stopped), checks each one against local onnxruntime, runs bounded loads,
and writes OUT/results.md and OUT/results.json. Exit status: 0 when it ran (n/a rows
included), 1 when a server gave wrong answers, 2 when a scenario crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from bench.bars import judge
from bench.checks import Outcome, offered_routes
from bench.envinfo import conditions
from bench.harness import FULL, PYTRITON, QUICK, Harness, pytriton_python
from bench.model import Reference, export_bench_model
from bench.perf import perf_analyzer_profiles
from bench.procs import ROOT, ServerPool, install_signal_handlers, pin_harness
from bench.report import RNNSERVE, SCENARIOS, Row, add_ratios, plain_table, write_outputs
from bench.scenarios.ceiling import loadgen_ceiling, ort_ceiling
from bench.scenarios.mux import mux_at, redis_mux
from bench.scenarios.ops import cold_start, memory
from bench.scenarios.predict import predict_at, predict_mixed
from bench.scenarios.streams import streams10k_ws, streams64_rest, streams64_ws, streams1024_ws
from bench.scenarios.variants import redis_store, step_batcher_off

Scenario = Callable[[Harness], Awaitable[list[Row]]]
LOAD_SCENARIOS: dict[str, Scenario] = {
    "predict_c1": lambda h: predict_at(h, "predict_c1", 1),
    "predict_c32": lambda h: predict_at(h, "predict_c32", 32),
    "predict_mixed": predict_mixed,
    "streams64_rest": streams64_rest,
    "streams64_ws": streams64_ws,
    "streams1024_ws": streams1024_ws,
    "streams10k_ws": streams10k_ws,
    "ort_ceiling": ort_ceiling,
    "mux_256": lambda h: mux_at(h, "mux_256"),
    "mux_4096": lambda h: mux_at(h, "mux_4096"),
    "loadgen_ceiling": loadgen_ceiling,
}
VARIANT_SCENARIOS: dict[str, Scenario] = {
    "step_batcher_off": step_batcher_off,
    "redis_store": redis_store,
    "redis_mux": redis_mux,
    # servers of its own, started and stopped around its profiles
    "perf_analyzer": perf_analyzer_profiles,
}
LOAD_SERVERS = {
    "predict_c1": ("textbook", "hand-tuned", "bare", PYTRITON),
    "predict_c32": ("textbook", "hand-tuned", "bare", PYTRITON),
    "predict_mixed": ("textbook", "hand-tuned", "bare"),
    "streams64_rest": ("textbook", "hand-tuned", PYTRITON),
    "streams64_ws": ("hand-tuned",),
    "loadgen_ceiling": ("bare",),
}
CRASHED = "crashed"
BUSY_LOAD = 1.0
BUSY = (
    " (other work was running: servers got less than their core, figures are depressed and noisy)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a minute: CI smoke")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO",
                        help=f"run only these: {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                        help="POST load generator (auto: wrk when installed)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="py-spy rnnserve and the hand-tuned server under predict c=32 "
                        "and 64 REST/WS streams")  # fmt: skip
    parser.add_argument("--pytriton-python", help="interpreter with nvidia-pytriton installed")
    return parser.parse_args(argv)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run_scenario(
    h: Harness,
    name: str,
    run: Callable[[], Awaitable[list[Row]]],
    *,
    covers: list[str] | None = None,
) -> None:
    started = time.perf_counter()
    try:
        rows = await run()
    except Exception as exc:
        with (h.out_dir / "harness.log").open("a") as log:
            log.write(f"{name}:\n{traceback.format_exc()}\n")
        note = f"{type(exc).__name__}: {exc}"[:300]
        rows = [Row(n, "-", "-", status=CRASHED, note=note) for n in covers or [name]]
    h.rows.extend(rows)
    for row in rows:
        figure = f"{row.value:,.2f} {row.unit}" if row.value is not None else row.note[:100]
        _say(f"  {name:16} {row.server:10} {row.protocol:22} {row.status:6} {figure}")
    _say(f"[{name}] {time.perf_counter() - started:.1f} s")


async def run_all(h: Harness, wanted: list[str]) -> None:
    """Cold starts first (nothing else running), then the loads and the variants (next to the
    default server), then memory on a fresh server once the others are stopped."""
    if "cold_start" in wanted:
        await _run_scenario(h, "cold_start", lambda: cold_start(h))
    needed = {RNNSERVE} | {s for name in wanted for s in LOAD_SERVERS.get(name, ())}
    if any(name != "cold_start" for name in wanted):
        h.start_servers(sorted(needed))
        if RNNSERVE in h.servers:
            h.routes = await offered_routes(h.servers[RNNSERVE].spec.port)
        _say(
            f"servers up: {', '.join(h.servers)}; rnnserve offers: {sorted(h.routes) or 'v1 only'}"
        )
    try:
        for name, scenario in {**LOAD_SCENARIOS, **VARIANT_SCENARIOS}.items():
            if name in wanted:
                await _run_scenario(h, name, partial(scenario, h))
    finally:
        h.stop_servers()
    memory_wanted: list[str] = [n for n in ("memory_10k", "memory_100k") if n in wanted]
    if memory_wanted:
        await _run_scenario(h, "memory", lambda: memory(h, memory_wanted), covers=memory_wanted)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(argv)
    wanted = list(args.only or SCENARIOS)
    budget = QUICK if args.quick else FULL
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "harness.log").write_text("")
    install_signal_handlers()
    _raise_fd_limit()
    pinning = pin_harness()
    pool = ServerPool(out_dir=out_dir, pinning=pinning)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as tmp:
        try:
            _say(f"exporting the benchmark model into {tmp}")
            model = export_bench_model(Path(tmp) / "models")
            pytriton, why = pytriton_python(args.pytriton_python)
            h = Harness(
                budget,
                out_dir,
                pool,
                model,
                Reference(model.onnx_path),
                generator=args.generator,
                profile=args.profile,
                pytriton=pytriton,
            )
            if why:
                h.missing[PYTRITON] = why
            with _loop_runner() as runner:
                runner.run(run_all(h, wanted))
        except KeyboardInterrupt:
            pool.stop_all()
            _say(f"interrupted: every server it started is stopped (see {out_dir / 'pids.json'})")
            return 130
        finally:
            pool.stop_all()
    h.rows.sort(key=lambda row: SCENARIOS.index(row.scenario))
    add_ratios(h.rows)
    bars = judge(h.rows)
    info = conditions(budget=budget, pinning=pinning, generator=args.generator, pytriton=pytriton)
    info["wall time"] = f"{time.perf_counter() - started:.0f} s"
    info["load average (1 min) at start, end"] = (
        f"{load_at_start[0]:.2f}, {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        + (BUSY if load_at_start[0] > BUSY_LOAD else "")
    )
    md_path, json_path = write_outputs(out_dir, h.rows, bars, info)
    print(plain_table(h.rows))
    print("\nThe bars (issues 12 and 6):\n" + "\n".join(f"- {line}" for line in bars))
    print(f"\nwrote {md_path} and {json_path}")
    if any(row.status == Outcome.WRONG.value for row in h.rows):
        return 1
    return 2 if any(row.status == CRASHED for row in h.rows) else 0
