"""Our own configurable recurrent family, used by the demo models and the tests.

It has the shape the PyTorch tutorials teach (optional embedding, one recurrent layer,
a linear head) so the exporter treats it exactly like a user's module.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

CellName = Literal["rnn", "lstm", "gru"]
HeadName = Literal["per_step", "last_step"]

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentModel(nn.Module):
    """Embedding (optional) -> RNN/LSTM/GRU -> Linear head, per step or on the last step.

    `forward(x, h0=None) -> (y, h_n)`; for LSTM `h0` and `h_n` are `(h, c)` tuples.
    """

    def __init__(
        self,
        *,
        cell: CellName = "rnn",
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int | None = None,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
        bias: bool = True,
        dropout: float = 0.0,
        output_size: int = 1,
        head: HeadName = "per_step",
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError("give exactly one of input_size or vocab_size")
        self.head_mode = head
        self.batch_first = batch_first
        self.embedding: nn.Embedding | None = None
        if vocab_size is not None:
            embedding_dim = embedding_dim or hidden_size
            self.embedding = nn.Embedding(vocab_size, embedding_dim)
            input_size = embedding_dim
        kwargs: dict[str, Any] = {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "bias": bias,
            "batch_first": batch_first,
            "dropout": dropout if num_layers > 1 else 0.0,
            "bidirectional": bidirectional,
        }
        if cell == "rnn":
            kwargs["nonlinearity"] = nonlinearity
        self.rnn = _CELLS[cell](**kwargs)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), output_size)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        if self.embedding is not None:
            x = self.embedding(x)
        out, h_n = self.rnn(x, h0)
        if self.head_mode == "last_step":
            last = out[:, -1] if self.batch_first else out[-1]
            return self.fc(last), h_n
        return self.fc(out), h_n
