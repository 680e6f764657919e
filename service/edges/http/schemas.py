"""The v1 wire format as pydantic models, for the OpenAPI document only.

Bodies are parsed by `service.edges.http.codec` with orjson and numpy (per-float pydantic
validation costs milliseconds, DESIGN.md section 6); these models describe the same shapes in
/docs, and tests post each route's documented example to check the two agree.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

Step = list[float] | int


class StateDoc(RootModel[dict[str, list[list[float]]]]):
    """One sequence's recurrent state: each state tensor of the model by name, [rows][width]
    (`h`, and `c` for an LSTM; the card's `states` lists them)."""


class PredictBody(BaseModel):
    """A batch of variable-length sequences; a step is a feature list or one token id."""

    inputs: list[list[Step]] = Field(description="sequences; each a list of steps")
    initial_state: list[StateDoc] | None = Field(None, description="one per sequence")
    output: Literal["all", "last"] | None = Field(
        None, description="default: the card's head (last for classifiers)"
    )
    return_state: bool = False


class PredictAnswer(BaseModel):
    """Per-sequence outputs: [steps][out] for `all`, [out] for `last`."""

    model: str
    version: int
    outputs: list[Any]
    labels: list[str] | None = None
    state: list[StateDoc] | None = None


class OpenSessionBody(BaseModel):
    """Optional: pin a version (default: the highest), start from a given state."""

    version: int | None = Field(None, ge=1)
    initial_state: StateDoc | None = None


class ResetSessionBody(BaseModel):
    """Optional: a new initial state (default: the one the session was opened with)."""

    initial_state: StateDoc | None = None


class StepBody(BaseModel):
    """k >= 1 steps; `seq` is the index of the first one (the session's next expected seq)."""

    seq: int = Field(ge=0)
    inputs: list[Step] = Field(description="steps: feature lists, or token ids")


class SessionAnswer(BaseModel):
    """A session: `seq` is the next expected step index (= steps applied so far)."""

    session_id: str
    model: str
    version: int
    seq: int
    created_at: str
    expires_at: str
    ttl_s: float


class StepAnswer(BaseModel):
    """The outputs of the steps just applied ([steps][out]) and the next expected seq."""

    session_id: str
    seq: int
    outputs: list[list[float]]


class SessionStateAnswer(BaseModel):
    """The state after the last applied step, usable as `initial_state`."""

    session_id: str
    model: str
    version: int
    seq: int
    state: StateDoc


class ErrorDetail(BaseModel):
    """The error body of every v1 route."""

    type: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["inputs[0]: every step must be a list of 8 numbers"])
    detail: Any = None


class ErrorBody(BaseModel):
    """`{"error": {...}}`."""

    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error body."""

    error: str


def error_docs(*statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the error statuses a FastAPI route can answer."""
    model = V2ErrorBody if v2 else ErrorBody
    return {status: {"model": model} for status in statuses}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with local `$defs` inlined, to stand alone in the document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
