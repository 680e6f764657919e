"""The model card: the `model.json` beside every `model.onnx` (DESIGN.md section 2).

The service owns this schema; the exporter writes JSON that must validate against it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class Cell(StrEnum):
    """The recurrent cell family."""

    RNN = "rnn"
    LSTM = "lstm"
    GRU = "gru"


class Nonlinearity(StrEnum):
    """nn.RNN's nonlinearity (LSTM and GRU use their fixed gates)."""

    TANH = "tanh"
    RELU = "relu"


class Head(StrEnum):
    """Where the model's output head reads: every step, or the last valid step."""

    PER_STEP = "per_step"
    LAST_STEP = "last_step"


class Normalization(BaseModel):
    """Affine normalisation baked into the graph: x' = (x - mean) / std, y = y' * std + mean.

    Recorded for the reader; clients always send raw values and get raw values back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_mean: list[float]
    input_std: list[float]
    output_mean: list[float] | None = None
    output_std: list[float] | None = None


class Parity(BaseModel):
    """How closely the ONNX graph reproduces the torch module, and on what grid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_abs_error: float = Field(ge=0)
    batch_sizes: list[int]
    seq_lens: list[int]
    mixed_lengths: bool
    initial_state: bool


PositiveInt = Annotated[int, Field(ge=1)]


class ModelCard(BaseModel):
    """Everything the server needs to know about one model version, validated at load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: PositiveInt
    description: str = ""
    cell: Cell
    nonlinearity: Nonlinearity | None = None
    input_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    embedding_dim: PositiveInt | None = None
    hidden_size: PositiveInt
    num_layers: PositiveInt
    bidirectional: bool
    output_size: PositiveInt
    head: Head
    labels: list[str] | None = None
    feature_names: list[str] | None = None
    normalization: Normalization | None = None
    streamable: bool
    opset: PositiveInt
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    torch_version: str
    onnx_version: str
    parity: Parity | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        if (self.input_size is None) == (self.vocab_size is None):
            raise ValueError("exactly one of input_size (float features) or vocab_size (tokens)")
        if self.vocab_size is not None and self.embedding_dim is None:
            raise ValueError("token models need embedding_dim")
        if self.cell is Cell.RNN and self.nonlinearity is None:
            raise ValueError("cell 'rnn' needs nonlinearity (tanh or relu)")
        if self.cell is not Cell.RNN and self.nonlinearity is not None:
            raise ValueError(f"cell '{self.cell}' has no nonlinearity setting")
        if self.streamable and self.bidirectional:
            raise ValueError("a bidirectional model cannot be streamable")
        if self.labels is not None and len(self.labels) != self.output_size:
            raise ValueError(f"{len(self.labels)} labels for output_size {self.output_size}")
        if self.feature_names is not None and len(self.feature_names) != self.input_size:
            raise ValueError(
                f"{len(self.feature_names)} feature_names for input_size {self.input_size}"
            )
        return self

    @property
    def num_directions(self) -> int:
        """2 for bidirectional models, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def state_rows(self) -> int:
        """Leading axis of every state tensor: layers x directions."""
        return self.num_layers * self.num_directions

    @property
    def state_names(self) -> tuple[str, ...]:
        """State tensors in the order the graph takes them: h, and c for LSTM."""
        return ("h", "c") if self.cell is Cell.LSTM else ("h",)

    @property
    def takes_tokens(self) -> bool:
        """True for embedding models, which take int64 token ids instead of float features."""
        return self.vocab_size is not None

    @property
    def input_name(self) -> str:
        """The graph's sequence input: `tokens` or `x`."""
        return "tokens" if self.takes_tokens else "x"
