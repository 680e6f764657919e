"""The benchmark model, its reference answers from local onnxruntime, and the request bodies.

nn.RNN 32 -> 128, 2 layers, a per-step head of 8: the common case. It goes through our own
exporter into a temporary repository, like any user's model. Inputs are rounded to 4 decimals
so the JSON a client sends and the float32 array the reference runs on are the same numbers.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import orjson

MODEL_NAME = "bench-rnn"
INPUT_SIZE = 32
HIDDEN_SIZE = 128
NUM_LAYERS = 2
OUTPUT_SIZE = 8
PREDICT_STEPS = 50
MIXED_MAX_STEPS = 300
TOLERANCE = 1e-4

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BenchModel:
    """Where the exported model lives and its shape."""

    repository: Path
    onnx_path: Path
    name: str = MODEL_NAME

    @property
    def state_bytes(self) -> int:
        """Raw float32 bytes of one stream's hidden state: layers * hidden * 4."""
        return NUM_LAYERS * HIDDEN_SIZE * 4


def export_bench_model(repository: Path, *, seed: int = 0) -> BenchModel:
    """Build the seeded module and export it through `export.api.export_module`.

    BENCH_MODEL_REPOSITORY names a repository where it was exported beforehand
    (`bench/gpu.sh --prepare`): it is copied instead, so the bench runs without torch.
    """
    if prepared := os.environ.get("BENCH_MODEL_REPOSITORY"):
        shutil.copytree(prepared, repository, dirs_exist_ok=True)
        return BenchModel(repository, repository / MODEL_NAME / "1" / "model.onnx")
    import torch

    from export.api import export_module
    from export.architectures import RecurrentModel

    torch.manual_seed(seed)
    module = RecurrentModel(
        cell="rnn",
        input_size=INPUT_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=NUM_LAYERS,
        output_size=OUTPUT_SIZE,
        head="per_step",
    ).eval()
    result = export_module(
        module, name=MODEL_NAME, repository=repository, description="benchmark model"
    )
    return BenchModel(repository=repository, onnx_path=result.path / "model.onnx")


class Reference:
    """Local onnxruntime answers every server is checked against."""

    def __init__(self, onnx_path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )

    def run(self, x: Array, h0: Array | None = None) -> tuple[Array, Array]:
        """(y [B,T,O], hn [L,B,H]) for full-length sequences."""
        batch = x.shape[0]
        if h0 is None:
            h0 = np.zeros((NUM_LAYERS, batch, HIDDEN_SIZE), dtype=np.float32)
        seq_lens = np.full((batch,), x.shape[1], dtype=np.int32)
        y, hn = self.session.run(["y", "hn"], {"x": x, "h0": h0, "seq_lens": seq_lens})
        return y, hn


def max_error(answer: Any, expected: Array) -> float:
    """Largest |answer - expected| / max(1, |expected|); inf when the shapes differ."""
    got = np.asarray(answer, dtype=np.float64)
    if got.shape != expected.shape:
        return float("inf")
    scale = np.maximum(1.0, np.abs(expected))
    return float(np.max(np.abs(got - expected) / scale)) if got.size else 0.0


def sequence(rng: np.random.Generator, steps: int) -> Array:
    """One sequence [1, steps, 32] of 4-decimal values."""
    values = np.round(rng.standard_normal((1, steps, INPUT_SIZE)), 4)
    return values.astype(np.float32)


def json_floats(x: Array) -> Any:
    """Nested lists whose JSON text is the 4-decimal numbers (not float32 noise)."""
    return np.round(x.astype(np.float64), 4).tolist()


def v1_predict_body(x: Array) -> bytes:
    """`{"inputs": [[[f]*32]*T], "output": "all"}`."""
    return orjson.dumps({"inputs": json_floats(x), "output": "all"})


def v2_json_body(x: Array, h0_batch_major: Array | None = None) -> bytes:
    """A V2 infer request with JSON tensors, asking for `y` only (and `hn` with a state)."""
    inputs: list[dict[str, Any]] = [
        {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": json_floats(x.ravel())}
    ]
    outputs = [{"name": "y"}]
    if h0_batch_major is not None:
        inputs.append(
            {
                "name": "h0",
                "shape": list(h0_batch_major.shape),
                "datatype": "FP32",
                "data": h0_batch_major.ravel().tolist(),
            }
        )
        outputs.append({"name": "hn"})
    return orjson.dumps({"inputs": inputs, "outputs": outputs})


@dataclass(frozen=True)
class BinaryBody:
    """A V2 request with the binary tensor extension: the body and its extra header."""

    body: bytes
    header_length: int


def v2_binary_body(x: Array) -> BinaryBody:
    """JSON header + raw little-endian float32 `x`; `y` asked back as binary."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    return BinaryBody(header + raw, len(header))


def v2_outputs(body: bytes, header_length: int | None) -> dict[str, Array]:
    """Decode a V2 answer (JSON or binary extension) into named float32 arrays."""
    header = body if header_length is None else body[:header_length]
    offset = 0 if header_length is None else header_length
    decoded: dict[str, Array] = {}
    for output in orjson.loads(header)["outputs"]:
        shape = tuple(output["shape"])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            data = np.frombuffer(body[offset : offset + size], dtype="<f4")
            offset += size
        else:
            data = np.asarray(output["data"], dtype=np.float32)
        decoded[output["name"]] = data.reshape(shape).astype(np.float32)
    return decoded


def step_message(seq: int, step: Array) -> bytes:
    """`{"seq": n, "inputs": [[f]*32]}`: one step of a stream."""
    return orjson.dumps({"seq": seq, "inputs": json_floats(step.reshape(1, INPUT_SIZE))})
