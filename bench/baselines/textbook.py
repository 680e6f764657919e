"""(a) The textbook FastAPI server: pydantic lists in, sync endpoints, JSON lists out.

What the tutorials teach: a `list[list[list[float]]]` body model, `def` endpoints (FastAPI runs
them in its thread pool), `.tolist()` answers, one onnxruntime call per request and per step,
and streaming state kept in a dict of hidden states.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bench.baselines.common import open_session, parse_args, run_model, serve, state_shape


class PredictRequest(BaseModel):
    """A batch of equal-length sequences of feature lists."""

    inputs: list[list[list[float]]]
    output: str = "all"


class StepRequest(BaseModel):
    """Steps for one session, with the index of the first one."""

    seq: int
    inputs: list[list[float]]


def create_app(model_path: Any) -> FastAPI:
    """The app over one ONNX file."""
    session = open_session(model_path)
    layers, hidden = state_shape(session)
    states: dict[str, Any] = {}
    counters: dict[str, int] = {}
    app = FastAPI()

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/models/{name}/predict")
    def predict(name: str, request: PredictRequest) -> dict[str, Any]:
        x = np.array(request.inputs, dtype=np.float32)
        h0 = np.zeros((layers, x.shape[0], hidden), dtype=np.float32)
        y, _ = run_model(session, x, h0)
        return {"model": name, "outputs": y.tolist()}

    @app.post("/v1/models/{name}/sessions", status_code=201)
    def open_stream(name: str) -> dict[str, Any]:
        session_id = secrets.token_urlsafe(16)
        states[session_id] = np.zeros((layers, 1, hidden), dtype=np.float32)
        counters[session_id] = 0
        return {"session_id": session_id, "model": name, "seq": 0}

    @app.post("/v1/sessions/{session_id}/steps")
    def step(session_id: str, request: StepRequest) -> dict[str, Any]:
        if session_id not in states:
            raise HTTPException(404, "unknown session")
        if request.seq != counters[session_id]:
            raise HTTPException(409, f"expected seq {counters[session_id]}")
        x = np.array([request.inputs], dtype=np.float32)
        y, hn = run_model(session, x, states[session_id])
        states[session_id] = hn
        counters[session_id] += len(request.inputs)
        return {"session_id": session_id, "seq": counters[session_id], "outputs": y[0].tolist()}

    return app


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    serve(create_app(arguments.model), arguments)
