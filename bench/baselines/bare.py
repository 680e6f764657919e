"""(c) The framework ceiling: reads the same messages and answers a constant.

No parsing, no model: whatever rnnserve does on top of FastAPI + uvicorn costs the
difference between this server and rnnserve. It also speaks the session routes the stream
loads use (open, a WebSocket step stream, the mux binary stream) with constant answers, so
the load generators' own ceiling is measured against it (bench `loadgen_ceiling`).
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from starlette.responses import Response

from bench.baselines.common import parse_args, serve

ANSWER = b'{"model":"bare","outputs":[]}'
# the size of a real single-step answer: the session, its seq and 8 outputs
STEP_ANSWER = orjson.dumps({"session_id": "b" * 22, "seq": 1, "outputs": [[0.123456] * 8]})
MUX_HEADER = struct.Struct("<4sII")
OUTPUTS = 8


def mux_answer(frame: bytes) -> bytes:
    """Every record applied, seq + 1, zero outputs (one row per step) — no state, no model."""
    magic, request_id, n = MUX_HEADER.unpack_from(frame)
    seq = np.frombuffer(frame, "<u8", n, MUX_HEADER.size + 4 * n) + np.uint64(1)
    rows = int(np.frombuffer(frame, "<u4", n, MUX_HEADER.size + 12 * n).sum())
    return b"".join(
        (
            MUX_HEADER.pack(magic, request_id, n),
            bytes(2 * n),
            seq.astype("<u8").tobytes(),
            bytes(4 * OUTPUTS * rows),
        )
    )


def create_app(_model_path: Any) -> FastAPI:
    """The app; the model path is accepted (and ignored) like the other baselines'."""
    app = FastAPI()

    @app.get("/health/ready")
    async def ready() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/json")

    @app.post("/v1/models/{name}/sessions")
    async def open_stream(name: str) -> Response:
        body = orjson.dumps({"session_id": secrets.token_urlsafe(16), "model": name, "seq": 0})
        return Response(body, 201, media_type="application/json")

    @app.delete("/v1/sessions/{session_id}")
    async def delete_stream(session_id: str) -> Response:
        return Response(status_code=204)

    @app.websocket("/v1/sessions/{session_id}/stream")
    async def stream(websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        await websocket.send_text(orjson.dumps({"session_id": session_id, "seq": 0}).decode())
        try:
            while True:
                await websocket.receive_text()
                await websocket.send_text(STEP_ANSWER.decode())
        except WebSocketDisconnect:
            return

    @app.websocket("/v1/models/{name}/mux")
    async def mux(websocket: WebSocket, name: str) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(mux_answer(message["bytes"]))
                    continue
                control = orjson.loads(message["text"])
                if control.get("op") == "open":
                    opened = {"op": "opened", "slot": control["slot"], "seq": 0}
                    opened["session_id"] = secrets.token_urlsafe(16)
                    await websocket.send_text(orjson.dumps(opened).decode())
        except WebSocketDisconnect:
            return

    return app


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    serve(create_app(arguments.model), arguments)
