"""Streaming sessions: the store contract, the embedded memory store, the session manager."""

from __future__ import annotations

from service.errors import RnnServeError
from service.metrics import Metrics
from service.sessions.manager import SessionManager
from service.sessions.memory import MemorySessionStore
from service.sessions.record import SessionRecord
from service.sessions.store import SessionStore
from service.settings import Settings

__all__ = ["MemorySessionStore", "SessionManager", "SessionRecord", "SessionStore", "open_store"]


def open_store(settings: Settings, metrics: Metrics) -> SessionStore:
    """The store named by `settings.session_store`."""
    if settings.session_store == "memory":
        return MemorySessionStore(
            max_sessions=settings.max_sessions,
            max_sessions_per_owner=settings.max_sessions_per_key,
            metrics=metrics,
        )
    raise RnnServeError(f"unknown session store {settings.session_store!r}; use 'memory'")
