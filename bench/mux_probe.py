"""Mux probe: what a batch of single steps for many sessions costs in the session use case,
next to onnxruntime alone on the same batch, in this process (no HTTP, no WebSocket).

    .venv/bin/python -m bench.mux_probe [--batch 64 256] [--store memory|redis://...]
                                        [--calls 100] [--delay-ms 0]

It opens `batch` sessions of the benchmark model (nn.RNN 32 -> 128, 2 layers) and times
`SessionManager.step_many` over frames of one step each (process CPU per call), then
`ModelRunner.run` on a batch of the same size. The ratio is the share of the model's own speed
the use case keeps: the mux bar asks for >= 0.5 end to end (bench's mux_* scenarios). With the
memory store this is the column-wise rows path; with a Redis URL the records path.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.model import INPUT_SIZE, export_bench_model
from service.app import create_app
from service.core.runtime import RnnBatch
from service.operations.step_columns import StepColumns
from service.settings import Settings


async def probe(repository: Path, batch: int, store: str, calls: int, delay_ms: float) -> str:
    """One line: the use case's CPU per call next to onnxruntime's on the same batch."""
    if store != "memory":
        store = f"{store}?key_prefix=mux-probe-{secrets.token_hex(4)}:"
    settings = Settings(
        repository=repository,
        providers=["CPUExecutionProvider"],
        session_store=store,
        max_step_delay_ms=delay_ms,
        access_log=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        sessions = app.state.engine.sessions
        model = sessions.streamable_model("bench-rnn", None)
        ids = [(await sessions.open(model, None, None)).session_id for _ in range(batch)]
        inputs = np.random.default_rng(0).random((batch, INPUT_SIZE), dtype=np.float32)
        counts = np.ones(batch, np.int64)
        seq = 0

        async def frame() -> None:
            nonlocal seq
            answers = await sessions.step_many(
                model, StepColumns(ids, [seq] * batch, counts, inputs), None
            )
            assert answers.answered.all(), answers.errors
            seq += 1

        for _ in range(10):
            await frame()
        started = time.process_time()
        for _ in range(calls):
            await frame()
        step_ms = (time.process_time() - started) / calls * 1e3
        run = RnnBatch(inputs[:, None], np.ones(batch, np.int32), model.runner.zero_state(batch))
        started = time.process_time()
        for _ in range(calls):
            model.runner.run(run)
        run_ms = (time.process_time() - started) / calls * 1e3
        for session_id in ids:
            await sessions.delete(session_id, None)
    overhead_us = (step_ms - run_ms) / batch * 1e3
    return (
        f"batch {batch:5d} ({store.split('?')[0]}): step_many {step_ms:.3f} ms, onnxruntime "
        f"{run_ms:.3f} ms -> {run_ms / step_ms:.2f}x; {overhead_us:.1f} us per record around it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--store", default="memory")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch)
        export_bench_model(repository)
        for batch in args.batch:
            print(asyncio.run(probe(repository, batch, args.store, args.calls, args.delay_ms)))


if __name__ == "__main__":
    main()
