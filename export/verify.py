"""Parity of the ONNX graph against the torch module, and a check that its axes are dynamic.

Errors are measured in the module's own units: with a baked-in normalisation the graph is fed
raw values and its outputs are normalised back before comparing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch

from export.errors import ExportError, ParityError, describe
from export.introspect import Cell, RecurrentSpec, eval_mode
from export.onnx_export import Normalization, state_io

GRID_BATCH_SIZES = (1, 3, 17)
GRID_SEQ_LENS = (1, 7, 64, 300)
TOLERANCE = 1e-4
# Shapes no grid uses, so a graph with a fixed axis cannot pass by accident.
_UNSEEN_SHAPES = ((2, 5), (6, 129))

Array = npt.NDArray[Any]


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


@dataclass(frozen=True)
class _Outputs:
    """y batch-first ([batch, seq, out], or [batch, out] for last-step modules) and end states."""

    y: Array
    states: tuple[Array, ...]


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
    module: torch.nn.Module,
    spec: RecurrentSpec,
    session: ort.InferenceSession,
    *,
    normalization: Normalization | None = None,
    batch_sizes: Sequence[int] = GRID_BATCH_SIZES,
    seq_lens: Sequence[int] = GRID_SEQ_LENS,
    tolerance: float = TOLERANCE,
) -> ParityReport:
    """Compare graph and module on the batch x seq grid, then on one batch of mixed lengths
    with a non-zero initial state against each sequence run alone in torch.

    Raises ParityError naming the worst figure when the max abs error exceeds `tolerance`.
    """
    rng = np.random.default_rng(0)
    worst = (0.0, "")
    with eval_mode(module):
        for batch in batch_sizes:
            for seq in seq_lens:
                inputs = _random_inputs(spec, rng, batch, seq)
                lengths = np.full(batch, seq, dtype=np.int32)
                graph = _run_graph(session, spec, normalization, inputs, lengths, None)
                ref = _run_torch(module, spec, inputs, None)
                error = _compare(graph, ref, lengths, range(batch))
                worst = max(worst, (error, f"batch {batch}, seq {seq}"))
        mixed = (*seq_lens[1:], *seq_lens[:1], max(seq_lens) // 2 + 1)
        error = _check_mixed(module, spec, session, normalization, rng, mixed)
        worst = max(worst, (error, f"mixed lengths {list(mixed)} with non-zero initial state"))
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


def check_dynamic_axes(session: ort.InferenceSession, spec: RecurrentSpec) -> None:
    """Run the graph at batch and seq sizes no grid uses; raise ExportError on a fixed axis."""
    rng = np.random.default_rng(1)
    for batch, seq in _UNSEEN_SHAPES:
        inputs = _random_inputs(spec, rng, batch, seq)
        lengths = np.full(batch, seq, dtype=np.int32)
        out = _run_graph(session, spec, None, inputs, lengths, None)
        shapes = [out.y.shape, *(s.shape for s in out.states)]
        state_shape = (spec.state_rows, batch, spec.hidden_size)
        expected = [(batch, seq, spec.output_size), *(state_shape for _ in out.states)]
        if shapes != expected:
            raise ExportError(
                f"the graph is not dynamic: at batch {batch}, seq {seq} it returned shapes "
                f"{shapes}, expected {expected}"
            )


def _check_mixed(
    module: torch.nn.Module,
    spec: RecurrentSpec,
    session: ort.InferenceSession,
    normalization: Normalization | None,
    rng: np.random.Generator,
    lengths_seq: Sequence[int],
) -> float:
    """One padded batch of mixed lengths vs each sequence alone; padding holds junk on purpose."""
    lengths = np.asarray(lengths_seq, dtype=np.int32)
    batch = len(lengths)
    inputs = _random_inputs(spec, rng, batch, int(lengths.max()))
    states = tuple(
        rng.normal(0.0, 0.5, (spec.state_rows, batch, spec.hidden_size)).astype(np.float32)
        for _ in state_io(spec)
    )
    graph = _run_graph(session, spec, normalization, inputs, lengths, states)
    error = 0.0
    for i, length in enumerate(lengths):
        alone = tuple(s[:, i : i + 1] for s in states)
        ref = _run_torch(module, spec, inputs[i : i + 1, :length], alone)
        row = _Outputs(graph.y[i : i + 1], tuple(s[:, i : i + 1] for s in graph.states))
        error = max(error, _compare(row, ref, lengths[i : i + 1], range(1)))
    return error


def _compare(graph: _Outputs, ref: _Outputs, lengths: Array, rows: range) -> float:
    """Max abs error over valid steps only: the head's bias lands on padded steps."""
    error = max(_max_abs(g, r) for g, r in zip(graph.states, ref.states, strict=True))
    for i in rows:
        length = int(lengths[i])
        if ref.y.ndim == 3:
            error = max(error, _max_abs(graph.y[i, :length], ref.y[i, :length]))
        else:
            error = max(error, _max_abs(graph.y[i, length - 1], ref.y[i]))
    return error


