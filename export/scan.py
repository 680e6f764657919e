"""The scan route: a recurrent cell stepped over time in a Python loop becomes an ONNX Scan.

Tracing the loop would unroll it at the example length, so the module's forward is exported
at one step instead (seq fixed at 1, batch dynamic), each cell's incoming state replaced by a
graph state input and its returned state made an output. That one-step graph is the body of a
Scan over the time axis; state updates are masked by `t < seq_lens`, so every sequence keeps
the state of its own last step. Parity against the module's full-length forward proves the
decomposition (the loop's body is the same at every step and the output does not mix steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from export.errors import UnsupportedModuleError
from export.model_io import Array, GraphIO, Head, LayerInfo, Outputs, Reference, StateTensor
from export.probe import InputKind, Signature, call, eval_mode, first_tensor
from export.refusal import source_of
from export.scan_graph import scan_over_time
from export.tracing import export_graph

_PROBE_BATCH = 2
_PROBE_SEQS = (3, 5)
_CELL_KINDS = {nn.RNNCell: "rnn_cell", nn.LSTMCell: "lstm_cell", nn.GRUCell: "gru_cell"}


@dataclass(frozen=True)
class Cell:
    """A module called once per step whose returned state comes back as its input next step."""

    path: str
    module: nn.Module
    state_arg: int | str  # positional index or keyword of the state in the cell's call
    tuple_size: int  # 0: the state is one tensor; k: a tuple of k tensors
    output_index: int | None  # None: the call returns the state; j: returns (..., state at j)
    widths: tuple[int, ...]

    def suffixes(self) -> tuple[str, ...]:
        """State names of this cell: h (c) for torch cells; h or s0..s{k-1} for custom ones."""
        if isinstance(self.module, nn.LSTMCell):
            return ("h", "c")
        if self.tuple_size == 0:
            return ("h",)
        return tuple(f"s{i}" for i in range(self.tuple_size))

    def layer(self) -> LayerInfo:
        """Its card entry."""
        kind = _CELL_KINDS.get(type(self.module), "custom_cell")
        nonlinearity = getattr(self.module, "nonlinearity", None) if kind == "rnn_cell" else None
        return LayerInfo(
            name=self.path,
            kind=kind,
            input_size=getattr(self.module, "input_size", None),
            hidden_size=getattr(self.module, "hidden_size", self.widths[0]),
            nonlinearity=nonlinearity,
        )

    def pack(self, tensors: list[torch.Tensor]) -> Any:
        """The state in the cell's own structure."""
        return tuple(tensors) if self.tuple_size else tensors[0]

    def unpack(self, output: Any) -> list[torch.Tensor]:
        """The state tensors a call returned."""
        state = output if self.output_index is None else output[self.output_index]
        return list(state) if self.tuple_size else [state]


