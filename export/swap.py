"""Recurrent layers swapped for the custom ops while a module is traced.

Each swapped forward takes its initial states from the graph's state inputs (in call order),
runs one custom op per layer with the graph's `seq_lens`, and hands its end states back, so
the wrapper can return them as graph outputs whatever the module does with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from export.packing import PaddedSequence, padded_packing
from export.recurrent_ops import layer_weights, onnx_family


class Slots:
    """The graph's state inputs, handed to recurrent calls in order; collects their end states.

    Call k takes the inputs after those of the calls before it, which have appended their end
    states to `outputs` by then.
    """

    def __init__(self) -> None:
        self.seq_lens = torch.empty(0, dtype=torch.int32)
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def begin(self, seq_lens: torch.Tensor, states: tuple[torch.Tensor, ...]) -> None:
        self.seq_lens, self.inputs, self.outputs = seq_lens, list(states), []

    def take(self, count: int) -> list[torch.Tensor]:
        start = len(self.outputs)
        return self.inputs[start : start + count]


def _swapped_forward(rnn: nn.RNNBase, slots: Slots) -> Any:
    family = onnx_family(rnn)
    weights = [
        tuple(torch.from_numpy(a) for a in layer_weights(rnn, k)) for k in range(rnn.num_layers)
    ]
    dirs = 2 if rnn.bidirectional else 1
    activation = "Tanh" if rnn.mode == "RNN_TANH" else "Relu"

    def forward(input: Any, hx: Any = None) -> Any:
        padded = input if isinstance(input, PaddedSequence) else None
        if padded is not None:
            x = padded.data
        else:
            x = input.transpose(0, 1) if rnn.batch_first else input
        initial = slots.take(2 if family == "LSTM" else 1)
        lens = slots.seq_lens
        ends: list[list[torch.Tensor]] = [[] for _ in initial]
        for layer, (w, r, b) in enumerate(weights):
            rows = [s[layer * dirs : (layer + 1) * dirs] for s in initial]
            if family == "LSTM":
                x, *end = torch.ops.rnnserve.lstm_layer(x, w, r, b, lens, *rows)
            elif family == "GRU":
                x, *end = torch.ops.rnnserve.gru_layer(x, w, r, b, lens, *rows)
            else:
                x, *end = torch.ops.rnnserve.rnn_layer(x, w, r, b, lens, *rows, activation)
            for collected, state in zip(ends, end, strict=True):
                collected.append(state)
        finals = [torch.cat(e, dim=0) for e in ends]
        slots.outputs.extend(finals)
        if padded is not None:
            out: Any = PaddedSequence(data=x, lengths=padded.lengths)
        else:
            out = x.transpose(0, 1) if rnn.batch_first else x
        return out, (tuple(finals) if family == "LSTM" else finals[0])

    return forward


@contextmanager
def swapped(module: nn.Module, rnns: list[nn.RNNBase], slots: Slots) -> Iterator[None]:
    """Each layer in `rnns` runs as custom ops on the slots' states, packing as padded."""
    layers = {id(r): r for r in rnns}
    for rnn in layers.values():
        rnn.forward = _swapped_forward(rnn, slots)
    try:
        with padded_packing(module):
            yield
    finally:
        for rnn in layers.values():
            del rnn.forward
