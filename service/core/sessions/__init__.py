"""Session storage: the record, the store contract, the embedded memory store (Redis beside it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from service.core.sessions.memory import MemorySessionStore
from service.core.sessions.record import SessionRecord
from service.core.sessions.store import SessionStore
from service.errors import StoreUnavailableError
from service.metrics import Metrics
from service.settings import MEMORY_STORE, Settings

__all__ = [
    "MemorySessionStore",
    "SessionRecord",
    "SessionStore",
    "log_sessions_on_exit",
    "open_store",
]

log = logging.getLogger(__name__)


def open_store(
    settings: Settings, metrics: Metrics, *, clock: Callable[[], float] = time.time
) -> SessionStore:
    """The store named by `settings.session_store`: `memory` (on `clock`), or a Redis URL
    (Redis expires keys on its own clock)."""
    if settings.session_store == MEMORY_STORE:
        return MemorySessionStore(
            max_sessions=settings.max_sessions,
            max_sessions_per_owner=settings.max_sessions_per_key,
            metrics=metrics,
            clock=clock,
        )
    # imported here: the redis package is the optional [redis] extra (settings checked it)
    from service.core.sessions.redis_store import redis_store_from

    return redis_store_from(
        settings.session_store,
        max_sessions=settings.max_sessions,
        max_sessions_per_owner=settings.max_sessions_per_key,
        timeout_s=settings.store_timeout_s,
        metrics=metrics,
    )


async def log_sessions_on_exit(store: SessionStore) -> None:
    """Say at shutdown what becomes of the sessions: lost with this process, or kept in Redis."""
    try:
        live: int | str = await store.count()
    except StoreUnavailableError:
        live = "unknown: the store does not answer"
    if isinstance(store, MemorySessionStore):
        log.log(
            logging.WARNING if live else logging.INFO,
            "shutting down: %s in-memory sessions are lost (the memory store lives in this "
            "process; RNNSERVE_SESSION_STORE=redis://... keeps sessions across restarts)",
            live,
        )
    else:
        log.info(
            "shutting down: sessions are kept in the shared store (%s live) and continue "
            "on any replica",
            live,
        )
