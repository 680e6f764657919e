"""Bodies on the wire: compressed requests, the JSON header's length, and framed answers.

With the binary tensor extension a body is a JSON header of `Inference-Header-Content-Length`
bytes followed by raw tensor bytes; answers use the same framing for binary outputs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.edges.v2.codec import NUMPY_DTYPES, Datatype, OutputTensor
from service.edges.wire import dump_json
from service.errors import InvalidInputError, LimitExceededError


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """The answer's bytes; `header_length` is set when binary tensors follow the JSON."""

    body: bytes
    header_length: int | None

    @property
    def content_type(self) -> str:
        """What Triton sends: octet-stream once raw bytes follow the header."""
        return "application/json" if self.header_length is None else "application/octet-stream"


def decompress(body: bytes, encoding: str | None, *, limit_bytes: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate` (tritonclient's request compression), bounded."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.strip().lower())
    if wbits is None:
        raise InvalidInputError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits)
    try:
        # one byte over the limit is enough to know; a zip bomb never inflates further
        plain = inflater.decompress(body, limit_bytes + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"the body is not valid {encoding}: {exc}") from None
    if len(plain) > limit_bytes:
        raise LimitExceededError(
            f"the decompressed body is over the limit of {limit_bytes} bytes", limit="body_bytes"
        )
    if not inflater.eof:
        raise InvalidInputError(f"the {encoding} body is truncated")
    return plain


def parse_header_length(raw: str | None, body_size: int) -> int | None:
    """The `Inference-Header-Content-Length` value, checked against the body."""
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidInputError(f"Inference-Header-Content-Length must be an integer, got {raw!r}")
    length = int(text)
    if not 0 < length <= body_size:
        raise InvalidInputError(
            f"Inference-Header-Content-Length {length} is outside the body of {body_size} bytes"
        )
    return length


def bytes_tensor(array: np.ndarray[Any, Any]) -> bytes:
    """A BYTES tensor in the binary extension: each element's uint32 LE length, then its bytes."""
    parts: list[bytes] = []
    for item in array.ravel():
        parts += [len(item).to_bytes(4, "little"), item]
    return b"".join(parts)


def encode_response(header: dict[str, Any], outputs: list[OutputTensor]) -> EncodedResponse:
    """The JSON answer, with binary outputs' bytes appended after it in output order."""
    rendered: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in outputs:
        array = np.ascontiguousarray(out.array, NUMPY_DTYPES[out.datatype])
        tensor: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype.value,
            "shape": list(array.shape),
        }
        if out.binary:
            raw = bytes_tensor(array) if out.datatype is Datatype.BYTES else array.tobytes()
            chunks.append(raw)
            tensor["parameters"] = {"binary_data_size": len(raw)}
        elif out.datatype is Datatype.BYTES:
            tensor["data"] = [item.decode() for item in array.ravel()]
        else:
            tensor["data"] = array.ravel()
        rendered.append(tensor)
    head = dump_json({**header, "outputs": rendered})
    if not chunks:
        return EncodedResponse(head, None)
    return EncodedResponse(b"".join([head, *chunks]), len(head))
