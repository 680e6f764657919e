"""(b) The hand-tuned FastAPI server: what a good engineer writes without a framework.

orjson on the raw body, numpy arrays, async endpoints that call onnxruntime inline (one core:
a thread hop would only add latency), one onnxruntime call per request and per step, no
batching across requests. Streaming keeps numpy states in a dict, over REST and a WebSocket.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from starlette.responses import Response

from bench.baselines.common import open_session, parse_args, run_model, serve, state_shape

DUMP = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class Stream:
    """One session: its hidden state [layers, 1, hidden] and the next expected step."""

    state: np.ndarray[Any, Any]
    seq: int


def answer(payload: Any, status: int = 200) -> Response:
    """orjson straight to bytes."""
    return Response(orjson.dumps(payload, option=DUMP), status, media_type="application/json")


def create_app(model_path: Any) -> FastAPI:
    """The app over one ONNX file."""
    session = open_session(model_path)
    layers, hidden = state_shape(session)
    streams: dict[str, Stream] = {}
    app = FastAPI()

    def apply_steps(session_id: str, body: Any) -> tuple[int, Any]:
        stream = streams.get(session_id)
        if stream is None:
            return 404, {"error": "unknown session"}
        if body.get("seq") != stream.seq:
            return 409, {"error": f"expected seq {stream.seq}"}
        x = np.asarray(body["inputs"], dtype=np.float32)[None]
        y, stream.state = run_model(session, x, stream.state)
        stream.seq += x.shape[1]
        return 200, {"session_id": session_id, "seq": stream.seq, "outputs": y[0]}

    @app.get("/health/ready")
    async def ready() -> Response:
        return answer({"status": "ready"})

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        x = np.asarray(body["inputs"], dtype=np.float32)
        if x.ndim != 3:
            return answer({"error": "inputs must be [batch][steps][features]"}, 400)
        h0 = np.zeros((layers, x.shape[0], hidden), dtype=np.float32)
        y, _ = run_model(session, x, h0)
        return answer({"model": name, "outputs": y})

    @app.post("/v1/models/{name}/sessions")
    async def open_stream(name: str) -> Response:
        session_id = secrets.token_urlsafe(16)
        streams[session_id] = Stream(np.zeros((layers, 1, hidden), dtype=np.float32), 0)
        return answer({"session_id": session_id, "model": name, "seq": 0}, 201)

    @app.post("/v1/sessions/{session_id}/steps")
    async def step(session_id: str, request: Request) -> Response:
        status, payload = apply_steps(session_id, orjson.loads(await request.body()))
        return answer(payload, status)

    @app.websocket("/v1/sessions/{session_id}/stream")
    async def stream(websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        # greet like rnnserve does (the session and its seq), so both speak one protocol
        known = streams.get(session_id)
        greeting = {"session_id": session_id, "seq": known.seq if known else None}
        await websocket.send_text(orjson.dumps(greeting).decode())
        try:
            while True:
                _, payload = apply_steps(session_id, orjson.loads(await websocket.receive_text()))
                await websocket.send_text(orjson.dumps(payload, option=DUMP).decode())
        except WebSocketDisconnect:
            return

    return app


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    serve(create_app(arguments.model), arguments)
