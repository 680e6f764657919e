"""Request/response models for the OpenAPI docs.

Hot routes parse bodies with orjson and numpy (DESIGN.md section 6: per-float pydantic
validation costs milliseconds); these models only describe the wire format in /docs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Step = list[float] | int


class StateDoc(BaseModel):
    """One sequence's recurrent state: [layers*directions][hidden]; `c` only for LSTM."""

    h: list[list[float]]
    c: list[list[float]] | None = None


class PredictBody(BaseModel):
    """A batch of variable-length sequences; a step is a feature list or one token id."""

    inputs: list[list[Step]] = Field(
        examples=[[[[0.0] * 8] * 8]], description="sequences; each a list of steps"
    )
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


class ErrorDetail(BaseModel):
    """The error body of every v1 route."""

    type: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["inputs[0]: every step must be a list of 8 numbers"])
    detail: Any = None


class ErrorBody(BaseModel):
    """`{"error": {...}}`."""

    error: ErrorDetail


def body_doc(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself."""
    schema = _inline_refs(model.model_json_schema())
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the error statuses a route can answer."""
    return {status: {"model": ErrorBody} for status in statuses}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local `$defs` references so the schema stands alone inside the OpenAPI document."""
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
