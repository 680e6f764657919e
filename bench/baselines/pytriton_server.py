"""(d) PyTriton: a real Triton server with dynamic batching serving the same ONNX.

Runs under its own interpreter (nvidia-pytriton pins numpy<2, so it lives in a separate
virtual environment; see bench/README.md). The model speaks V2 only; Triton batches along
dim 0 of every tensor, so the state is exposed batch-major ([batch, layers, hidden]) and a
stream carries it through the client: each step sends `h0` and gets `hn` back.

Run as a script: `python bench/baselines/pytriton_server.py --model PATH --port N --grpc-port M`.
"""

from __future__ import annotations

import argparse
import os
import sysconfig
from pathlib import Path


def _fix_library_path() -> None:
    # Triton's Python-backend stub links libpython dynamically and would otherwise pick up
    # the system's older libpython; the interpreter's own LIBDIR must come first.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def main() -> None:
    """Bind the model and serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--name", default="bench-rnn")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=1000)
    args = parser.parse_args()
    _fix_library_path()

    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    h0_shape = next(i.shape for i in session.get_inputs() if i.name == "h0")
    layers, hidden = int(h0_shape[0]), int(h0_shape[2])
    features = int(next(i.shape for i in session.get_inputs() if i.name == "x")[2])
    outputs = int(next(o.shape for o in session.get_outputs() if o.name == "y")[2])

    @batch
    def infer(x: np.ndarray, h0: np.ndarray | None = None) -> dict[str, np.ndarray]:
        size = x.shape[0]
        if h0 is None:
            state = np.zeros((layers, size, hidden), dtype=np.float32)
        else:
            state = np.ascontiguousarray(h0.transpose(1, 0, 2))
        seq_lens = np.full((size,), x.shape[1], dtype=np.int32)
        y, hn = session.run(["y", "hn"], {"x": x, "h0": state, "seq_lens": seq_lens})
        return {"y": y, "hn": np.ascontiguousarray(hn.transpose(1, 0, 2))}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        allow_metrics=False,
        log_verbose=0,
        exit_on_error=True,
    )
    # no restricted endpoints: perf_analyzer reads the statistics route, token-protected by default
    with Triton(
        config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])
    ) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[
                Tensor(name="x", dtype=np.float32, shape=(-1, features)),
                Tensor(name="h0", dtype=np.float32, shape=(layers, hidden), optional=True),
            ],
            outputs=[
                Tensor(name="y", dtype=np.float32, shape=(-1, outputs)),
                Tensor(name="hn", dtype=np.float32, shape=(layers, hidden)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
