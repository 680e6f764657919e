"""What the client returns: frozen records with the v1 JSON names (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# a session's or sequence's state as v1 JSON: {"h": [[...]], "c": [[...]]}, [rows][width] each
State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model version as `GET /v1/models` lists it; `card` is the model card (format 2)."""

    name: str
    version: int
    status: str
    reason: str | None
    provider: str | None
    card: dict[str, Any] | None
    spec: dict[str, Any] | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelInfo:
        """Read one entry of the listing or the body of `GET /v1/models/{name}`."""
        return cls(
            name=body["name"],
            version=body["version"],
            status=body["status"],
            reason=body.get("reason"),
            provider=body.get("provider"),
            card=body.get("card"),
            spec=body.get("spec"),
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """`POST /v1/models/{name}/predict`: per-sequence outputs, labels and states when asked."""

    model: str
    version: int
    outputs: list[Any]
    labels: list[str] | None = None
    state: list[State] | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Prediction:
        """Read a predict answer."""
        return cls(
            model=body["model"],
            version=body["version"],
            outputs=body["outputs"],
            labels=body.get("labels"),
            state=body.get("state"),
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as opening, resetting, `GET /v1/sessions/{id}` and a stream's greeting show it."""

    session_id: str
    model: str
    version: int
    seq: int
    created_at: str
    expires_at: str
    ttl_s: float

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SessionInfo:
        """Read a session description."""
        return cls(
            session_id=body["session_id"],
            model=body["model"],
            version=body["version"],
            seq=body["seq"],
            created_at=body["created_at"],
            expires_at=body["expires_at"],
            ttl_s=float(body["ttl_s"]),
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    """The answer to k steps: one output per step, and the next seq the session expects."""

    session_id: str
    seq: int
    outputs: list[Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StepResult:
        """Read a step answer (REST or WebSocket)."""
        return cls(session_id=body["session_id"], seq=body["seq"], outputs=body["outputs"])


@dataclass(frozen=True, slots=True)
class SessionState:
    """`GET /v1/sessions/{id}/state`: `state` can open or reset another session."""

    session_id: str
    model: str
    version: int
    seq: int
    state: State = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SessionState:
        """Read an exported state."""
        return cls(
            session_id=body["session_id"],
            model=body["model"],
            version=body["version"],
            seq=body["seq"],
            state=body["state"],
        )
