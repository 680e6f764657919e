"""The model card: the `model.json` beside every `model.onnx` (docs/model-contract.md).

The service owns this schema; the exporter writes JSON that must validate against it. Format 2
describes any recurrent model by its list of named state tensors; format 1 cards (one
RNN/LSTM/GRU layer, written before format 2 existed) are read into the same shape.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
STATE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
CARD_FORMAT: Literal[2] = 2


class LayerKind(StrEnum):
    """What kind of recurrent module a layer is."""

    RNN = "rnn"
    LSTM = "lstm"
    GRU = "gru"
    RNN_CELL = "rnn_cell"
    LSTM_CELL = "lstm_cell"
    GRU_CELL = "gru_cell"
    CUSTOM_CELL = "custom_cell"


class Nonlinearity(StrEnum):
    """nn.RNN's nonlinearity (LSTM and GRU use their fixed gates)."""

    TANH = "tanh"
    RELU = "relu"


class Head(StrEnum):
    """What `y` holds: an answer at every step (read at the last or not), or one per sequence."""

    PER_STEP = "per_step"
    LAST_STEP = "last_step"
    PER_SEQUENCE = "per_sequence"


class ExportMethod(StrEnum):
    """How the exporter produced the graph (informational)."""

    TEMPLATE = "template"
    TRACED = "traced"
    SCAN = "scan"


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


class Layer(BaseModel):
    """One recurrent module of the model, in call order (for the reader)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: LayerKind
    input_size: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    num_layers: PositiveInt = 1
    bidirectional: bool = False
    nonlinearity: Nonlinearity | None = None


class StateSpec(BaseModel):
    """One recurrent state tensor: `[rows, batch, width]` in the graph, `[rows][width]` in JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=STATE_NAME_PATTERN)
    input: str = Field(min_length=1)
    output: str = Field(min_length=1)
    rows: PositiveInt
    width: PositiveInt


class ModelCard(BaseModel):
    """Everything the server needs to know about one model version, validated at load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[2] = CARD_FORMAT
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: PositiveInt
    description: str = ""
    input_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    embedding_dim: PositiveInt | None = None
    output_size: PositiveInt
    head: Head
    labels: list[str] | None = None
    feature_names: list[str] | None = None
    normalization: Normalization | None = None
    layers: list[Layer] = Field(min_length=1)
    states: list[StateSpec] = Field(min_length=1)
    streamable: bool
    not_streamable_reason: str | None = None
    padding_safe: bool
    export_method: ExportMethod
    opset: PositiveInt
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    torch_version: str
    onnx_version: str
    parity: Parity | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _read_format_1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "format" not in data:
            return upgrade_format_1(data)
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        if (self.input_size is None) == (self.vocab_size is None):
            raise ValueError("exactly one of input_size (float features) or vocab_size (tokens)")
        if self.streamable == (self.not_streamable_reason is not None):
            raise ValueError("not_streamable_reason is set exactly when streamable is false")
        if self.labels is not None and len(self.labels) != self.output_size:
            raise ValueError(f"{len(self.labels)} labels for output_size {self.output_size}")
        if self.feature_names is not None and len(self.feature_names) != self.input_size:
            raise ValueError(
                f"{len(self.feature_names)} feature_names for input_size {self.input_size}"
            )
        graph_names = [self.input_name, "seq_lens", "y"]
        for state in self.states:
            graph_names += [state.input, state.output]
        if len(set(graph_names)) != len(graph_names):
            raise ValueError(f"graph tensor names must be unique, got {graph_names}")
        if len({s.name for s in self.states}) != len(self.states):
            raise ValueError("state names must be unique")
        return self

    @property
    def state_names(self) -> tuple[str, ...]:
        """State names in the order the graph takes them."""
        return tuple(s.name for s in self.states)

    @property
    def takes_tokens(self) -> bool:
        """True for embedding models, which take int64 token ids instead of float features."""
        return self.vocab_size is not None

    @property
    def input_name(self) -> str:
        """The graph's sequence input: `tokens` or `x`."""
        return "tokens" if self.takes_tokens else "x"

    @property
    def answers_per_step(self) -> bool:
        """True when `y` has a seq axis (per_step and last_step heads)."""
        return self.head is not Head.PER_SEQUENCE


_FORMAT_1_LAYER_FIELDS = ("cell", "nonlinearity", "hidden_size", "num_layers", "bidirectional")
_FORMAT_1_CELLS = (LayerKind.RNN, LayerKind.LSTM, LayerKind.GRU)


def upgrade_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format 1 card (one RNN/LSTM/GRU layer) as the equivalent format 2 mapping.

    Only the layer fields change; anything malformed is left for validation to name.
    """
    upgraded = {k: v for k, v in data.items() if k not in _FORMAT_1_LAYER_FIELDS}
    cell = data.get("cell")
    hidden = data.get("hidden_size")
    layers = data.get("num_layers")
    bidirectional = data.get("bidirectional")
    if not (
        isinstance(cell, str)
        and isinstance(hidden, int)
        and isinstance(layers, int)
        and isinstance(bidirectional, bool)
    ):
        raise ValueError(
            "a card without 'format' is format 1 and needs cell, hidden_size, num_layers and "
            "bidirectional"
        )
    if cell not in _FORMAT_1_CELLS:
        raise ValueError(f"'cell' is {cell!r}; a format 1 card has rnn, lstm or gru")
    if cell == LayerKind.RNN and data.get("nonlinearity") is None:
        raise ValueError("cell 'rnn' needs nonlinearity (tanh or relu)")
    if cell != LayerKind.RNN and data.get("nonlinearity") is not None:
        raise ValueError(f"cell '{cell}' has no nonlinearity setting")
    rows = layers * (2 if bidirectional else 1)
    names = ("h", "c") if cell == LayerKind.LSTM else ("h",)
    upgraded["format"] = CARD_FORMAT
    upgraded["layers"] = [
        {
            "name": "rnn",
            "kind": cell,
            "input_size": data.get("embedding_dim") or data.get("input_size"),
            "hidden_size": hidden,
            "num_layers": layers,
            "bidirectional": bidirectional,
            "nonlinearity": data.get("nonlinearity"),
        }
    ]
    upgraded["states"] = [
        {"name": n, "input": f"{n}0", "output": f"{n}n", "rows": rows, "width": hidden}
        for n in names
    ]
    upgraded.setdefault("padding_safe", True)
    upgraded.setdefault("export_method", ExportMethod.TEMPLATE.value)
    if bidirectional:
        if data.get("streamable"):
            raise ValueError("a bidirectional model cannot be streamable")
        upgraded.setdefault(
            "not_streamable_reason",
            "its recurrent layer is bidirectional: every output depends on steps that have not "
            "arrived yet",
        )
    elif not data.get("streamable", True):
        upgraded.setdefault("not_streamable_reason", "it is marked not streamable in its card")
    else:
        upgraded.setdefault("not_streamable_reason", None)
    return upgraded
