"""What an exported graph takes and gives (docs/model-contract.md), whatever route built it.

The parity and property checks read only this and a torch reference, so the template, traced
and scan routes are checked by the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from export.probe import InputKind

Array = npt.NDArray[Any]


class Head(StrEnum):
    """What `y` holds: an answer per step (read at the last valid one or not), or one per row."""

    PER_STEP = "per_step"
    LAST_STEP = "last_step"
    PER_SEQUENCE = "per_sequence"


@dataclass(frozen=True)
class StateTensor:
    """One state tensor of the graph, `[rows, batch, width]`."""

    name: str
    rows: int
    width: int

    @property
    def input(self) -> str:
        """The graph input that sets it."""
        return f"{self.name}0"

    @property
    def output(self) -> str:
        """The graph output that returns it after each sequence's last valid step."""
        return f"{self.name}n"

    def to_card(self) -> dict[str, Any]:
        """The card's `states` entry."""
        return {
            "name": self.name,
            "input": self.input,
            "output": self.output,
            "rows": self.rows,
            "width": self.width,
        }


@dataclass(frozen=True)
class LayerInfo:
    """One recurrent module in call order (the card's `layers` entry)."""

    name: str
    kind: str
    input_size: int | None
    hidden_size: int | None
    num_layers: int = 1
    bidirectional: bool = False
    nonlinearity: str | None = None

    def to_card(self) -> dict[str, Any]:
        """The card's `layers` entry."""
        return {
            "name": self.name,
            "kind": self.kind,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "nonlinearity": self.nonlinearity,
        }


@dataclass(frozen=True)
class Outputs:
    """y batch-first ([batch, seq, out], or [batch, out]) and the end states, in graph order."""

    y: Array
    states: tuple[Array, ...]


# Torch on an equal-length batch: (batch-first inputs, initial states or None) -> Outputs.
Reference = Callable[[Array, "tuple[Array, ...] | None"], Outputs]


@dataclass(frozen=True)
class GraphIO:
    """The graph's contract: its input, states, head and output width, and how it was built."""

    input: InputKind
    states: tuple[StateTensor, ...]
    head: Head
    output_size: int
    layers: tuple[LayerInfo, ...]
    method: str
    embedding_dim: int | None = None

    @property
    def input_name(self) -> str:
        """`tokens` or `x`."""
        return "tokens" if self.input.tokens else "x"

    def zero_states(self, batch: int) -> tuple[Array, ...]:
        """All-zero initial states for a batch."""
        return tuple(np.zeros((s.rows, batch, s.width), np.float32) for s in self.states)

    def random_inputs(self, rng: np.random.Generator, batch: int, seq: int) -> Array:
        """Batch-first inputs: token ids, or standard-normal features."""
        if self.input.tokens:
            return rng.integers(0, self.input.size, (batch, seq), dtype=np.int64)
        return rng.standard_normal((batch, seq, self.input.size)).astype(np.float32)

    def random_states(self, rng: np.random.Generator, batch: int) -> tuple[Array, ...]:
        """Non-zero initial states for a batch."""
        return tuple(
            rng.normal(0.0, 0.5, (s.rows, batch, s.width)).astype(np.float32) for s in self.states
        )


def state_tensors(
    owners: Sequence[tuple[str, Sequence[tuple[str, int, int]]]],
) -> tuple[StateTensor, ...]:
    """Name the states of each recurrent call (path, [(suffix, rows, width)]).

    One call: its suffixes as they are (`h`, `c`); several: prefixed by the module path.
    """
    if len(owners) == 1:
        return tuple(StateTensor(s, rows, width) for s, rows, width in owners[0][1])
    return tuple(
        StateTensor(f"{path}.{s}", rows, width)
        for path, specs in owners
        for s, rows, width in specs
    )
