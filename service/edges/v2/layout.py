"""V2 state tensors are batch-first: `[batch, rows, width]` on the wire, `[rows, batch, width]`
in the graph.

Triton batches along axis 0 of every tensor (its implicit batch dimension, `max_batch_size > 0`
in the model configuration): perf_analyzer's `-b N` and Triton clients build every tensor as
`[N, ...]`. These two functions are the only place the axes move.
"""

from __future__ import annotations

import numpy as np

from service.core.state import FloatArray


def graph_state(wire: FloatArray) -> FloatArray:
    """`[batch, rows, width]` from the wire as the graph's `[rows, batch, width]` (a copy)."""
    return np.ascontiguousarray(wire.transpose(1, 0, 2))


def wire_state(graph: FloatArray) -> FloatArray:
    """The graph's `[rows, batch, width]` as the wire's `[batch, rows, width]` (a copy)."""
    return np.ascontiguousarray(graph.transpose(1, 0, 2))
