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

    def row(self, index: int) -> RecurrentState:
        """The state of one sequence, still with a batch axis of 1 (views, not copies)."""
        return RecurrentState(tuple(a[:, index : index + 1] for a in self.arrays))

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

    def frozen(self) -> RecurrentState:
        """A compact, read-only copy (unless it already is one).

        Batch results are views into the whole batch's output; keeping such a view would pin
        every other row of that batch in memory, so stored states always own their arrays.
        """
        arrays = tuple(_frozen(a) for a in self.arrays)
        if all(new is old for new, old in zip(arrays, self.arrays, strict=True)):
            return self
        return RecurrentState(arrays)


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
