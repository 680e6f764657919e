"""What every FastAPI baseline shares: the command line, one onnxruntime session, uvicorn.

The servers differ only in how they parse, batch and answer; everything else (1 intra-op
thread, uvloop + httptools, no access log) is the same as rnnserve's so the comparison is fair.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


def parse_args(description: str) -> argparse.Namespace:
    """`--model PATH/model.onnx --port N [--host H]`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", type=Path, required=True, help="the model.onnx to serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args()


def open_session(path: Path) -> ort.InferenceSession:
    """One session with one intra-op thread, as rnnserve runs it: on the CPU, or on what
    BENCH_PROVIDERS names (bench/gpu.sh: CUDA, with the options rnnserve uses there)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    wanted = os.environ.get("BENCH_PROVIDERS", "CPUExecutionProvider").split(",")
    if "CUDAExecutionProvider" in wanted and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    providers = [p for p in wanted if p in ort.get_available_providers()] or [
        "CPUExecutionProvider"
    ]
    # the same exact-float32 CUDA options rnnserve defaults to, so both compute alike
    cuda_options = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
    session = ort.InferenceSession(
        str(path),
        options,
        providers=providers,
        provider_options=[cuda_options if p == "CUDAExecutionProvider" else {} for p in providers],
    )
    required = os.environ.get("BENCH_REQUIRE_PROVIDER")
    if required and session.get_providers()[0] != required:
        raise SystemExit(f"baseline runs on {session.get_providers()[0]}, not {required}")
    return session


def state_shape(session: ort.InferenceSession) -> tuple[int, int]:
    """(layers * directions, hidden) from the graph's `h0` input."""
    shape = next(i.shape for i in session.get_inputs() if i.name == "h0")
    return int(shape[0]), int(shape[2])


def run_model(
    session: ort.InferenceSession, x: np.ndarray[Any, Any], h0: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """One onnxruntime call over a full-length batch: (y [B,T,O], hn [L,B,H])."""
    seq_lens = np.full((x.shape[0],), x.shape[1], dtype=np.int32)
    y, hn = session.run(["y", "hn"], {"x": x, "h0": h0, "seq_lens": seq_lens})
    return y, hn


def serve(app: Any, args: argparse.Namespace) -> None:
    """uvicorn with rnnserve's settings: uvloop, httptools, no access log, warnings only."""
    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
