"""A minimal WebSocket client on a raw asyncio protocol, for the stream and mux loads.

The `websockets` client costs ~60 us of CPU per step (send + receive) on the load
generator's core, which caps a closed loop near 15k messages/s against a server answering
constants; this one does only what a load needs: the opening handshake, unfragmented
client frames (masked with a zero key: legal, and the payload goes out as is), reading
server frames (text, binary, ping answered, close). The correctness checks keep using
`websockets`, an independent implementation.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections import deque
from typing import cast
from urllib.parse import urlsplit

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\x00\x00\x00\x00"


class HandshakeError(ConnectionError):
    """The server did not switch protocols."""


def client_frame(payload: bytes, opcode: int) -> bytes:
    """One final, masked (zero key) frame."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + ZERO_MASK + payload


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshaken = False
        self.messages: deque[tuple[int, bytes]] = deque()
        self.partial: list[bytes] = []
        self.partial_opcode = 0
        self.waiter: asyncio.Future[None] | None = None
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionResetError("the server closed the connection")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.handshaken:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.closed = HandshakeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                self._wake()
                return
            self.handshaken = True
            self._wake()
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            size, offset = second & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, offset = struct.unpack_from("!H", buffer, 2)[0], 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < offset + size:
                return
            payload = bytes(buffer[offset : offset + size])
            del buffer[: offset + size]
            self._message(first & 0x80, first & 0x0F, payload)

    def _message(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == PING and self.transport is not None:
            self.transport.write(client_frame(payload, PONG))
            return
        if opcode in (PONG,):
            return
        if opcode == CLOSE:
            self.closed = ConnectionResetError(f"close frame {payload[:2].hex()}")
            if self.transport is not None:
                self.transport.close()
            self._wake()
            return
        if opcode:
            self.partial_opcode = opcode
        self.partial.append(payload)
        if fin:
            data = self.partial[0] if len(self.partial) == 1 else b"".join(self.partial)
            self.partial = []
            self.messages.append((self.partial_opcode, data))
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter


class RawWebSocket:
    """`send` / `recv` / `close` like `websockets`' client, for the subset the loads use."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    async def send(self, message: str | bytes, text: bool | None = None) -> None:
        """One frame: text for str (or text=True), binary otherwise."""
        data = message.encode() if isinstance(message, str) else message
        is_text = isinstance(message, str) if text is None else text
        transport = self._protocol.transport
        if self._protocol.closed is not None or transport is None:
            raise ConnectionResetError("the connection is closed")
        transport.write(client_frame(data, TEXT if is_text else BINARY))

    async def recv(self, decode: bool | None = None) -> str | bytes:
        """The next message: str for text frames (unless decode=False), bytes for binary."""
        protocol = self._protocol
        while not protocol.messages:
            if protocol.closed is not None:
                raise protocol.closed
            await protocol.wait()
        opcode, data = protocol.messages.popleft()
        if opcode == TEXT and decode is not False:
            return data.decode()
        return data

    async def close(self) -> None:
        """Send a close frame and drop the connection."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(client_frame(struct.pack("!H", 1000), CLOSE))
            transport.close()


async def raw_connect(url: str) -> RawWebSocket:
    """Connect and finish the opening handshake (HandshakeError when refused)."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Protocol, parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert protocol.transport is not None
    protocol.transport.write(request.encode())
    while not protocol.handshaken:
        if protocol.closed is not None:
            protocol.transport.close()
            raise protocol.closed
        await protocol.wait()
    return RawWebSocket(protocol)
