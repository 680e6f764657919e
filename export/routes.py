"""Choose how to export a module, and describe it the way the checks need.

In order: the template (Embedding -> one RNN/LSTM/GRU -> Linear, written from the weights,
deterministic and fast) when it fits and reproduces the module; the traced route for any
other module with nn.RNN/LSTM/GRU layers; the scan route for cells stepped over time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from export.errors import ExportError, UnsupportedModuleError
from export.introspect import RecurrentSpec, introspect
from export.model_io import GraphIO, Head, LayerInfo, Reference, StateTensor
from export.onnx_export import Normalization, build_onnx, state_io
from export.probe import InputKind, Signature, ValueReads, find_input, read_signature
from export.scan import plan_scan
from export.traced import RecurrentCall, plan_traced, recurrent_reference
from export.verify import TOLERANCE, open_session, run_graph

_NO_ARGS = Signature(lengths_arg=None, required_state_arg=None)


@dataclass(frozen=True)
class Route:
    """One way to export a module: its graph's contract, the torch reference, and the graph."""

    io: GraphIO
    reference: Reference
    build: Callable[[], bytes]
    parity_hint: str | None = None  # the likely cause, when parity fails


def template_route(
    module: nn.Module, spec: RecurrentSpec, normalization: Normalization | None
) -> Route:
    """The template graph for a module that introspect accepted."""
    kind = InputKind(
        tokens=spec.takes_tokens,
        size=spec.vocab_size if spec.vocab_size is not None else spec.rnn.input_size,
    )
    names = [name[:-1] for name, _ in state_io(spec)]
    rnn = spec.rnn
    io = GraphIO(
        input=kind,
        states=tuple(StateTensor(n, spec.state_rows, spec.hidden_size) for n in names),
        head=Head(spec.head.value),
        output_size=spec.output_size,
        layers=(
            LayerInfo(
                name=spec.rnn_name if rnn is not module else type(rnn).__name__.lower(),
                kind=spec.cell.value,
                input_size=rnn.input_size,
                hidden_size=spec.hidden_size,
                num_layers=spec.num_layers,
                bidirectional=spec.bidirectional,
                nonlinearity=spec.nonlinearity.value if spec.nonlinearity is not None else None,
            ),
        ),
        method="template",
        embedding_dim=spec.embedding_dim,
    )
    reference = recurrent_reference(
        module, [RecurrentCall(spec.rnn_name, rnn)], _NO_ARGS, spec.batch_first
    )
    # Written once: the fit check and the export read the same bytes.
    model_bytes: bytes = build_onnx(spec, normalization=normalization).SerializeToString()
    return Route(io, reference, lambda: model_bytes)


def _template_fits(route: Route, normalization: Normalization | None) -> bool:
    """A quick look before the full parity grid: does the template reproduce the module, and
    does forward follow no tensor's value (the template would keep one branch silently)?"""
    rng = np.random.default_rng(3)
    inputs = route.io.random_inputs(rng, 2, 5)
    session = open_session(route.build())
    graph = run_graph(session, route.io, normalization, inputs, np.full(2, 5, np.int32), None)
    with ValueReads() as reads:
        ref = route.reference(inputs, None)
    if reads.count:
        return False
    y = graph.y if ref.y.ndim == 3 else graph.y[:, -1]
    return y.shape == ref.y.shape and bool(np.abs(y - ref.y).max() <= TOLERANCE)


def choose_route(
    module: nn.Module,
    *,
    head: str | None,
    normalization: Normalization | None,
    lengths_arg: str | None,
    seq_first: bool | None,
    template: bool = True,
) -> Route:
    """The route for `module` (`template=False` skips the template); raises
    UnsupportedModuleError when none applies."""
    if not isinstance(module, nn.Module):
        raise UnsupportedModuleError(f"expected a torch nn.Module, got {type(module).__name__}")
    signature = read_signature(module, lengths_arg)
    if template and signature == _NO_ARGS and seq_first is None:
        try:
            spec = introspect(module, head=head)
        except UnsupportedModuleError:
            spec = None
        if spec is not None:
            route = template_route(module, spec, normalization)
            if _template_fits(route, normalization):
                return route
    if normalization is not None:
        raise ExportError(
            "normalization is baked only into template graphs (Embedding/RNN/Linear); "
            "normalise inside the module's forward instead"
        )
    kind = find_input(module, signature)
    if any(isinstance(m, nn.RNNBase) for m in module.modules()):
        traced = plan_traced(module, kind=kind, signature=signature, seq_first=seq_first)
        io = _relabel(traced.io, head)
        return Route(io, traced.reference, traced.build, traced.parity_hint)
    scan = plan_scan(module, kind=kind, signature=signature, seq_first=seq_first)
    return Route(_relabel(scan.io, head), scan.reference, scan.build)


def _relabel(io: GraphIO, head: str | None) -> GraphIO:
    """A per-step graph may be declared last_step (a classifier read at the end)."""
    if head is None or head == io.head.value:
        return io
    if head == Head.LAST_STEP.value and io.head is Head.PER_STEP:
        return replace(io, head=Head.LAST_STEP)
    raise ExportError(f"--head {head}: forward's output was measured as {io.head.value}")
