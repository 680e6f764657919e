"""The traced route: the module's own forward through torch.onnx.export (dynamo), recurrent
layers swapped for custom ops that become ONNX RNN/LSTM/GRU nodes with `sequence_lens` wired.

A wrapper gives the graph the contract's signature `(x|tokens, seq_lens, *states) -> (y,
*states_out)`, batch-first. The k-th recurrent call in forward order takes graph state k
(whatever h0 the module passed) and its end state becomes graph output k, so every state is
carried when streaming, and the graph's `seq_lens` reach every recurrent call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from export.errors import UnsupportedModuleError
from export.model_io import Array, GraphIO, Head, LayerInfo, Outputs, Reference, state_tensors
from export.probe import InputKind, Signature, call, eval_mode, first_tensor
from export.recurrent_ops import onnx_family
from export.refusal import calling_line
from export.swap import Slots, swapped
from export.tracing import export_graph

_KIND = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
# Probe lengths: distinct from each other and from the probe batch, so axes can be told apart.
_PROBE_BATCH = 2
_PROBE_SEQS = (5, 8)


@dataclass(frozen=True)
class RecurrentCall:
    """One call of an nn.RNN/LSTM/GRU during forward, in order."""

    path: str
    rnn: nn.RNNBase
    own_state_at: str | None = None  # file:line where forward passed a non-zero initial state

    @property
    def rows(self) -> int:
        """Leading axis of its states: layers x directions."""
        return self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)

    @property
    def state_suffixes(self) -> tuple[str, ...]:
        """`h`, and `c` for an LSTM."""
        return ("h", "c") if isinstance(self.rnn, nn.LSTM) else ("h",)

    def layer(self) -> LayerInfo:
        """Its card entry."""
        family = onnx_family(self.rnn)
        return LayerInfo(
            name=self.path,
            kind=_KIND[family],
            input_size=self.rnn.input_size,
            hidden_size=self.rnn.hidden_size,
            num_layers=self.rnn.num_layers,
            bidirectional=self.rnn.bidirectional,
            nonlinearity=str(self.rnn.nonlinearity) if family == "RNN" else None,
        )


def _check_layer(path: str, rnn: nn.RNNBase) -> None:
    if getattr(rnn, "proj_size", 0):
        raise UnsupportedModuleError(
            f"{path} is an LSTM with proj_size={rnn.proj_size}, which ONNX LSTM has no form for"
        )
    if any(p.dtype != torch.float32 for p in rnn.parameters()):
        raise UnsupportedModuleError(f"{path} has non-float32 parameters; call module.float()")


def find_calls(
    module: nn.Module, kind: InputKind, signature: Signature, batch_first: bool
) -> list[RecurrentCall]:
    """The recurrent layers in the order forward calls them (a module called twice counts twice)."""
    paths = {sub: name or "the module itself" for name, sub in module.named_modules()}
    calls: list[RecurrentCall] = []

    def record(rnn: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert isinstance(rnn, nn.RNNBase)
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        given = [hx] if isinstance(hx, torch.Tensor) else list(hx or ())
        own = any(isinstance(t, torch.Tensor) and bool(t.abs().max() > 0) for t in given)
        calls.append(RecurrentCall(paths[rnn], rnn, calling_line(module) if own else None))

    handles = [
        sub.register_forward_pre_hook(record, with_kwargs=True)
        for sub in module.modules()
        if isinstance(sub, nn.RNNBase)
    ]
    try:
        sample = kind.sample(_PROBE_BATCH, _PROBE_SEQS[0])
        with eval_mode(module):
            call(module, _layout(sample, batch_first), _full_lengths(sample), signature)
    finally:
        for handle in handles:
            handle.remove()
    for item in calls:
        _check_layer(item.path, item.rnn)
    counts: dict[str, int] = {}
    named = []
    for item in calls:
        counts[item.path] = counts.get(item.path, 0) + 1
        path = item.path if counts[item.path] == 1 else f"{item.path}.call{counts[item.path]}"
        named.append(RecurrentCall(path, item.rnn, item.own_state_at))
    return named


def _layout(batch_first_tensor: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return batch_first_tensor if batch_first else batch_first_tensor.transpose(0, 1)


def _full_lengths(sample: torch.Tensor) -> torch.Tensor:
    return torch.full((sample.shape[0],), sample.shape[1], dtype=torch.int64)


def detect_head(
    module: nn.Module, kind: InputKind, signature: Signature, batch_first: bool
) -> tuple[Head, int]:
    """per_step when the answer has a seq axis at two lengths, per_sequence when it has none."""
    shapes = []
    with eval_mode(module):
        for seq in _PROBE_SEQS:
            sample = kind.sample(_PROBE_BATCH, seq)
            out = call(module, _layout(sample, batch_first), _full_lengths(sample), signature)
            shapes.append(tuple(first_tensor(out).shape))
    seq_axis = 1 if batch_first else 0
    batch_axis = 1 - seq_axis
    if all(len(s) == 3 for s in shapes) and all(
        s[seq_axis] == seq and s[batch_axis] == _PROBE_BATCH
        for s, seq in zip(shapes, _PROBE_SEQS, strict=True)
    ):
        return Head.PER_STEP, shapes[0][2]
    if all(len(s) == 2 and s[0] == _PROBE_BATCH for s in shapes) and shapes[0] == shapes[1]:
        return Head.PER_SEQUENCE, shapes[0][1]
    raise UnsupportedModuleError(
        f"forward returned shapes {[list(s) for s in shapes]} for batch {_PROBE_BATCH} at "
        f"lengths {list(_PROBE_SEQS)}; supported: [batch, seq, out] per step or [batch, out] "
        "per sequence (seq first when the layout is seq-first)"
    )


class _GraphSignature(nn.Module):
    def __init__(
        self,
        module: nn.Module,
        slots: Slots,
        signature: Signature,
        batch_first: bool,
        head: Head,
    ) -> None:
        super().__init__()
        self.module = module
        self.slots = slots
        self.signature = signature
        self.batch_first = batch_first
        self.head = head

    def forward(self, inputs: torch.Tensor, seq_lens: torch.Tensor, *states: torch.Tensor) -> Any:
        self.slots.begin(seq_lens, states)
        lengths = seq_lens.to(torch.int64)
        out = call(self.module, _layout(inputs, self.batch_first), lengths, self.signature)
        y = first_tensor(out)
        if self.head is not Head.PER_SEQUENCE and not self.batch_first:
            y = y.transpose(0, 1)
        return (y, *self.slots.outputs)


@dataclass(frozen=True)
class TracedPlan:
    """The traced graph's contract, the torch reference it must match, and how to build it."""

    io: GraphIO
    reference: Reference
    build: Callable[[], bytes]
    parity_hint: str | None


