"""The app in process: settings for tests, an httpx client, and WebSockets over ASGI.

httpx's ASGI transport speaks HTTP only, so `AsgiWebSocket` drives the app's websocket
routes directly with ASGI messages; REST and WebSocket calls then share one app and store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import FastAPI

from service.app import create_app
from service.engine import Engine
from service.settings import Settings


class WebSocketClosedError(Exception):
    """The server closed (or refused) the socket."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class AsgiWebSocket:
    """One WebSocket connection to an ASGI app, in process."""

    def __init__(self, app: FastAPI, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self._app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"rnnserve")]
            + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": ("127.0.0.1", 50000),
            "server": ("rnnserve", 80),
            "subprotocols": [],
        }
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsgiWebSocket:
        self._task = asyncio.create_task(
            self._app(self._scope, self._to_app.get, self._from_app.put)
        )
        await self._to_app.put({"type": "websocket.connect"})
        message = await self._from_app.get()
        if message["type"] == "websocket.close":
            raise WebSocketClosedError(message.get("code", 1000), message.get("reason", ""))
        assert message["type"] == "websocket.accept", message
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    async def send_json(self, payload: Any) -> None:
        """A text frame holding JSON."""
        await self.send_text(orjson.dumps(payload).decode())

    async def send_text(self, text: str) -> None:
        """A raw text frame."""
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """A raw binary frame."""
        await self._to_app.put({"type": "websocket.receive", "bytes": data})

    async def receive_text(self) -> str:
        """The next text frame; WebSocketClosedError when the server closed instead."""
        message = await asyncio.wait_for(self._from_app.get(), 30)
        if message["type"] == "websocket.close":
            raise WebSocketClosedError(message.get("code", 1000), message.get("reason", ""))
        assert message["type"] == "websocket.send", message
        text: str = message["text"]
        return text

    async def receive_json(self) -> Any:
        """The next frame, parsed."""
        return orjson.loads(await self.receive_text())

    async def receive_bytes(self) -> bytes:
        """The next binary frame; a text frame fails the test with its text."""
        message = await asyncio.wait_for(self._from_app.get(), 30)
        if message["type"] == "websocket.close":
            raise WebSocketClosedError(message.get("code", 1000), message.get("reason", ""))
        assert message.get("bytes") is not None, message.get("text")
        data: bytes = message["bytes"]
        return data


@dataclass
class Harness:
    """An app with its lifespan running, plus ways to talk to it."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.state.engine
        return engine

    def ws(self, url: str, headers: dict[str, str] | None = None) -> AsgiWebSocket:
        """A WebSocket to `url` (path and query), used as `async with`."""
        return AsgiWebSocket(self.app, url, headers)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample from the app's Prometheus registry (0 when absent)."""
        value = self.engine.metrics.registry.get_sample_value(name, labels or {})
        return value or 0.0


@asynccontextmanager
async def running_app(
    settings: Settings, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Harness]:
    """Start the app (lifespan on) and hand out a harness over it."""
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rnnserve") as client:
            yield Harness(app, client)


def cpu_settings(repository: Path, **overrides: Any) -> Settings:
    """Settings for tests: CPU provider, no access log noise."""
    values: dict[str, Any] = {
        "repository": repository,
        "providers": ["CPUExecutionProvider"],
        "access_log": False,
        **overrides,
    }
    return Settings(**values)


async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in process, lifespan on."""
    async with running_app(settings) as harness:
        yield harness.client
