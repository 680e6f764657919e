"""Recurrent state as the domain carries it: one float32 array per state tensor of the card.

A model's card lists its state tensors (`card.states`: `h`, `c`, or several layers' states of
different widths); a `RecurrentState` holds one `[rows, batch, width]` array per entry, in that
order, for a whole batch or (batch 1) for one sequence. Sessions, V2 sequences and predict all
carry this one type; JSON and V2 tensors are converted at the edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.core.card import StateSpec

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
SequenceArray = FloatArray | IntArray


@dataclass(frozen=True, slots=True)
class RecurrentState:
    """One `[rows, batch, width]` float32 array per state tensor, in the card's order."""

    arrays: tuple[FloatArray, ...]

    @staticmethod
    def zeros(specs: Sequence[StateSpec], batch_size: int) -> RecurrentState:
        """The all-zero state PyTorch starts from when no initial state is given."""
        return RecurrentState(
            tuple(np.zeros((s.rows, batch_size, s.width), np.float32) for s in specs)
        )

    def owned_rows(self) -> list[FrozenState]:
        """One state per sequence of the batch, each compact, read-only and owning its memory
        (as `frozen` makes them), split in one pass over each tensor."""
        per_tensor = []
        for array in self.arrays:
            rows, batch, width = array.shape
            by_row = np.ascontiguousarray(array.transpose(1, 0, 2), dtype=np.float32)
            per_tensor.append(by_row.reshape(batch, rows, 1, width))
        return [
            FrozenState(tuple(_owned(tensor[row]) for tensor in per_tensor))
            for row in range(len(per_tensor[0]) if per_tensor else 0)
        ]

    def rows(self, start: int, stop: int) -> RecurrentState:
        """The states of sequences `start` to `stop` of a batch (views, not copies)."""
        return RecurrentState(tuple(a[:, start:stop] for a in self.arrays))

    @staticmethod
    def stack(states: Sequence[RecurrentState]) -> RecurrentState:
        """Concatenate single- or multi-sequence states along the batch axis."""
        if len(states) == 1:
            return states[0]
        return RecurrentState(
            tuple(
                np.concatenate(parts, axis=1)
                for parts in zip(*(s.arrays for s in states), strict=True)
            )
        )

    def frozen(self) -> FrozenState:
        """A compact, read-only copy (unless it already is one).

        Batch results are views into the whole batch's output; keeping such a view would pin
        every other row of that batch in memory, so stored states always own their arrays.
        """
        if isinstance(self, FrozenState):
            return self
        return FrozenState(tuple(_frozen(a) for a in self.arrays))


class FrozenState(RecurrentState):
    """A state whose arrays are compact, read-only and own their memory: `frozen` is free."""

    __slots__ = ()


def _owned(view: FloatArray) -> FloatArray:
    out = view.copy()
    out.flags.writeable = False
    return out


def _frozen(array: FloatArray) -> FloatArray:
    if (
        not array.flags.writeable
        and array.flags.owndata
        and array.flags.c_contiguous
        and array.dtype == np.float32
    ):
        return array
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.flags.writeable = False
    return out
