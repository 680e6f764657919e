"""`GRPCInferenceService` over the V2 core: decode protobuf, call `adapter`, encode.

Same engine, batchers, sessions and key check as HTTP: with API keys on, every call but
ServerLive and ServerReady needs metadata `authorization: Bearer <key>` (or `x-api-key`), and
the key's fingerprint owns the sequences it starts. Core errors become status codes through
one table (`service.edges.grpc.errors`); inside ModelStreamInfer they go in-band as `error_message`
and the stream continues.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from service.edges.grpc import adapter
from service.edges.grpc.codec import (
    FINAL_RESPONSE,
    decode_infer_request,
    encode_infer_response,
    wants_final_flag,
)
from service.edges.grpc.errors import code_for, retry_after_metadata
from service.edges.keys import identify_key
from service.engine import Engine
from service.errors import InvalidInputError, NotSupportedError, RnnServeError, UnauthorizedError

log = logging.getLogger(__name__)

# requests of one stream in flight at once; the reader waits beyond that (back-pressure)
MAX_STREAM_IN_FLIGHT = 1024

Handler = Callable[..., Awaitable[Any]]


def unary(handler: Handler) -> Handler:
    """Map core errors to status codes; anything else is logged and answered INTERNAL."""

    @functools.wraps(handler)
    async def call(self: InferenceServicer, request: Any, context: Any) -> Any:
        try:
            return await handler(self, request, context)
        except RnnServeError as exc:
            self._engine.metrics.count_refusal(exc)
            await context.abort(code_for(exc), exc.message, retry_after_metadata(exc))
        except Exception:
            log.exception("unhandled error in gRPC %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return call


def _refuse(extension: str) -> Handler:
    async def refuse(self: InferenceServicer, request: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"the {extension} extension is not supported by rnnserve",
        )

    return refuse


class InferenceServicer:
    """The RPCs of `inference.GRPCInferenceService`, registered by name."""

    def __init__(self, engine: Engine, *, server_version: str, keys: Sequence[bytes]) -> None:
        self._engine = engine
        self._version = server_version
        self._keys = list(keys)

    def _owner(self, context: Any) -> str | None:
        """The key fingerprint of the caller; UnauthorizedError without a valid key."""
        if not self._keys:
            return None
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        owner = identify_key(metadata.get("authorization"), metadata.get("x-api-key"), self._keys)
        if owner is None:
            raise UnauthorizedError(
                "a valid API key is required (metadata authorization: Bearer <key>)"
            )
        return owner

    async def ServerLive(self, request: Any, context: Any) -> Any:
        """Live as long as the loop runs."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        """Ready once the repository is loaded."""
        return pb.ServerReadyResponse(ready=self._engine.ready)

    @unary
    async def ModelReady(self, request: Any, context: Any) -> Any:
        """False for an unknown or unavailable version, as Triton answers."""
        self._owner(context)
        try:
            adapter.resolve_model(self._engine, request.name, request.version)
        except RnnServeError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @unary
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        """Name, version, extensions."""
        self._owner(context)
        return json_format.ParseDict(
            adapter.server_metadata(self._version), pb.ServerMetadataResponse()
        )

    @unary
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        """Inputs and outputs with datatypes and batch-first shapes."""
        self._owner(context)
        meta = adapter.model_metadata(self._engine, request.name, request.version)
        return json_format.ParseDict(meta, pb.ModelMetadataResponse())

    @unary
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        """The same configuration as `GET /v2/models/{m}/config`, as a `ModelConfig`."""
        self._owner(context)
        config = adapter.configuration(self._engine, request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, mc.ModelConfig()))

    @unary
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        """The same statistics as `GET /v2/models/stats` and friends."""
        self._owner(context)
        stats = adapter.statistics(self._engine, request.name, request.version)
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    @unary
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        """Every model version and its state (read-only)."""
        self._owner(context)
        if request.repository_name:
            raise NotSupportedError("rnnserve serves one model repository; leave its name empty")
        models = adapter.index(self._engine, ready_only=request.ready)
        return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())

    @unary
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        """Serve the model's versions found on disk now (the HTTP load route's call)."""
        self._owner(context)
        self._plain_repository_request(request, "load")
        await adapter.load(self._engine, request.model_name)
        return pb.RepositoryModelLoadResponse()

    @unary
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        """Stop serving the model (the HTTP unload route's call)."""
        self._owner(context)
        self._plain_repository_request(request, "unload")
        await adapter.unload(self._engine, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @staticmethod
    def _plain_repository_request(request: Any, action: str) -> None:
        if request.repository_name:
            raise NotSupportedError("rnnserve serves one model repository; leave its name empty")
        if len(request.parameters):
            raise InvalidInputError(
                f"repository {action} parameters are not supported: {sorted(request.parameters)}"
            )

    @unary
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """One infer call: batched, or a step of a sequence."""
        return await self._infer(request, self._owner(context))

    async def _infer(self, request: Any, owner: str | None) -> Any:
        model, specs = adapter.resolve_model(
            self._engine, request.model_name, request.model_version
        )
        decoded = decode_infer_request(request, inputs=specs.inputs, outputs=specs.outputs)
        answer = await adapter.run_v2_infer(
            self._engine, model=model, version=request.model_version, request=decoded, owner=owner
        )
        return encode_infer_response(
            model_name=answer.model_name,
            model_version=answer.model_version,
            request_id=answer.id,
            outputs=answer.outputs,
            final_flag=wants_final_flag(request),
        )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Triton's bidirectional stream: answers in completion order, each sequence in order."""
        owner = None
        try:
            owner = self._owner(context)
        except UnauthorizedError as exc:
            await context.abort(code_for(exc), exc.message)
        stream = _Stream(self, owner)
        reader = asyncio.create_task(stream.read(request_iterator))
        try:
            while True:
                response = await stream.responses.get()
                if response is None:
                    break
                yield response
        finally:
            reader.cancel()
            await stream.cancel()

    async def answer_in_stream(self, request: Any, owner: str | None) -> Any:
        """One stream request: its answer, or its error in-band."""
        try:
            return pb.ModelStreamInferResponse(infer_response=await self._infer(request, owner))
        except RnnServeError as exc:
            self._engine.metrics.count_refusal(exc)
            message = exc.message
        except Exception:
            log.exception("unhandled error in gRPC ModelStreamInfer")
            message = "internal error"
        failed = pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        )
        if wants_final_flag(request):
            failed.parameters[FINAL_RESPONSE].bool_param = True
        return pb.ModelStreamInferResponse(error_message=message, infer_response=failed)

    SystemSharedMemoryStatus = _refuse("system shared memory")
    SystemSharedMemoryRegister = _refuse("system shared memory")
    SystemSharedMemoryUnregister = _refuse("system shared memory")
    CudaSharedMemoryStatus = _refuse("CUDA shared memory")
    CudaSharedMemoryRegister = _refuse("CUDA shared memory")
    CudaSharedMemoryUnregister = _refuse("CUDA shared memory")
    TraceSetting = _refuse("trace")
    LogSettings = _refuse("logging")


class _Stream:
    """One ModelStreamInfer call: requests run concurrently, those of a sequence one by one."""

    def __init__(self, servicer: InferenceServicer, owner: str | None) -> None:
        self._servicer = servicer
        self._owner = owner
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self._slots = asyncio.Semaphore(MAX_STREAM_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        # the last task of each live sequence: the next request of that sequence waits on it
        self._tails: dict[str, asyncio.Task[None]] = {}

    async def read(self, requests: AsyncIterator[Any]) -> None:
        """Schedule every request, then signal the end once all have answered."""
        try:
            async for request in requests:
                await self._slots.acquire()
                key = _sequence_key(request)
                previous = self._tails.get(key) if key else None
                task = asyncio.create_task(self._run(request, previous))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                if key:
                    self._tails[key] = task
                    task.add_done_callback(functools.partial(self._forget, key))
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        except grpc.RpcError as exc:
            # the client went away mid-stream: nothing is left to answer
            log.info("gRPC stream ended by the client: %s", exc)
        finally:
            self.responses.put_nowait(None)

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _run(self, request: Any, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            response = await self._servicer.answer_in_stream(request, self._owner)
            self.responses.put_nowait(response)
        finally:
            self._slots.release()

    async def cancel(self) -> None:
        """The client went away: stop what is still running."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _sequence_key(request: Any) -> str:
    parameter = request.parameters.get("sequence_id")
    if parameter is None:
        return ""
    which = parameter.WhichOneof("parameter_choice")
    value = getattr(parameter, which) if which else 0
    if value in (0, ""):
        return ""
    return f"{request.model_name}:{which}:{value}"
