"""WebSocket streaming: many steps over one socket, same sessions and seq rules as REST.

Frames are JSON (text; binary frames holding JSON are accepted too). The client sends
`{"seq": n, "inputs": [...]}` and gets the body `POST /v1/sessions/{id}/steps` answers; both
routes first send the session (`GET /v1/sessions/{id}`'s body, `seq` included).
Leaving `seq` out applies the steps as the next ones, wherever the session is: handy for
a single writer, but a resent message is then applied twice, so retrying clients send seq.
Errors come in-band as `{"error": {"type", "message", "detail"}}`. The socket closes with
4000 + the HTTP status when the session is gone or cannot be opened (4404, 4400, 4429,
4503) or the API key is missing (4401, see ws_auth), with 1008 after MAX_MALFORMED_MESSAGES
bad messages in a row, and with 4413, 4429 or 4408 when a message is over the size, rate or
idle limits (service/edges/ws_guard.py, after an in-band error). The session outlives the
socket until its TTL, so a client reconnects and continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.edges.errors import close_code_for, count_rejection, error_frame
from service.edges.http.codec import (
    JsonBody,
    decode_step,
    describe_session,
    parse_body,
    render_step,
    step_inputs,
)
from service.edges.http.deps import engine_of, owner_of, query_version
from service.edges.ws_auth import chosen_protocol
from service.edges.ws_guard import WebSocketGuard
from service.errors import InvalidInputError, LimitExceededError, NotFoundError, RnnServeError
from service.operations.sessions import SessionManager

log = logging.getLogger(__name__)

router = APIRouter(tags=["streaming"])

MAX_MALFORMED_MESSAGES = 10
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011


def parse_frame(message: Mapping[str, Any]) -> JsonBody:
    """The JSON inside a text or binary frame (and whether it is plain, see JsonBody)."""
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    try:
        return parse_body(data)
    except InvalidInputError as exc:
        raise InvalidInputError(exc.message.replace("body", "message", 1)) from None


async def _refuse(websocket: WebSocket, exc: RnnServeError) -> None:
    count_rejection(engine_of(websocket).metrics, exc)
    with contextlib.suppress(WebSocketDisconnect):
        await websocket.send_text(error_frame(exc))
        await websocket.close(code=close_code_for(exc), reason=exc.type)


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream_session(websocket: WebSocket, session_id: str) -> None:
    """Stream steps into an existing session (one opened over REST, or a reconnect).

    The first message is the session as `GET /v1/sessions/{id}` shows it, `seq` included, so a
    reconnecting client learns whether its last step was applied."""
    await websocket.accept(subprotocol=chosen_protocol(websocket.scope))
    owner = owner_of(websocket)
    try:
        sessions = engine_of(websocket).sessions
        record = await sessions.get(session_id, owner)
    except RnnServeError as exc:
        await _refuse(websocket, exc)
        return
    await _shallow(
        _pump(websocket, sessions, record.session_id, owner, hello=describe_session(record))
    )


@router.websocket("/v1/models/{name}/stream")
async def stream_new_session(websocket: WebSocket, name: str) -> None:
    """Open a session (optional `?version=`), tell the client its id, then stream steps."""
    await websocket.accept(subprotocol=chosen_protocol(websocket.scope))
    owner = owner_of(websocket)
    try:
        sessions = engine_of(websocket).sessions
        model = sessions.streamable_model(name, query_version(websocket))
        record = await sessions.open(model, None, owner)
    except RnnServeError as exc:
        await _refuse(websocket, exc)
        return
    await _shallow(
        _pump(websocket, sessions, record.session_id, owner, hello=describe_session(record))
    )


async def _shallow(pump: Coroutine[Any, Any, None]) -> None:
    """Run a socket's message loop as a task of its own, awaited here.

    The endpoint runs ~20 coroutines deep (uvicorn, middleware, FastAPI and Starlette routing),
    and every time a coroutine resumes, each frame of that chain resumes with it: twice per
    step (the next message, the batch's answer). The task resumes only its own frames; its
    context (request id) is a copy of the endpoint's, and cancelling the endpoint cancels it."""
    await asyncio.get_running_loop().create_task(pump)


async def _pump(
    websocket: WebSocket,
    sessions: SessionManager,
    session_id: str,
    owner: str | None,
    *,
    hello: dict[str, Any],
) -> None:
    """Send `hello`, then answer step messages in order until the client leaves or the
    session is gone."""
    async with WebSocketGuard.for_socket(websocket, owner) as guard:
        await _answer(websocket, sessions, session_id, owner, hello=hello, guard=guard)


async def _answer(
    websocket: WebSocket,
    sessions: SessionManager,
    session_id: str,
    owner: str | None,
    *,
    hello: dict[str, Any],
    guard: WebSocketGuard,
) -> None:
    malformed = 0
    try:
        await websocket.send_text(orjson.dumps(hello).decode())
        while True:
            message = await guard.receive()
            if message is None:
                return
            try:
                frame = parse_frame(message)
                body = decode_step(frame.payload, seq_required=False)
                record = await sessions.get(session_id, owner)
                inputs = step_inputs(body.inputs, frame.plain, sessions.model_of(record).card)
                outcome = await sessions.step(record, seq=body.seq, inputs=inputs)
            except NotFoundError as exc:
                await _refuse(websocket, exc)
                return
            except (InvalidInputError, LimitExceededError) as exc:
                count_rejection(engine_of(websocket).metrics, exc)
                malformed += 1
                await websocket.send_text(error_frame(exc))
                if malformed >= MAX_MALFORMED_MESSAGES:
                    await websocket.close(CLOSE_POLICY_VIOLATION, "too many malformed messages")
                    return
                continue
            except RnnServeError as exc:
                await websocket.send_text(error_frame(exc))
                continue
            malformed = 0
            await websocket.send_text(render_step(outcome).decode())
    except WebSocketDisconnect:
        return
    except Exception:
        log.exception("stream of session %s failed", session_id)
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_INTERNAL_ERROR, "internal error")
