"""A loopback TCP proxy that loses the server's answers on purpose: a fault injector for clients.

Everything the client sends reaches the server; every `drop_every`-th chunk the server sends
back is not delivered: the proxy closes that connection instead, or with `stall=True` keeps it
open and silent until the client gives up (a timeout). Either way the server applied the
request but the client never hears the answer, the case a retrying client must not double.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType


class DroppingProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, dropping answers as it goes."""

    def __init__(self, upstream_port: int, *, drop_every: int, stall: bool = False) -> None:
        self.upstream_port = upstream_port
        self.drop_every = drop_every
        self.stall = stall
        self.port = 0
        self.chunks = 0
        self.drops = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for handler in self._handlers:
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        to_server = asyncio.create_task(self._pump(reader, up_writer))
        try:
            while chunk := await up_reader.read(65536):
                self.chunks += 1
                if self.chunks % self.drop_every == 0:
                    self.drops += 1
                    if self.stall:
                        await to_server  # silent until the client closes its end
                    break
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            to_server.cancel()
            for stream in (writer, up_writer):
                stream.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
