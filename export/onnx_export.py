"""Build the serving ONNX graph straight from a recurrent module's weights (DESIGN.md section 2).

We write the graph with `onnx.helper` rather than torch.onnx.export: the dynamo exporter
unrolls nn.RNN and fixes the seq axis, and the legacy one never wires `sequence_lens`. Each
layer becomes one ONNX RNN/LSTM/GRU node, so `seq_lens` gives exact variable-length batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError, describe
from export.introspect import Cell, RecurrentSpec
from export.recurrent_ops import layer_weights

OPSET = 17
# IR 8 is what opset 17 shipped with; older onnxruntime releases refuse newer IR versions.
IR_VERSION = 8
BATCH = "batch"
SEQ = "seq"

_OP_TYPE = {Cell.RNN: "RNN", Cell.LSTM: "LSTM", Cell.GRU: "GRU"}


@dataclass(frozen=True)
class Affine:
    """One side of a normalisation: mean and std per feature."""

    mean: Sequence[float]
    std: Sequence[float]


@dataclass(frozen=True)
class Normalization:
    """Affine normalisation baked into the graph: x' = (x - mean) / std, y = y' * std + mean.

    The module sees normalised inputs and produces normalised outputs; clients of the graph
    send and receive raw values.
    """

    input_mean: Sequence[float]
    input_std: Sequence[float]
    output_mean: Sequence[float] | None = None
    output_std: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if len(self.input_mean) != len(self.input_std):
            raise ExportError("normalization: input_mean and input_std differ in length")
        if (self.output_mean is None) != (self.output_std is None):
            raise ExportError("normalization: give both output_mean and output_std, or neither")
        if self.output_mean is not None and len(self.output_mean) != len(self.output_std or ()):
            raise ExportError("normalization: output_mean and output_std differ in length")
        stds = [*self.input_std, *(self.output_std or ())]
        if not all(np.isfinite(s) and s > 0 for s in stds):
            raise ExportError("normalization: every std must be finite and > 0")

    def output_affine(self) -> Affine | None:
        """The output de-normalisation, when there is one."""
        if self.output_mean is None or self.output_std is None:
            return None
        return Affine(mean=self.output_mean, std=self.output_std)

    def to_card(self) -> dict[str, list[float] | None]:
        """The card's `normalization` object."""

        def floats(values: Sequence[float] | None) -> list[float] | None:
            return None if values is None else [float(v) for v in values]

        return {
            "input_mean": floats(self.input_mean),
            "input_std": floats(self.input_std),
            "output_mean": floats(self.output_mean),
            "output_std": floats(self.output_std),
        }


