"""The app factory: one Settings in, one FastAPI app out."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from service.core.repository import Repository
from service.edges import mux, ws
from service.edges.docs import install_docs
from service.edges.errors import install_error_handlers
from service.edges.http import models, ops, sessions
from service.edges.http.routes import HotRoute, install_hot_routes
from service.edges.middleware import ApiKeyMiddleware, RequestContextMiddleware
from service.edges.ui import install_ui
from service.edges.v2 import routes as v2
from service.edges.v2 import triton
from service.edges.ws_guard import KEY_RATES_STATE, KeyRates
from service.engine import Engine
from service.settings import Settings

DESCRIPTION = """Serves PyTorch recurrent models (RNN, LSTM, GRU layers and cells, as written)
exported to ONNX: exact variable-length batching for predictions, and stateful streaming
sessions that carry every recurrent state."""

HOT_ROUTES: tuple[HotRoute, ...] = (models.PREDICT, sessions.STEPS, v2.INFER, v2.INFER_PINNED)


def telemetry_config() -> TelemetryConfig:
    """FastAPI's OpenTelemetry hooks only when the environment configures OpenTelemetry.

    Left on, FastAPI asks OpenTelemetry for its providers on every request, and OpenTelemetry
    looks each one up in os.environ: ~7% of the CPU of a REST step (py-spy, bench
    streams64_rest) for a server that exports no telemetry."""
    configured = any(key.startswith("OTEL_") for key in os.environ) or (
        os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true"
    )
    if configured:
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings,
    *,
    repository: Repository | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the app; the engine starts in the lifespan (pass `repository` to skip loading;
    `clock` is the sessions' wall clock, epoch seconds, for tests to move by hand)."""
    engine = Engine(settings, repository=repository, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        grpc_server = None
        try:
            if settings.grpc_port is not None:
                # imported here: grpcio and the Triton protobufs are the optional [grpc] extra
                from service.edges.grpc.server import start_grpc

                grpc_server = await start_grpc(
                    engine, host=settings.host, port=settings.grpc_port, server_version=app.version
                )
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_grace_s)
            await engine.stop()

    app = FastAPI(
        title="rnnserve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs from local assets
        redoc_url=None,  # ReDoc has no offline build here; Swagger UI covers the docs
        telemetry=telemetry_config(),
    )
    app.state.engine = engine
    setattr(app.state, KEY_RATES_STATE, KeyRates(settings.ws_max_messages_per_s_per_key))
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(models.router)
    app.include_router(sessions.router)
    app.include_router(ws.router)
    app.include_router(mux.router)
    # before v2: /v2/models/stats must not be read as a model named "stats"
    app.include_router(triton.router)
    app.include_router(v2.router)
    install_hot_routes(app, HOT_ROUTES)
    install_docs(app, keys_required=bool(settings.api_keys))
    if settings.ui:
        install_ui(app)
    if settings.api_keys:
        app.add_middleware(ApiKeyMiddleware, keys=[k.get_secret_value() for k in settings.api_keys])
    app.add_middleware(
        RequestContextMiddleware, metrics=engine.metrics, access_log_enabled=settings.access_log
    )
    return app
