"""A minimal keep-alive HTTP/1.1 client on asyncio streams: cheap enough to load a server.

httpx costs ~10x more CPU per request than this; a load generator that starves the server's
neighbour core measures itself. Requests are pre-encoded bytes; answers are read by
Content-Length (or chunked), nothing else is parsed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

READ_LIMIT = 1 << 24


@dataclass(frozen=True)
class Answer:
    """Status, the raw body, and the V2 binary header length when the server sent one."""

    status: int
    body: bytes
    header_length: int | None = None


def encode_request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The request's bytes, ready to write on a keep-alive connection."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: keep-alive"]
    if body or method == "POST":
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One persistent connection; reconnects on the next request after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> Answer:
        """Send one pre-encoded request and read its answer."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, limit=READ_LIMIT
            )
        assert self.reader is not None
        try:
            self.writer.write(raw)
            return await _read_answer(self.reader)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Drop the socket (a later request reconnects)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length: int | None = None
    chunked = False
    header_length: int | None = None
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"inference-header-content-length":
            header_length = int(value)
    if chunked:
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(length or 0)
    return Answer(status, body, header_length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def fetch(port: int, raw: bytes) -> Answer:
    """One request on a fresh connection (checks and probes, not load)."""
    connection = Connection(port)
    try:
        return await connection.request(raw)
    finally:
        connection.close()