def _flat_ids(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [id(value)]
    if isinstance(value, tuple | list):
        return [i for item in value for i in _flat_ids(item)]
    return []


@dataclass
class _Record:
    args: list[tuple[tuple[Any, ...], dict[str, Any]]]
    outputs: list[Any]


def _record_calls(
    module: nn.Module, kind: InputKind, signature: Signature, batch_first: bool, seq: int
) -> dict[nn.Module, _Record]:
    records: dict[nn.Module, _Record] = {}

    def before(sub: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        records.setdefault(sub, _Record([], [])).args.append((args, kwargs))

    def after(sub: nn.Module, _: Any, __: Any, output: Any) -> None:
        records[sub].outputs.append(output)

    subs = [m for m in module.modules() if m is not module]
    handles = [m.register_forward_pre_hook(before, with_kwargs=True) for m in subs]
    handles += [m.register_forward_hook(after, with_kwargs=True) for m in subs]
    sample = kind.sample(_PROBE_BATCH, seq)
    try:
        with eval_mode(module):
            call(
                module,
                sample if batch_first else sample.transpose(0, 1),
                _lengths(sample),
                signature,
            )
    finally:
        for handle in handles:
            handle.remove()
    return records


def _lengths(sample: torch.Tensor) -> torch.Tensor:
    return torch.full((sample.shape[0],), sample.shape[1], dtype=torch.int64)


def _as_cell(path: str, sub: nn.Module, record: _Record) -> Cell | None:
    """A Cell when some argument of call 1 is (the state part of) what call 0 returned."""
    args, kwargs = record.args[1]
    returned = record.outputs[0]
    candidates: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    for where, value in candidates:
        ids = _flat_ids(value)
        if not ids:
            continue
        if ids == _flat_ids(returned):
            output_index = None
        elif isinstance(returned, tuple | list):
            matches = [j for j, item in enumerate(returned) if _flat_ids(item) == ids]
            if not matches:
                continue
            output_index = matches[-1]
        else:
            continue
        tensors = list(value) if isinstance(value, tuple | list) else [value]
        return Cell(
            path=path,
            module=sub,
            state_arg=where,
            tuple_size=len(tensors) if isinstance(value, tuple | list) else 0,
            output_index=output_index,
            widths=tuple(int(t.shape[-1]) for t in tensors),
        )
    return None


def find_cells(module: nn.Module, kind: InputKind, signature: Signature) -> tuple[list[Cell], bool]:
    """The cells (called once per step, fed their own state) and whether input is batch-first."""
    paths = {sub: name for name, sub in module.named_modules()}
    for batch_first in (True, False):
        counts = []
        records = {}
        for seq in _PROBE_SEQS:
            try:
                records = _record_calls(module, kind, signature, batch_first, seq)
            except Exception:
                break
            counts.append({sub: len(r.args) for sub, r in records.items()})
        if len(counts) < len(_PROBE_SEQS):
            continue
        stepped = [
            sub
            for sub in records
            if all(c.get(sub) == seq for c, seq in zip(counts, _PROBE_SEQS, strict=True))
        ]
        cells: list[Cell] = []
        for sub in stepped:
            if any(paths[sub].startswith(paths[c.module] + ".") for c in cells):
                continue
            cell = _as_cell(paths[sub], sub, records[sub])
            if cell is not None:
                cells.append(cell)
        if cells:
            return cells, batch_first
    raise UnsupportedModuleError(
        f"found no recurrent layer or cell in {type(module).__name__} ({source_of(module)}): no "
        "nn.RNN/LSTM/GRU layer, and no submodule called once per step with its own state fed "
        "back; supported: layers, or cells stepped over time (forward(x_t, state) -> state)"
    )


def _detect_head(
    module: nn.Module, kind: InputKind, signature: Signature, batch_first: bool
) -> tuple[Head, int]:
    shapes = []
    with eval_mode(module):
        for seq in _PROBE_SEQS:
            sample = kind.sample(_PROBE_BATCH, seq)
            laid_out = sample if batch_first else sample.transpose(0, 1)
            shapes.append(
                tuple(first_tensor(call(module, laid_out, _lengths(sample), signature)).shape)
            )
    seq_axis = 1 if batch_first else 0
    if all(len(s) == 3 and s[seq_axis] == seq for s, seq in zip(shapes, _PROBE_SEQS, strict=True)):
        return Head.PER_STEP, shapes[0][2]
    if all(len(s) == 2 and s[0] == _PROBE_BATCH for s in shapes) and shapes[0] == shapes[1]:
        return Head.LAST_STEP, shapes[0][1]
    raise UnsupportedModuleError(
        f"forward returned shapes {[list(s) for s in shapes]} at lengths {list(_PROBE_SEQS)} "
        f"({source_of(module)}); supported: [batch, seq, out] per step or [batch, out] after "
        "the loop"
    )


@contextmanager
def _injected(
    cells: list[Cell], states: list[torch.Tensor] | None, captured: list[list[torch.Tensor]]
) -> Iterator[None]:
    """Start each cell from `states` (its first call) and keep the state each call returns."""
    offsets = [0]
    for cell in cells:
        offsets.append(offsets[-1] + len(cell.widths))
    handles = []
    for k, cell in enumerate(cells):
        calls = [0]

        def before(
            _: nn.Module,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            cell: Cell = cell,
            k: int = k,
            calls: list[int] = calls,
        ) -> Any:
            calls[0] += 1
            if states is None or calls[0] > 1:
                return None
            given = cell.pack(states[offsets[k] : offsets[k + 1]])
            if isinstance(cell.state_arg, str):
                return args, {**kwargs, cell.state_arg: given}
            padded = list(args) + [None] * (cell.state_arg + 1 - len(args))
            padded[cell.state_arg] = given
            return tuple(padded), kwargs

        def after(_: nn.Module, __: Any, output: Any, cell: Cell = cell, k: int = k) -> None:
            captured[k] = cell.unpack(output)

        handles.append(cell.module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(cell.module.register_forward_hook(after))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _StepSignature(nn.Module):
    """`(inputs [B, 1, ...], seq_lens, *states [1, B, W]) -> (y_t [B, O], *states')`."""

    def __init__(
        self,
        module: nn.Module,
        cells: list[Cell],
        signature: Signature,
        batch_first: bool,
        head: Head,
    ) -> None:
        super().__init__()
        self.module = module
        self.cells = cells
        self.signature = signature
        self.batch_first = batch_first
        self.head = head

    def forward(self, inputs: torch.Tensor, seq_lens: torch.Tensor, *states: torch.Tensor) -> Any:
        captured: list[list[torch.Tensor]] = [[] for _ in self.cells]
        with _injected(self.cells, [s[0] for s in states], captured):
            laid_out = inputs if self.batch_first else inputs.transpose(0, 1)
            out = call(self.module, laid_out, seq_lens.to(torch.int64), self.signature)
        y = first_tensor(out)
        if self.head is Head.PER_STEP:
            y = y[:, 0] if self.batch_first else y[0]
        return (y, *(t.unsqueeze(0) for tensors in captured for t in tensors))


@dataclass(frozen=True)
class ScanPlan:
    """The scan graph's contract, the torch reference it must match, and how to build it."""

    io: GraphIO
    reference: Reference
    build: Callable[[], bytes]


def plan_scan(
    module: nn.Module, *, kind: InputKind, signature: Signature, seq_first: bool | None
) -> ScanPlan:
    """Plan the export of a module that steps recurrent cells over time."""
    cells, batch_first = find_cells(module, kind, signature)
    if seq_first is not None:
        batch_first = not seq_first
    head, output_size = _detect_head(module, kind, signature, batch_first)
    single_torch_cell = len(cells) == 1 and type(cells[0].module) in _CELL_KINDS
    states = tuple(
        StateTensor(suffix if single_torch_cell else f"{c.path}.{suffix}", 1, width)
        for c in cells
        for suffix, width in zip(c.suffixes(), c.widths, strict=True)
    )
    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    io = GraphIO(
        input=kind,
        states=states,
        head=head,
        output_size=output_size,
        layers=tuple(c.layer() for c in cells),
        method="scan",
        embedding_dim=embedding.embedding_dim if kind.tokens and embedding else None,
    )

    def build() -> bytes:
        wrapper = _StepSignature(module, cells, signature, batch_first, head)
        with eval_mode(module):
            step = export_graph(wrapper, module, io, dynamic_seq=False)
        return scan_over_time(step, io)

    return ScanPlan(io, _reference(module, cells, signature, batch_first), build)


def _reference(
    module: nn.Module, cells: list[Cell], signature: Signature, batch_first: bool
) -> Reference:
    def run(inputs: Array, states: tuple[Array, ...] | None) -> Outputs:
        x = torch.from_numpy(inputs)
        given = None if states is None else [torch.from_numpy(s[0]) for s in states]
        captured: list[list[torch.Tensor]] = [[] for _ in cells]
        with eval_mode(module), _injected(cells, given, captured):
            out = call(module, x if batch_first else x.transpose(0, 1), _lengths(x), signature)
        y = first_tensor(out)
        if y.ndim == 3 and not batch_first:
            y = y.transpose(0, 1)
        return Outputs(y.numpy(), tuple(t.unsqueeze(0).numpy() for ts in captured for t in ts))

    return run
