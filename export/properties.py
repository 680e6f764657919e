"""What a graph is, measured by running it in onnxruntime (never read off a template):

- streamable: the steps fed in chunks while carrying every state give what one run gives;
- padding-safe: a sequence inside a padded batch of mixed lengths gives what it gives alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from export.model_io import Array, GraphIO, Head, Outputs
from export.verify import TOLERANCE, run_graph

_STREAM_BATCH = 3
_STREAM_STEPS = 12
_PADDED_LENGTHS = (11, 6, 1, 9)


@dataclass(frozen=True)
class Properties:
    """The card's measured fields."""

    streamable: bool
    not_streamable_reason: str | None
    padding_safe: bool


def measure(session: ort.InferenceSession, io: GraphIO) -> Properties:
    """Measure streamability and padding safety of the graph."""
    rng = np.random.default_rng(7)
    streamed_error, split = _stream_error(session, io, rng)
    reason = None
    bidirectional = [layer.name for layer in io.layers if layer.bidirectional]
    if bidirectional:
        reason = (
            f"its recurrent layer {bidirectional[0]} is bidirectional: every output depends on "
            "steps that have not arrived yet"
        )
    elif not streamed_error <= TOLERANCE:
        reason = (
            f"fed in chunks of {split} steps while carrying every state, its outputs differ from "
            f"one run over the same steps by {streamed_error:.2g}: its answer depends on more "
            "than the carried state, as pooling over time does"
        )
    return Properties(
        streamable=reason is None,
        not_streamable_reason=reason,
        padding_safe=_padding_error(session, io, rng) <= TOLERANCE,
    )


def _splits(rng: np.random.Generator) -> list[list[int]]:
    cuts = sorted(rng.choice(np.arange(1, _STREAM_STEPS), size=3, replace=False).tolist())
    random_split = np.diff([0, *cuts, _STREAM_STEPS]).tolist()
    return [[1, _STREAM_STEPS - 1], [3] * (_STREAM_STEPS // 3), [int(k) for k in random_split]]


def _stream_error(
    session: ort.InferenceSession, io: GraphIO, rng: np.random.Generator
) -> tuple[float, list[int]]:
    """The largest chunked-vs-whole difference over three splits, and the split that gave it."""
    inputs = io.random_inputs(rng, _STREAM_BATCH, _STREAM_STEPS)
    initial = io.random_states(rng, _STREAM_BATCH)
    whole = _run(session, io, inputs, initial)
    worst: tuple[float, list[int]] = (0.0, [])
    for split in _splits(rng):
        states, start, answers = initial, 0, []
        for size in split:
            part = _run(session, io, inputs[:, start : start + size], states)
            states, start = part.states, start + size
            answers.append(part.y)
        if io.head is Head.PER_SEQUENCE:
            error = _max_abs(answers[-1], whole.y)
        else:
            error = _max_abs(np.concatenate(answers, axis=1), whole.y)
        error = max(error, *(_max_abs(a, b) for a, b in zip(states, whole.states, strict=True)))
        worst = max(worst, (error, split))
    return worst


def _padding_error(session: ort.InferenceSession, io: GraphIO, rng: np.random.Generator) -> float:
    """A padded batch of mixed lengths (junk in the padding) vs each sequence alone."""
    lengths = np.asarray(_PADDED_LENGTHS, dtype=np.int32)
    inputs = io.random_inputs(rng, len(lengths), int(lengths.max()))
    initial = io.random_states(rng, len(lengths))
    batched = run_graph(session, io, None, inputs, lengths, initial)
    error = 0.0
    for i, length in enumerate(lengths):
        alone = _run(
            session, io, inputs[i : i + 1, :length], tuple(s[:, i : i + 1] for s in initial)
        )
        if io.head is Head.PER_SEQUENCE:
            error = max(error, _max_abs(batched.y[i], alone.y[0]))
        else:
            error = max(error, _max_abs(batched.y[i, :length], alone.y[0]))
        for got, want in zip(batched.states, alone.states, strict=True):
            error = max(error, _max_abs(got[:, i : i + 1], want))
    return error


def _run(
    session: ort.InferenceSession, io: GraphIO, inputs: Array, states: tuple[Array, ...]
) -> Outputs:
    lengths = np.full(inputs.shape[0], inputs.shape[1], dtype=np.int32)
    return run_graph(session, io, None, inputs, lengths, states)


def _max_abs(a: Array, b: Array) -> float:
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a - b)
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")
