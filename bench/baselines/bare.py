"""(c) The framework ceiling: reads the same predict body and answers a constant.

No parsing, no model: whatever rnnserve does on top of FastAPI + uvicorn costs the
difference between this server and rnnserve.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from bench.baselines.common import parse_args, serve

ANSWER = b'{"model":"bare","outputs":[]}'


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

    return app


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    serve(create_app(arguments.model), arguments)
