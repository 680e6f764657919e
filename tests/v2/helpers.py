"""Building V2 requests by hand: JSON tensors, binary bodies, random model inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from tests.reference import random_inputs

DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}


def random_batch(
    card: dict[str, Any], batch: int, steps: int, rng: np.random.Generator
) -> np.ndarray:
    """`x` [batch, steps, features] float32, or `tokens` [batch, steps] int64."""
    return random_inputs(card, (batch, steps), rng)


def random_states(
    card: dict[str, Any], batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """`h0` (and `c0`) [layers*dirs, batch, hidden]."""
    return {
        s["input"]: rng.normal(size=(s["rows"], batch, s["width"])).astype(np.float32)
        for s in card["states"]
    }


def input_name(card: dict[str, Any]) -> str:
    """`tokens` or `x`."""
    return "tokens" if card.get("vocab_size") else "x"


def json_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """A V2 JSON input tensor with flat row-major data."""
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": DATATYPES[array.dtype],
        "data": array.ravel().tolist(),
    }


def binary_body(
    tensors: dict[str, np.ndarray], *, size_offsets: dict[str, int] | None = None, **header: Any
) -> tuple[bytes, int]:
    """A hand-built binary request: JSON header, then each tensor's little-endian bytes.

    `size_offsets` adds to a tensor's declared binary_data_size without changing its bytes.
    """
    offsets = size_offsets or {}
    inputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": DATATYPES[array.dtype],
            "parameters": {"binary_data_size": array.nbytes + offsets.get(name, 0)},
        }
        for name, array in tensors.items()
    ]
    head = orjson.dumps({**header, "inputs": inputs})
    raw = b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in tensors.values())
    return head + raw, len(head)


def split_binary_response(body: bytes, header_length: int) -> dict[str, np.ndarray]:
    """Outputs of a binary response, decoded by hand from the framing."""
    header = orjson.loads(body[:header_length])
    arrays: dict[str, np.ndarray] = {}
    offset = header_length
    for out in header["outputs"]:
        size = out["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[out["datatype"]]
        arrays[out["name"]] = np.frombuffer(body[offset : offset + size], dtype).reshape(
            out["shape"]
        )
        offset += size
    assert offset == len(body)
    return arrays
