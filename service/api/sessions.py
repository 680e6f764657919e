"""v1 session routes: open a stream on a model, step it, read, export, reset, delete it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from service.api.deps import EngineDep, engine_of, json_response, owner_of, read_body
from service.api.lean import lean_post, path_parameters
from service.api.schemas import StateDoc, Step, body_doc, error_docs
from service.codecs import parse_json
from service.engine import Engine
from service.errors import InvalidInputError
from service.sessions.wire import (
    describe,
    exported_state,
    parse_open_request,
    parse_reset_request,
    parse_step_request,
)

router = APIRouter(tags=["sessions"])


STEP_EXAMPLE = {"seq": 0, "inputs": [[0.5, -1.0, 0.25, 2.0]]}


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


def optional_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body may be left out."""
    doc = body_doc(model, {})
    doc["requestBody"]["required"] = False
    return doc


async def optional_json(request: Request, engine: Engine) -> Any:
    """The parsed body, or None when the request has none."""
    body = await read_body(request, engine.settings.max_body_bytes)
    return parse_json(body) if body.strip() else None


@router.post(
    "/v1/models/{name}/sessions",
    summary="Open a streaming session",
    status_code=201,
    response_model=SessionAnswer,
    responses=error_docs(400, 404, 429, 503),
    openapi_extra=optional_body_doc(OpenSessionBody),
)
async def open_session(
    name: str, request: Request, engine: EngineDep, version: int | None = Query(None, ge=1)
) -> Response:
    """Pins the model version (default: the highest) and starts from zeros or `initial_state`.

    Bidirectional models cannot stream (400). When the session cap is reached: 429.
    """
    body = parse_open_request(await optional_json(request, engine))
    if version is not None and body.version is not None and version != body.version:
        raise InvalidInputError(f"version {body.version} in the body, {version} in the query")
    record = await engine.sessions.open(
        name, body.version or version, body.initial_state, owner_of(request)
    )
    location = {"Location": f"/v1/sessions/{record.session_id}"}
    return json_response(describe(record), 201, location)


@lean_post(
    router,
    "/v1/sessions/{session_id}/steps",
    summary="Run k >= 1 steps of a session",
    response_model=StepAnswer,
    responses=error_docs(400, 404, 409, 413, 429, 503),
    openapi_extra={
        **body_doc(StepBody, STEP_EXAMPLE),
        "parameters": path_parameters("session_id"),
    },
)
async def step_session(request: Request) -> Response:
    """`seq` is the index of the first step sent; the answer's `seq` is the next expected one.

    Retrying the last request (same seq, same inputs) returns the same bytes and does not
    advance; any other seq is 409 with `detail.expected_seq`.
    """
    engine = engine_of(request)
    payload = parse_json(await read_body(request, engine.settings.max_body_bytes))
    step = parse_step_request(payload, seq_required=True)
    answer = await engine.sessions.step(
        request.path_params["session_id"], seq=step.seq, inputs=step.inputs, owner=owner_of(request)
    )
    return Response(answer, media_type="application/json")


@router.get(
    "/v1/sessions/{session_id}",
    summary="Describe a session",
    response_model=SessionAnswer,
    responses=error_docs(404, 503),
)
async def get_session(session_id: str, request: Request, engine: EngineDep) -> Response:
    """Model, version, steps so far (`seq`) and expiry."""
    return json_response(describe(await engine.sessions.get(session_id, owner_of(request))))


@router.get(
    "/v1/sessions/{session_id}/state",
    summary="Export a session's state",
    response_model=SessionStateAnswer,
    responses=error_docs(404, 503),
)
async def export_session_state(session_id: str, request: Request, engine: EngineDep) -> Response:
    """The recurrent state after the last step; pass it as `initial_state` to continue elsewhere."""
    record = await engine.sessions.get(session_id, owner_of(request))
    return json_response(exported_state(record))


@router.post(
    "/v1/sessions/{session_id}/reset",
    summary="Reset a session",
    response_model=SessionAnswer,
    responses=error_docs(400, 404, 409, 503),
    openapi_extra=optional_body_doc(ResetSessionBody),
)
async def reset_session(session_id: str, request: Request, engine: EngineDep) -> Response:
    """Back to seq 0 and the initial state, or to `initial_state` if given (it becomes the
    session's new initial state)."""
    initial_state = parse_reset_request(await optional_json(request, engine))
    record = await engine.sessions.reset(session_id, initial_state, owner_of(request))
    return json_response(describe(record))


@router.delete(
    "/v1/sessions/{session_id}",
    summary="Delete a session",
    status_code=204,
    response_class=Response,
    responses=error_docs(404, 503),
)
async def delete_session(session_id: str, request: Request, engine: EngineDep) -> Response:
    """The session and its state are gone; its id answers 404 from now on."""
    await engine.sessions.delete(session_id, owner_of(request))
    return Response(status_code=204)
