"""Triton's model repository index (`POST /v2/repository/index`), read-only.

Every model version found on disk with its state (`READY`, or `UNAVAILABLE` with the reason it
failed to load, or was unloaded); `{"ready": true}` keeps the ready ones only. Loading and
unloading are `service.edges.v2.triton`'s routes.
"""

from __future__ import annotations

from typing import Any

from service.core.repository import ModelStatus
from service.edges.http.codec import parse_json
from service.edges.wire import require_object
from service.engine import Engine
from service.errors import InvalidInputError

STATES = {
    ModelStatus.READY: "READY",
    ModelStatus.UNAVAILABLE: "UNAVAILABLE",
    ModelStatus.UNLOADED: "UNAVAILABLE",  # Triton's word for an unloaded model, with the reason
}


def parse_index_request(body: bytes) -> bool:
    """The `ready` flag of an index request; an empty body asks for every version."""
    if not body.strip():
        return False
    request = require_object(parse_json(body), "the repository index request")
    ready = request.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInputError("ready must be true or false")
    return ready


def repository_index(engine: Engine, *, ready_only: bool) -> list[dict[str, Any]]:
    """`[{"name", "version", "state", "reason"}]` sorted by name and version."""
    entries = sorted(engine.repository.entries(), key=lambda e: (e.name, e.version))
    return [
        {
            "name": e.name,
            "version": str(e.version),
            "state": STATES[e.status],
            "reason": e.reason or "",
        }
        for e in entries
        if not ready_only or e.status is ModelStatus.READY
    ]
