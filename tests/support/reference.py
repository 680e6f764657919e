"""Reference answers: the exported graph run directly in onnxruntime, one sequence at a time."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.core.card import ModelCard


@dataclass(frozen=True)
class Reference:
    """One sequence's outputs and its final state tensors by name, each [rows, width]."""

    y: np.ndarray
    states: dict[str, np.ndarray]

    @property
    def h(self) -> np.ndarray:
        """The state named `h` (single-recurrent models)."""
        return self.states["h"]

    @property
    def c(self) -> np.ndarray | None:
        """The state named `c` (single-LSTM models), else None."""
        return self.states.get("c")


@cache
def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def card_of(version_dir: Path) -> dict[str, Any]:
    """The model card as plain JSON, in format 2 (format 1 cards read as the server reads them)."""
    card: dict[str, Any] = ModelCard.model_validate_json(
        (version_dir / "model.json").read_bytes()
    ).model_dump(mode="json")
    return card


def run_alone(version_dir: Path, sequence: Any, state: dict[str, Any] | None = None) -> Reference:
    """Run one sequence alone (batch 1) from `state` (zeros by default)."""
    card = card_of(version_dir)
    tokens = card.get("vocab_size") is not None
    x = np.asarray(sequence, np.int64 if tokens else np.float32)[None]
    feeds: dict[str, np.ndarray] = {
        "tokens" if tokens else "x": x,
        "seq_lens": np.array([x.shape[1]], np.int32),
    }
    for spec in card["states"]:
        value = state[spec["name"]] if state else np.zeros((spec["rows"], spec["width"]))
        feeds[spec["input"]] = np.asarray(value, np.float32)[:, None]
    names = ["y", *(spec["output"] for spec in card["states"])]
    y, *finals = _session(version_dir / "model.onnx").run(names, feeds)
    states = {spec["name"]: f[:, 0] for spec, f in zip(card["states"], finals, strict=True)}
    return Reference(y[0], states)


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


def random_steps(card: dict[str, Any], length: int, rng: np.random.Generator) -> list[Any]:
    """`length` valid steps for the model as JSON: token ids or feature lists."""
    steps: list[Any] = random_inputs(card, (length,), rng).tolist()
    return steps


def random_state(card: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A non-zero state for one sequence."""
    return {
        spec["name"]: (0.5 * rng.normal(size=(spec["rows"], spec["width"]))).tolist()
        for spec in card["states"]
    }


def random_split(total: int, rng: np.random.Generator, *, max_chunk: int = 5) -> list[int]:
    """Chunk sizes >= 1 adding up to `total`."""
    sizes: list[int] = []
    while total:
        size = int(rng.integers(1, min(max_chunk, total) + 1))
        sizes.append(size)
        total -= size
    return sizes
