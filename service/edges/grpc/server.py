"""Start and stop the gRPC server on the running event loop (the HTTP app's lifespan)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

from service.edges.grpc.servicer import InferenceServicer
from service.engine import Engine

log = logging.getLogger(__name__)


class GrpcServer:
    """A grpc.aio server serving `InferenceServicer` on one port."""

    def __init__(self, server: Any, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give running ones `grace_s` to finish."""
        await self._server.stop(grace_s)


async def start_grpc(engine: Engine, *, host: str, port: int, server_version: str) -> GrpcServer:
    """Listen on host:port (0 picks a free port) with the engine's settings."""
    settings = engine.settings
    # messages as large as the HTTP body limit, both ways
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    keys = [k.get_secret_value().encode() for k in settings.api_keys]
    servicer = InferenceServicer(engine, server_version=server_version, keys=keys)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    log.info("gRPC listening", extra={"host": host, "port": bound})
    return GrpcServer(server, bound)
