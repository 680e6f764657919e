"""Small random models and graph runners shared by the export tests."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch

from export.architectures import RecurrentModel

HIDDEN = 4
FEATURES = 3
VOCAB = 7
OUTPUTS = 2


def random_model(
    *,
    cell: Literal["rnn", "lstm", "gru"] = "rnn",
    num_layers: int = 1,
    bidirectional: bool = False,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    bias: bool = True,
    batch_first: bool = True,
    tokens: bool = False,
    head: Literal["per_step", "last_step"] = "per_step",
    seed: int = 0,
) -> RecurrentModel:
    """A tiny RecurrentModel with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    inputs: dict[str, Any] = (
        {"vocab_size": VOCAB, "embedding_dim": FEATURES} if tokens else {"input_size": FEATURES}
    )
    model = RecurrentModel(
        cell=cell,
        hidden_size=HIDDEN,
        num_layers=num_layers,
        bidirectional=bidirectional,
        nonlinearity=nonlinearity,
        bias=bias,
        dropout=0.3,
        output_size=OUTPUTS,
        head=head,
        batch_first=batch_first,
        **inputs,
    )
    return model.eval()


def run_graph(session: ort.InferenceSession, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run every output of the graph and return them by name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
