"""The KServe V2 gRPC protocol and Triton's ModelStreamInfer, a thin edge over the V2 core.

Messages are tritonclient's generated `service_pb2` / `service_pb2_grpc` (the `[grpc]` extra).
The server runs on the HTTP app's event loop, started and stopped in its lifespan, when
`RNNSERVE_GRPC_PORT` is set.
"""
