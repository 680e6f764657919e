"""What every FastAPI baseline shares: the command line, one onnxruntime session, uvicorn.

The servers differ only in how they parse, batch and answer; everything else (1 intra-op
thread, uvloop + httptools, no access log) is the same as rnnserve's so the comparison is fair.
"""

from __future__ import annotations

import argparse
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
    """One CPU session with one intra-op thread, as rnnserve runs it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
