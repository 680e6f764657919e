"""Typed Python client for rnnserve (sync and asyncio); needs only httpx and websockets.

    from rnnserve_client import Client
    with Client("http://127.0.0.1:8000") as client, client.open("co2-forecaster") as session:
        print(session.step([[315.7]]).outputs)

V2 (Open Inference Protocol) is left to tritonclient, which speaks it unchanged.
"""

from rnnserve_client._wire import Retry
from rnnserve_client.aio import AsyncClient, AsyncSession, Stream
from rnnserve_client.errors import (
    ConnectionLostError,
    InvalidInputError,
    LimitExceededError,
    ModelNotFoundError,
    NotFoundError,
    NotStreamableError,
    RequestValidationError,
    RetryLaterError,
    RnnServeError,
    ServerError,
    SessionConflictError,
    SessionNotFoundError,
    StreamClosedError,
    UnauthorizedError,
    UnavailableError,
)
from rnnserve_client.mux import MuxResult, MuxSession, MuxStatus, MuxStream
from rnnserve_client.sync import Client, Session
from rnnserve_client.types import ModelInfo, Prediction, SessionInfo, SessionState, StepResult

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "Client",
    "ConnectionLostError",
    "InvalidInputError",
    "LimitExceededError",
    "ModelInfo",
    "ModelNotFoundError",
    "MuxResult",
    "MuxSession",
    "MuxStatus",
    "MuxStream",
    "NotFoundError",
    "NotStreamableError",
    "Prediction",
    "RequestValidationError",
    "Retry",
    "RetryLaterError",
    "RnnServeError",
    "ServerError",
    "Session",
    "SessionConflictError",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionState",
    "StepResult",
    "Stream",
    "StreamClosedError",
    "UnauthorizedError",
    "UnavailableError",
]
