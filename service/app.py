"""The app factory: one Settings in, one FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import models, ops, sessions, stream, triton, v2
from service.api.errors import install_error_handlers
from service.api.middleware import ApiKeyMiddleware, RequestContextMiddleware
from service.engine import Engine
from service.repository import Repository
from service.settings import Settings

DESCRIPTION = """Serves PyTorch RNN, LSTM and GRU models exported to ONNX: exact variable-length
batching for predictions, and stateful streaming sessions that carry the hidden state."""


def create_app(settings: Settings, *, repository: Repository | None = None) -> FastAPI:
    """Build the app; the engine starts in the lifespan (pass `repository` to skip loading)."""
    engine = Engine(settings, repository=repository)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        grpc_server = None
        try:
            if settings.grpc_port is not None:
                # imported here: grpcio and the Triton protobufs are the optional [grpc] extra
                from service.grpc.server import start_grpc

                grpc_server = await start_grpc(
                    engine, host=settings.host, port=settings.grpc_port, server_version=app.version
                )
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_grace_s)
            await engine.stop()

    app = FastAPI(title="rnnserve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.engine = engine
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(models.router)
    app.include_router(sessions.router)
    app.include_router(stream.router)
    # before v2: /v2/models/stats must not be read as a model named "stats"
    app.include_router(triton.router)
    app.include_router(v2.router)
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=[k.get_secret_value() for k in settings.api_keys])
    app.add_middleware(
        RequestContextMiddleware, metrics=engine.metrics, access_log_enabled=settings.access_log
    )
    return app
