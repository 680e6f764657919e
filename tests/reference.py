"""Reference answers: the exported graph run directly in onnxruntime, one sequence at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class Reference:
    """One sequence's per-step outputs and final state."""

    y: np.ndarray
    h: np.ndarray
    c: np.ndarray | None


@cache
def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def card_of(version_dir: Path) -> dict[str, Any]:
    """The model card as plain JSON."""
    card: dict[str, Any] = json.loads((version_dir / "model.json").read_text())
    return card


def run_alone(version_dir: Path, sequence: Any, state: dict[str, Any] | None = None) -> Reference:
    """Run one sequence alone (batch 1) from `state` (zeros by default)."""
    card = card_of(version_dir)
    tokens = card.get("vocab_size") is not None
    x = np.asarray(sequence, np.int64 if tokens else np.float32)[None]
    feeds = {"tokens" if tokens else "x": x, "seq_lens": np.array([x.shape[1]], np.int32)}
    for spec in card["states"]:  # card format 2: h (and c) for these one-layer models
        zeros = np.zeros((spec["rows"], 1, spec["width"]), np.float32)
        given = np.asarray(state[spec["name"]], np.float32)[:, None] if state else zeros
        feeds[spec["input"]] = given
    names = ["y", *(spec["output"] for spec in card["states"])]
    out = _session(version_dir / "model.onnx").run(names, feeds)
    return Reference(out[0][0], out[1][:, 0], out[2][:, 0] if len(out) > 2 else None)


def assert_close(actual: Any, expected: np.ndarray) -> None:
    """Equal up to float32 summation order: |a - b| <= 1e-5 * max(1, |b|)."""
    got = np.asarray(actual, np.float32)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tolerance = 1e-5 * np.maximum(1.0, np.abs(expected))
    assert np.all(np.abs(got - expected) <= tolerance), float(np.max(np.abs(got - expected)))


def random_inputs(
    card: dict[str, Any], shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Valid inputs of leading shape `shape` ((steps,) or (batch, steps)): int64 token ids, or
    float32 features [..., input_size].

    Features are drawn around the card's input normalisation when it has one, so demo models
    see values like their real data: far outside it (0 ppm for the CO2 model) the baked-in
    de-normalisation magnifies float32 rounding past the relative tolerance.
    """
    if card.get("vocab_size"):
        return rng.integers(0, card["vocab_size"], shape).astype(np.int64)
    features = rng.normal(size=(*shape, card["input_size"]))
    if norm := card.get("normalization"):
        features = np.asarray(norm["input_mean"]) + features * np.asarray(norm["input_std"])
    return features.astype(np.float32)
