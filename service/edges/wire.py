"""What every edge reads the same way: version parameters, JSON objects."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import InvalidInputError


def parse_version(raw: str | None) -> int | None:
    """A model version from a query parameter or path segment: a positive integer, or None.

    Every route answers the same 400 for anything else (v1, V2 and the WebSocket alike).
    """
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidInputError(f"version must be a positive integer, got {raw!r}")
    return int(raw)


def require_object(payload: Any, what: str) -> dict[str, Any]:
    """The top level of every JSON body (and of each V2 tensor) is an object."""
    if not isinstance(payload, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return payload


def dump_json(payload: Any) -> bytes:
    """Serialise an answer; numpy arrays go straight through orjson."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