def plan_traced(
    module: nn.Module, *, kind: InputKind, signature: Signature, seq_first: bool | None
) -> TracedPlan:
    """Plan the export of `module` by tracing its forward with the recurrent layers swapped."""
    recurrent = [m for m in module.modules() if isinstance(m, nn.RNNBase)]
    batch_first = (not seq_first) if seq_first is not None else recurrent[0].batch_first
    calls = find_calls(module, kind, signature, batch_first)
    head, output_size = detect_head(module, kind, signature, batch_first)
    states = state_tensors(
        [(c.path, [(s, c.rows, c.rnn.hidden_size) for s in c.state_suffixes]) for c in calls]
    )
    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    io = GraphIO(
        input=kind,
        states=states,
        head=head,
        output_size=output_size,
        layers=tuple(c.layer() for c in calls),
        method="traced",
        embedding_dim=embedding.embedding_dim if kind.tokens and embedding else None,
    )

    def build() -> bytes:
        slots = Slots()
        wrapper = _GraphSignature(module, slots, signature, batch_first, head)
        with eval_mode(module), swapped(module, [c.rnn for c in calls], slots):
            return export_graph(wrapper, module, io, dynamic_seq=True)

    own = [c for c in calls if c.own_state_at is not None]
    hint = None
    if own:
        hint = (
            f"forward starts {own[0].path} from a non-zero state of its own at "
            f"{own[0].own_state_at}, and the graph takes every initial state as an input: send "
            "that state as the initial state, or start the layer from zeros"
        )
    reference = recurrent_reference(module, calls, signature, batch_first)
    return TracedPlan(io, reference, build, hint)


def recurrent_reference(
    module: nn.Module, calls: list[RecurrentCall], signature: Signature, batch_first: bool
) -> Reference:
    """The module's own forward, each recurrent call started from the given state."""

    def run(inputs: Array, states: tuple[Array, ...] | None) -> Outputs:
        x = torch.from_numpy(inputs)
        order: list[int] = []
        ends: list[Any] = []
        per_call = [len(c.state_suffixes) for c in calls]
        starts = np.cumsum([0, *per_call])

        def set_state(rnn: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            k = len(order)
            order.append(k)
            if states is None:
                return None
            given = [torch.from_numpy(s) for s in states[starts[k] : starts[k + 1]]]
            hx = tuple(given) if len(given) == 2 else given[0]
            return (args[0], hx), {}

        def catch(_: nn.Module, __: Any, output: Any) -> None:
            end = output[1]
            ends.append(tuple(end) if isinstance(end, tuple) else (end,))

        layers = {id(c.rnn): c.rnn for c in calls}.values()
        handles = [r.register_forward_pre_hook(set_state, with_kwargs=True) for r in layers]
        handles += [r.register_forward_hook(catch) for r in layers]
        try:
            with eval_mode(module):
                out = call(module, _layout(x, batch_first), _full_lengths(x), signature)
        finally:
            for handle in handles:
                handle.remove()
        y = first_tensor(out)
        if y.ndim == 3 and not batch_first:
            y = y.transpose(0, 1)
        flat = tuple(s.numpy() for end in ends for s in end)
        return Outputs(y.numpy(), flat)

    return run
