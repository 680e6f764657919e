"""The scan route: a recurrent cell stepped over time in a Python loop becomes an ONNX Scan.

Tracing the loop would unroll it at the example length, so the module's forward is exported
at one step instead (seq fixed at 1, batch dynamic), each cell's incoming state replaced by a
graph state input and its returned state made an output. That one-step graph is the body of a
Scan over the time axis; state updates are masked by `t < seq_lens`, so every sequence keeps
the state of its own last step. Parity against the module's full-length forward proves the
decomposition (the loop's body is the same at every step and the output does not mix steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from export.cells import (
    CELL_KINDS,
    PROBE_BATCH,
    PROBE_SEQS,
    Cell,
    find_cells,
    injected,
    lengths_of,
)
from export.errors import UnsupportedModuleError
from export.model_io import Array, GraphIO, Head, Outputs, Reference, StateTensor
from export.probe import InputKind, Signature, call, eval_mode, first_tensor
from export.refusal import source_of
from export.scan_graph import scan_over_time
from export.tracing import export_graph


def _detect_head(
    module: nn.Module, kind: InputKind, signature: Signature, batch_first: bool
) -> tuple[Head, int]:
    shapes = []
    with eval_mode(module):
        for seq in PROBE_SEQS:
            sample = kind.sample(PROBE_BATCH, seq)
            laid_out = sample if batch_first else sample.transpose(0, 1)
            shapes.append(
                tuple(first_tensor(call(module, laid_out, lengths_of(sample), signature)).shape)
            )
    seq_axis = 1 if batch_first else 0
    if all(len(s) == 3 and s[seq_axis] == seq for s, seq in zip(shapes, PROBE_SEQS, strict=True)):
        return Head.PER_STEP, shapes[0][2]
    if all(len(s) == 2 and s[0] == PROBE_BATCH for s in shapes) and shapes[0] == shapes[1]:
        return Head.LAST_STEP, shapes[0][1]
    raise UnsupportedModuleError(
        f"forward returned shapes {[list(s) for s in shapes]} at lengths {list(PROBE_SEQS)} "
        f"({source_of(module)}); supported: [batch, seq, out] per step or [batch, out] after "
        "the loop"
    )


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
        with injected(self.cells, [s[0] for s in states], captured):
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
    single_torch_cell = len(cells) == 1 and type(cells[0].module) in CELL_KINDS
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
        with eval_mode(module), injected(cells, given, captured):
            out = call(module, x if batch_first else x.transpose(0, 1), lengths_of(x), signature)
        y = first_tensor(out)
        if y.ndim == 3 and not batch_first:
            y = y.transpose(0, 1)
        return Outputs(y.numpy(), tuple(t.unsqueeze(0).numpy() for ts in captured for t in ts))

    return run