class _Graph:
    """Collects nodes and initializers, handing out unique tensor names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> list[str]:
        outputs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attrs))
        return outputs

    def op1(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.op(op_type, inputs, **attrs)[0]


def build_onnx(
    spec: RecurrentSpec, *, normalization: Normalization | None = None
) -> onnx.ModelProto:
    """Build and check the batch-first serving graph for `spec` (see DESIGN.md section 2)."""
    _check_normalization(spec, normalization)
    g = _Graph()
    seq_major = g.op1("Transpose", [_input_features(g, spec, normalization)], perm=[1, 0, 2])
    io = state_io(spec)
    states: list[list[str]] = [[] for _ in io]
    for layer in range(spec.num_layers):
        seq_major, layer_states = _recurrent_layer(g, spec, layer, seq_major)
        for collected, state in zip(states, layer_states, strict=True):
            collected.append(state)
    out = g.op1("Transpose", [seq_major], perm=[1, 0, 2])
    if spec.linear is not None:
        weight = spec.linear.weight.detach().cpu().numpy().T
        out = g.op1("MatMul", [out, g.const("head_weight", weight)])
        if spec.linear.bias is not None:
            out = g.op1("Add", [out, g.const("head_bias", spec.linear.bias.detach().cpu())])
    affine = normalization.output_affine() if normalization is not None else None
    if affine is not None:
        out = g.op1("Mul", [out, g.const("output_std", affine.std)])
        out = g.op1("Add", [out, g.const("output_mean", affine.mean)])
    g.nodes.append(helper.make_node("Identity", [out], ["y"]))
    for (_, name), per_layer in zip(io, states, strict=True):
        g.nodes.append(helper.make_node("Concat", per_layer, [name], axis=0))
    graph = helper.make_graph(
        g.nodes, "rnnserve", _graph_inputs(spec), _graph_outputs(spec), g.initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="rnnserve.export",
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the built ONNX graph failed onnx.checker: {describe(exc)}") from exc
    return model


def _check_normalization(spec: RecurrentSpec, normalization: Normalization | None) -> None:
    if normalization is None:
        return
    if spec.input_size is None:
        raise ExportError("normalization applies to float features; this model takes tokens")
    if len(normalization.input_mean) != spec.input_size:
        raise ExportError(
            f"normalization has {len(normalization.input_mean)} input values for "
            f"input_size {spec.input_size}"
        )
    if normalization.output_mean is not None and len(normalization.output_mean) != spec.output_size:
        raise ExportError(
            f"normalization has {len(normalization.output_mean)} output values for "
            f"output_size {spec.output_size}"
        )


def _input_features(g: _Graph, spec: RecurrentSpec, normalization: Normalization | None) -> str:
    if spec.embedding is not None:
        table = g.const("embedding", spec.embedding.weight.detach().cpu())
        return g.op1("Gather", [table, "tokens"], axis=0)
    if normalization is None:
        return "x"
    centred = g.op1("Sub", ["x", g.const("input_mean", normalization.input_mean)])
    return g.op1("Div", [centred, g.const("input_std", normalization.input_std)])


def _recurrent_layer(
    g: _Graph, spec: RecurrentSpec, layer: int, seq_major: str
) -> tuple[str, list[str]]:
    """One ONNX recurrent node; returns its [seq, batch, dirs*hidden] output and end states."""
    dirs = spec.num_directions
    w, r, b = layer_weights(spec.rnn, layer)
    rows = [
        g.const("starts", [layer * dirs], np.int64),
        g.const("ends", [(layer + 1) * dirs], np.int64),
    ]
    axes = g.const("axes", [0], np.int64)
    initial = [g.op1("Slice", [state, *rows, axes]) for state, _ in state_io(spec)]
    attrs: dict[str, Any] = {
        "hidden_size": spec.hidden_size,
        "direction": "bidirectional" if spec.bidirectional else "forward",
    }
    if spec.cell is Cell.RNN:
        attrs["activations"] = [str(spec.nonlinearity).capitalize()] * dirs
    elif spec.cell is Cell.GRU:
        attrs["linear_before_reset"] = 1
    inputs = [seq_major, g.const("W", w), g.const("R", r), g.const("B", b), "seq_lens", *initial]
    y, *end_states = g.op(_OP_TYPE[spec.cell], inputs, n_out=1 + len(initial), **attrs)
    # Y is [seq, dirs, batch, hidden]; the next layer wants each step's directions side by side.
    steps = g.op1("Transpose", [y], perm=[0, 2, 1, 3])
    flat = g.op1("Reshape", [steps, g.const("shape", [0, 0, dirs * spec.hidden_size], np.int64)])
    return flat, end_states


def state_io(spec: RecurrentSpec) -> tuple[tuple[str, str], ...]:
    """(input, output) names of each state tensor: h0/hn, and c0/cn for LSTM."""
    return (("h0", "hn"), ("c0", "cn")) if spec.cell is Cell.LSTM else (("h0", "hn"),)


def _graph_inputs(spec: RecurrentSpec) -> list[onnx.ValueInfoProto]:
    if spec.input_size is not None:
        first = helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, SEQ, spec.input_size])
    else:
        first = helper.make_tensor_value_info("tokens", TensorProto.INT64, [BATCH, SEQ])
    states = [
        helper.make_tensor_value_info(
            name, TensorProto.FLOAT, [spec.state_rows, BATCH, spec.hidden_size]
        )
        for name, _ in state_io(spec)
    ]
    lengths = helper.make_tensor_value_info("seq_lens", TensorProto.INT32, [BATCH])
    return [first, *states, lengths]


def _graph_outputs(spec: RecurrentSpec) -> list[onnx.ValueInfoProto]:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, SEQ, spec.output_size])
    states = [
        helper.make_tensor_value_info(
            name, TensorProto.FLOAT, [spec.state_rows, BATCH, spec.hidden_size]
        )
        for _, name in state_io(spec)
    ]
    return [y, *states]