def _max_abs(graph: Array, ref: Array) -> float:
    """Max abs difference; NaN or inf anywhere counts as infinitely wrong, not as no error."""
    diff = np.abs(graph - ref)
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def _random_inputs(spec: RecurrentSpec, rng: np.random.Generator, batch: int, seq: int) -> Array:
    """Batch-first inputs in the module's units: token ids, or standard-normal features."""
    if spec.vocab_size is not None:
        return rng.integers(0, spec.vocab_size, (batch, seq), dtype=np.int64)
    return rng.standard_normal((batch, seq, spec.rnn.input_size)).astype(np.float32)


def _run_graph(
    session: ort.InferenceSession,
    spec: RecurrentSpec,
    normalization: Normalization | None,
    inputs: Array,
    lengths: Array,
    states: tuple[Array, ...] | None,
) -> _Outputs:
    batch = inputs.shape[0]
    if states is None:
        zeros = np.zeros((spec.state_rows, batch, spec.hidden_size), dtype=np.float32)
        states = tuple(zeros for _ in state_io(spec))
    feeds: dict[str, Array] = {"seq_lens": lengths}
    if spec.takes_tokens:
        feeds["tokens"] = inputs
    elif normalization is not None:
        raw = inputs * np.asarray(normalization.input_std) + np.asarray(normalization.input_mean)
        feeds["x"] = raw.astype(np.float32)
    else:
        feeds["x"] = inputs
    feeds.update({name: state for (name, _), state in zip(state_io(spec), states, strict=True)})
    names = ["y", *(out for _, out in state_io(spec))]
    try:
        y, *end_states = session.run(names, feeds)
    except Exception as exc:
        raise ExportError(f"onnxruntime failed to run the graph: {describe(exc)}") from exc
    affine = normalization.output_affine() if normalization is not None else None
    if affine is not None:
        y = (y - np.asarray(affine.mean)) / np.asarray(affine.std)
    return _Outputs(y, tuple(end_states))


def _run_torch(
    module: torch.nn.Module,
    spec: RecurrentSpec,
    inputs: Array,
    states: tuple[Array, ...] | None,
) -> _Outputs:
    """Call the module as its user would; hooks on the recurrent layer set h0 and catch h_n,
    since a module's forward need neither take nor return the state."""
    device = next(spec.rnn.parameters()).device
    x = torch.from_numpy(inputs).to(device)
    if not spec.batch_first:
        x = x.transpose(0, 1)
    captured: list[Any] = []

    def set_state(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if states is None:
            return None
        tensors = tuple(torch.from_numpy(s).to(device) for s in states)
        hx = tensors if spec.cell is Cell.LSTM else tensors[0]
        return (args[0], hx), {k: v for k, v in kwargs.items() if k != "hx"}

    def catch_state(_: Any, __: Any, output: Any) -> None:
        captured.append(output[1])

    handles = [
        spec.rnn.register_forward_pre_hook(set_state, with_kwargs=True),
        spec.rnn.register_forward_hook(catch_state),
    ]
    try:
        out = module(x)
    except Exception as exc:
        raise ExportError(
            f"the torch module failed during the parity run: {describe(exc)}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    y = out[0] if isinstance(out, tuple | list) else out
    if y.ndim == 3 and not spec.batch_first:
        y = y.transpose(0, 1)
    end = captured[-1]
    end_states = tuple(end) if spec.cell is Cell.LSTM else (end,)
    return _Outputs(y.cpu().numpy(), tuple(s.cpu().numpy() for s in end_states))
