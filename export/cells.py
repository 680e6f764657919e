"""Find recurrent cells stepped over time by calling forward, and start them from a given state.

A cell is a submodule called once per step (its call count follows the sequence length at two
lengths) whose next call receives what it returned, or the state part of it: `forward(x_t,
state) -> state` or `-> (y_t, state)`, the state a tensor or a tuple of tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from export.errors import UnsupportedModuleError
from export.model_io import LayerInfo
from export.probe import InputKind, Signature, call, eval_mode
from export.refusal import source_of

# Probe lengths: two, so a call count that follows the length can be told from a constant.
PROBE_BATCH = 2
PROBE_SEQS = (3, 5)
CELL_KINDS = {nn.RNNCell: "rnn_cell", nn.LSTMCell: "lstm_cell", nn.GRUCell: "gru_cell"}


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
        kind = CELL_KINDS.get(type(self.module), "custom_cell")
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
    sample = kind.sample(PROBE_BATCH, seq)
    try:
        with eval_mode(module):
            call(
                module,
                sample if batch_first else sample.transpose(0, 1),
                lengths_of(sample),
                signature,
            )
    finally:
        for handle in handles:
            handle.remove()
    return records


def lengths_of(sample: torch.Tensor) -> torch.Tensor:
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
        for seq in PROBE_SEQS:
            try:
                records = _record_calls(module, kind, signature, batch_first, seq)
            except Exception:
                break
            counts.append({sub: len(r.args) for sub, r in records.items()})
        if len(counts) < len(PROBE_SEQS):
            continue
        stepped = [
            sub
            for sub in records
            if all(c.get(sub) == seq for c, seq in zip(counts, PROBE_SEQS, strict=True))
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


@contextmanager
def injected(
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
