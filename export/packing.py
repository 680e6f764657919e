"""pack_padded_sequence / pad_packed_sequence stand-ins used while a module is traced.

A real PackedSequence sorts and interleaves the batch by length, which torch.export cannot
keep dynamic. During export the padded tensor and its lengths travel together instead; the
recurrent custom ops take the lengths as ONNX `sequence_lens`, which gives exactly what packing
gives: each sequence stops at its own length, and steps past it come back as padding.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.utils.rnn as rnn_utils
from torch import nn

_ORIGINAL = {
    "pack_padded_sequence": rnn_utils.pack_padded_sequence,
    "pad_packed_sequence": rnn_utils.pad_packed_sequence,
}


@dataclass(frozen=True)
class PaddedSequence:
    """What a patched pack_padded_sequence returns: seq-major data [T, B, *] and lengths."""

    data: torch.Tensor
    lengths: torch.Tensor


def _pack(
    input: torch.Tensor,
    lengths: torch.Tensor | list[int],
    batch_first: bool = False,
    enforce_sorted: bool = True,
) -> PaddedSequence:
    data = input.transpose(0, 1) if batch_first else input
    return PaddedSequence(data=data, lengths=torch.as_tensor(lengths, dtype=torch.int64))


def _pad(
    sequence: PaddedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    data = sequence.data
    if padding_value != 0.0:
        steps = torch.arange(data.shape[0], device=data.device)[:, None]
        valid = (steps < sequence.lengths.to(data.device)[None, :]).reshape(
            *data.shape[:2], *([1] * (data.ndim - 2))
        )
        data = torch.where(valid, data, torch.full_like(data, padding_value))
    if total_length is not None and total_length > data.shape[0]:
        pad = [0, 0] * (data.ndim - 1) + [0, total_length - data.shape[0]]
        data = F.pad(data, pad, value=padding_value)
    return (data.transpose(0, 1) if batch_first else data), sequence.lengths


_REPLACEMENTS = {"pack_padded_sequence": _pack, "pad_packed_sequence": _pad}


@contextmanager
def padded_packing(module: nn.Module) -> Iterator[None]:
    """Swap in the stand-ins in torch.nn.utils.rnn and in every namespace of the module's
    classes that imported the names, then put the originals back."""
    namespaces: list[dict[str, Any]] = [vars(rnn_utils)]
    for sub in module.modules():
        owner = sys.modules.get(type(sub).__module__)
        if owner is not None and vars(owner) not in namespaces:
            namespaces.append(vars(owner))
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    for namespace in namespaces:
        for name, value in list(namespace.items()):
            for key, original in _ORIGINAL.items():
                if value is original:
                    swapped.append((namespace, name, value))
                    namespace[name] = _REPLACEMENTS[key]
    try:
        yield
    finally:
        for namespace, name, value in swapped:
            namespace[name] = value
