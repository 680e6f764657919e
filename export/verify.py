"""Parity of the ONNX graph against the torch module, and a check that its axes are dynamic.

The reference is the module's own forward on each sequence alone, started from the same
initial states (the route's reference injects them). Errors are measured in the module's own
units: with a baked-in normalisation the graph is fed raw values and its outputs are
normalised back before comparing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from export.errors import ExportError, ParityError, describe
from export.model_io import Array, GraphIO, Head, Outputs, Reference
from export.onnx_export import Normalization

GRID_BATCH_SIZES = (1, 3, 17)
GRID_SEQ_LENS = (1, 7, 64, 300)
TOLERANCE = 1e-4
# Shapes no grid uses, so a graph with a fixed axis cannot pass by accident.
_UNSEEN_SHAPES = ((2, 5), (6, 129))


@dataclass(frozen=True)
class ParityReport:
    """How closely the graph matched the module, and on what grid (the card's `parity`)."""

    max_abs_error: float
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    mixed_lengths: bool
    initial_state: bool

    def to_card(self) -> dict[str, Any]:
        """The card's `parity` object."""
        card = asdict(self)
        card["batch_sizes"] = list(self.batch_sizes)
        card["seq_lens"] = list(self.seq_lens)
        return card


def open_session(model_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime CPU session on the serialized graph, wrapping load failures."""
    options = ort.SessionOptions()
    # Tiny parity models run fastest single-threaded, and tests share few cores.
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime could not load the graph: {describe(exc)}") from exc


def check_parity(
    io: GraphIO,
    reference: Reference,
    session: ort.InferenceSession,
    *,
    normalization: Normalization | None = None,
    padding_safe: bool = True,
    batch_sizes: Sequence[int] = GRID_BATCH_SIZES,
    seq_lens: Sequence[int] = GRID_SEQ_LENS,
    tolerance: float = TOLERANCE,
) -> ParityReport:
    """Compare graph and module on the batch x seq grid, then on sequences of mixed lengths
    with non-zero initial states against each sequence run alone in torch: in one padded
    batch when the graph is padding-safe, else each in a batch of its own length.

    Raises ParityError naming the worst case when the max abs error exceeds `tolerance`.
    """
    rng = np.random.default_rng(0)
    worst = (0.0, "")
    for batch in batch_sizes:
        for seq in seq_lens:
            inputs = io.random_inputs(rng, batch, seq)
            lengths = np.full(batch, seq, dtype=np.int32)
            graph = run_graph(session, io, normalization, inputs, lengths, None)
            ref = _run_reference(reference, inputs, None)
            error = _compare(graph, ref, lengths, range(batch))
            worst = max(worst, (error, f"batch {batch}, seq {seq}"))
    mixed = (*seq_lens[1:], *seq_lens[:1], max(seq_lens) // 2 + 1)
    error = _check_mixed(io, reference, session, normalization, rng, mixed, padding_safe)
    how = "in one padded batch" if padding_safe else "each in its own batch"
    worst = max(worst, (error, f"mixed lengths {list(mixed)} {how}, non-zero initial state"))
    if not worst[0] <= tolerance:
        raise ParityError(
            f"ONNX output differs from torch by {worst[0]:.3g} (max abs) on {worst[1]}; "
            f"tolerance {tolerance:g}"
        )
    return ParityReport(
        max_abs_error=worst[0],
        batch_sizes=tuple(batch_sizes),
        seq_lens=tuple(seq_lens),
        mixed_lengths=True,
        initial_state=True,
    )


def check_dynamic_axes(session: ort.InferenceSession, io: GraphIO) -> None:
    """Run the graph at batch and seq sizes no grid uses; raise ExportError on a fixed axis."""
    rng = np.random.default_rng(1)
    for batch, seq in _UNSEEN_SHAPES:
        inputs = io.random_inputs(rng, batch, seq)
        lengths = np.full(batch, seq, dtype=np.int32)
        out = run_graph(session, io, None, inputs, lengths, None)
        shapes = [out.y.shape, *(s.shape for s in out.states)]
        y_shape = (batch, seq, io.output_size) if io.head is not Head.PER_SEQUENCE else None
        expected = [
            y_shape or (batch, io.output_size),
            *((s.rows, batch, s.width) for s in io.states),
        ]
        if shapes != expected:
            raise ExportError(
                f"the graph is not dynamic: at batch {batch}, seq {seq} it returned shapes "
                f"{shapes}, expected {expected}"
            )


def _check_mixed(
    io: GraphIO,
    reference: Reference,
    session: ort.InferenceSession,
    normalization: Normalization | None,
    rng: np.random.Generator,
    lengths_seq: Sequence[int],
    padding_safe: bool,
) -> float:
    """Mixed lengths vs each sequence alone; padding holds junk on purpose."""
    lengths = np.asarray(lengths_seq, dtype=np.int32)
    batch = len(lengths)
    inputs = io.random_inputs(rng, batch, int(lengths.max()))
    states = io.random_states(rng, batch)
    graph = run_graph(session, io, normalization, inputs, lengths, states) if padding_safe else None
    error = 0.0
    for i, length in enumerate(lengths):
        alone = tuple(s[:, i : i + 1] for s in states)
        row_inputs = inputs[i : i + 1, :length]
        ref = _run_reference(reference, row_inputs, alone)
        if graph is not None:
            row = Outputs(graph.y[i : i + 1], tuple(s[:, i : i + 1] for s in graph.states))
        else:
            own = np.full(1, length, dtype=np.int32)
            row = run_graph(session, io, normalization, row_inputs, own, alone)
        error = max(error, _compare(row, ref, lengths[i : i + 1], range(1)))
    return error


def _compare(graph: Outputs, ref: Outputs, lengths: Array, rows: range) -> float:
    """Max abs error over valid steps only: a head's bias lands on padded steps."""
    error = max(_max_abs(g, r) for g, r in zip(graph.states, ref.states, strict=True))
    for i in rows:
        length = int(lengths[i])
        if ref.y.ndim == 3:
            error = max(error, _max_abs(graph.y[i, :length], ref.y[i, :length]))
        elif graph.y.ndim == 3:
            error = max(error, _max_abs(graph.y[i, length - 1], ref.y[i]))
        else:
            error = max(error, _max_abs(graph.y[i], ref.y[i]))
    return error


def _max_abs(graph: Array, ref: Array) -> float:
    """Max abs difference; NaN or inf anywhere counts as infinitely wrong, not as no error."""
    if graph.shape != ref.shape:
        return float("inf")
    diff = np.abs(graph - ref)
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def _run_reference(
    reference: Reference, inputs: Array, states: tuple[Array, ...] | None
) -> Outputs:
    try:
        return reference(inputs, states)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"the torch module failed during the parity run: {describe(exc)}"
        ) from exc


def run_graph(
    session: ort.InferenceSession,
    io: GraphIO,
    normalization: Normalization | None,
    inputs: Array,
    lengths: Array,
    states: tuple[Array, ...] | None,
) -> Outputs:
    """Run the graph on module-unit inputs; y comes back in module units too."""
    batch = inputs.shape[0]
    if states is None:
        states = io.zero_states(batch)
    feeds: dict[str, Array] = {"seq_lens": lengths}
    if normalization is not None:
        raw = inputs * np.asarray(normalization.input_std) + np.asarray(normalization.input_mean)
        feeds[io.input_name] = raw.astype(np.float32)
    else:
        feeds[io.input_name] = inputs
    feeds.update({spec.input: state for spec, state in zip(io.states, states, strict=True)})
    names = ["y", *(s.output for s in io.states)]
    try:
        y, *end_states = session.run(names, feeds)
    except Exception as exc:
        raise ExportError(f"onnxruntime failed to run the graph: {describe(exc)}") from exc
    affine = normalization.output_affine() if normalization is not None else None
    if affine is not None:
        y = (y - np.asarray(affine.mean)) / np.asarray(affine.std)
    return Outputs(y, tuple(end_states))
