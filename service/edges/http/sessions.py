"""v1 session routes: open a stream on a model, step it (a hot route), read, export, reset,
delete it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.edges.http.codec import (
    decode_open,
    decode_reset,
    decode_step,
    describe_session,
    render_state,
    render_step,
    step_inputs,
    to_state,
)
from service.edges.http.deps import (
    EngineDep,
    engine_of,
    json_response,
    owner_of,
    query_version,
    read_json_body,
    read_optional_json,
)
from service.edges.http.routes import VERSION_PARAMETER, HotRoute, Malformed
from service.edges.http.schemas import (
    OpenSessionBody,
    ResetSessionBody,
    SessionAnswer,
    SessionStateAnswer,
    StepAnswer,
    StepBody,
    error_docs,
    inline_schema,
)
from service.errors import InvalidInputError

router = APIRouter(tags=["sessions"])


def optional_body(model: type[OpenSessionBody] | type[ResetSessionBody]) -> dict[str, object]:
    """`openapi_extra` for a route whose JSON body may be left out."""
    schema = {"application/json": {"schema": inline_schema(model)}}
    return {"requestBody": {"required": False, "content": schema}}


@router.post(
    "/v1/models/{name}/sessions",
    summary="Open a streaming session",
    status_code=201,
    response_model=SessionAnswer,
    responses=error_docs(400, 404, 429, 503),
    openapi_extra={**optional_body(OpenSessionBody), "parameters": [VERSION_PARAMETER]},
)
async def open_session(name: str, request: Request, engine: EngineDep) -> Response:
    """Pins the model version (default: the highest) and starts from zeros or `initial_state`.

    Models that cannot stream (bidirectional layers, pooling over time: the card says why)
    answer 400. When the session cap is reached: 429.
    """
    body = decode_open(await read_optional_json(request, engine))
    version = query_version(request)
    if version is not None and body.version is not None and version != body.version:
        raise InvalidInputError(f"version {body.version} in the body, {version} in the query")
    sessions = engine.sessions
    model = sessions.streamable_model(name, body.version or version)
    initial = None
    if body.initial_state is not None:
        initial = to_state(body.initial_state, model.card, where="initial_state")
    record = await sessions.open(model, initial, owner_of(request))
    location = {"Location": f"/v1/sessions/{record.session_id}"}
    return json_response(describe_session(record), 201, location)


async def step_session(request: Request) -> Response:
    """`seq` is the index of the first step sent; the answer's `seq` is the next expected one.

    Retrying the last request (same seq, same inputs) returns the same answer and does not
    advance; any other seq is 409 with `detail.expected_seq`.
    """
    engine = engine_of(request)
    raw = await read_json_body(request, engine)
    body = decode_step(raw.payload, seq_required=True)
    sessions = engine.sessions
    record = await sessions.get(request.path_params["session_id"], owner_of(request))
    inputs = step_inputs(body.inputs, raw.plain, sessions.model_of(record).card)
    outcome = await sessions.step(record, seq=body.seq, inputs=inputs)
    return Response(render_step(outcome), media_type="application/json")


STEPS = HotRoute(
    path="/v1/sessions/{session_id}/steps",
    endpoint=step_session,
    summary="Run k >= 1 steps of a session",
    tag="sessions",
    body=StepBody,
    answer=StepAnswer,
    errors=(400, 404, 409, 413, 429, 503),
    example_model="co2-forecaster",
    example={"seq": 0, "inputs": [[315.7], [317.5]]},
    malformed=(
        Malformed(b'{"seq": 0, "inputs": [[315.7, 1.0]]}', 400),
        Malformed(b'{"seq": 0, "inputs": [[null]]}', 400),
        Malformed(b'{"seq": 0, "inputs": [[true]]}', 400),
        Malformed(b'{"seq": true, "inputs": [[315.7]]}', 400),
        Malformed(b'{"inputs": [[315.7]]}', 400),
        Malformed(b'{"seq": 5, "inputs": [[315.7]]}', 409),
        Malformed(b'{"seq": 0, "inputs": []}', 400),
        Malformed(b"[1, 2]", 400),
    ),
)


@router.get(
    "/v1/sessions/{session_id}",
    summary="Describe a session",
    response_model=SessionAnswer,
    responses=error_docs(404, 503),
)
async def get_session(session_id: str, request: Request, engine: EngineDep) -> Response:
    """Model, version, steps so far (`seq`) and expiry."""
    return json_response(describe_session(await engine.sessions.get(session_id, owner_of(request))))


@router.get(
    "/v1/sessions/{session_id}/state",
    summary="Export a session's state",
    response_model=SessionStateAnswer,
    responses=error_docs(404, 503),
)
async def export_session_state(session_id: str, request: Request, engine: EngineDep) -> Response:
    """Every recurrent state after the last step; pass it as `initial_state` to continue
    elsewhere."""
    sessions = engine.sessions
    record = await sessions.get(session_id, owner_of(request))
    return json_response(render_state(record, sessions.model_of(record).card))


@router.post(
    "/v1/sessions/{session_id}/reset",
    summary="Reset a session",
    response_model=SessionAnswer,
    responses=error_docs(400, 404, 409, 503),
    openapi_extra=optional_body(ResetSessionBody),
)
async def reset_session(session_id: str, request: Request, engine: EngineDep) -> Response:
    """Back to seq 0 and the initial state, or to `initial_state` if given (it becomes the
    session's new initial state)."""
    raw = decode_reset(await read_optional_json(request, engine))
    sessions = engine.sessions
    owner = owner_of(request)
    initial = None
    if raw is not None:
        card = sessions.model_of(await sessions.get(session_id, owner)).card
        initial = to_state(raw, card, where="initial_state")
    return json_response(describe_session(await sessions.reset(session_id, initial, owner)))


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
