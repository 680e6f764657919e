"""Random models built through the real exporter (torch is imported only to export them).

`RNNSERVE_TEST_REPOSITORY` names a repository exported beforehand (`bench/gpu.sh --prepare`):
the fixture copies it instead of exporting, so the end-to-end tests run where torch is not
installed (a GPU box with only the serving wheels); `modules` is then empty.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export.architectures import RecurrentModel

PREPARED_REPOSITORY_ENV = "RNNSERVE_TEST_REPOSITORY"

# name -> RecurrentModel kwargs; small enough to export in milliseconds, varied enough to cover
# every cell, tokens and features, 1 and 3 layers, both heads, relu, and a bidirectional model.
RANDOM_MODELS: dict[str, dict[str, Any]] = {
    "rnn-feat": {
        "cell": "rnn",
        "input_size": 4,
        "hidden_size": 8,
        "num_layers": 2,
        "output_size": 3,
    },
    "rnn-relu3": {
        "cell": "rnn",
        "nonlinearity": "relu",
        "input_size": 3,
        "hidden_size": 6,
        "num_layers": 3,
        "output_size": 2,
    },
    "lstm-tok": {
        "cell": "lstm",
        "vocab_size": 11,
        "embedding_dim": 5,
        "hidden_size": 6,
        "num_layers": 1,
        "output_size": 11,
    },
    "lstm3": {"cell": "lstm", "input_size": 2, "hidden_size": 5, "num_layers": 3, "output_size": 2},
    "gru-last": {
        "cell": "gru",
        "input_size": 3,
        "hidden_size": 7,
        "num_layers": 3,
        "output_size": 4,
        "head": "last_step",
    },
    "gru1": {"cell": "gru", "input_size": 2, "hidden_size": 4, "num_layers": 1, "output_size": 1},
    "bi-rnn": {
        "cell": "rnn",
        "input_size": 2,
        "hidden_size": 5,
        "num_layers": 2,
        "output_size": 2,
        "bidirectional": True,
    },
}


@dataclass(frozen=True)
class RandomRepository:
    """A repository of random exported models and the torch modules they came from."""

    path: Path
    modules: dict[str, RecurrentModel]


def export_random_model(
    repository: Path, name: str, *, seed: int = 0, **kwargs: Any
) -> RecurrentModel:
    """Build a seeded random RecurrentModel and export it through the real exporter."""
    import torch

    from export.api import export_module
    from export.architectures import RecurrentModel

    torch.manual_seed(seed)
    module = RecurrentModel(**kwargs).eval()
    export_module(module, name=name, repository=repository)
    return module


def export_random_repository(path: Path) -> RandomRepository:
    """Every model in RANDOM_MODELS, exported into `path` (or copied from the prepared one)."""
    if prepared := os.environ.get(PREPARED_REPOSITORY_ENV):
        shutil.copytree(prepared, path, dirs_exist_ok=True)
        return RandomRepository(path, {})
    modules = {
        name: export_random_model(path, name, seed=i, **kwargs)
        for i, (name, kwargs) in enumerate(RANDOM_MODELS.items())
    }
    return RandomRepository(path, modules)
