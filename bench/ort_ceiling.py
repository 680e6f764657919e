"""The onnxruntime ceiling for single steps: bare `InferenceSession.run` in a loop, nothing
else, the state fed back as the next call's `h0` (as a server's store would).

Run pinned to the server CPU by the harness (`bench.scenarios.ceiling`):
`python -m bench.ort_ceiling --model M.onnx --batch 64 --seconds 2` prints one JSON line
`{"batch", "calls", "seconds", "cpu_s"}`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import orjson

from bench.baselines.common import open_session, state_shape
from bench.model import INPUT_SIZE

WARMUP_CALLS = 20


def measure(model: Path, batch: int, seconds: float) -> dict[str, float]:
    """Calls of one batch of single steps completed in `seconds`, and the CPU they took."""
    session = open_session(model)
    layers, hidden = state_shape(session)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, INPUT_SIZE)).astype(np.float32)
    h = np.zeros((layers, batch, hidden), dtype=np.float32)
    seq_lens = np.ones(batch, dtype=np.int32)
    names = ["y", "hn"]
    for _ in range(WARMUP_CALLS):
        _, h = session.run(names, {"x": x, "h0": h, "seq_lens": seq_lens})
    calls = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        _, h = session.run(names, {"x": x, "h0": h, "seq_lens": seq_lens})
        calls += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"batch": batch, "calls": calls, "seconds": elapsed, "cpu_s": cpu}


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(orjson.dumps(measure(args.model, args.batch, args.seconds)).decode())


if __name__ == "__main__":
    main()
