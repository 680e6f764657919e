"""The embedded session store: a dict in the server process, good for one replica."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.core.sessions.record import SessionRecord, frozen_record
from service.errors import TooManySessionsError
from service.metrics import Metrics

MIN_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """Where an alias points, and until when."""

    session_id: str
    expires_at: float


class MemorySessionStore:
    """Sessions in a dict, expired lazily on access and by `sweep_expired`.

    Every write re-inserts the record at the end of the dict, and every record's expiry is
    its last write plus the TTL, so the dict stays ordered by expiry and a sweep only looks
    at the records that actually expired. Nothing here awaits, so each method runs atomically
    on the event loop: compare-and-set needs no lock.
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        max_sessions_per_owner: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._per_owner: dict[str, int] = {}
        self._aliases: dict[str, AliasEntry] = {}
        self._max_sessions = max_sessions
        self._max_per_owner = max_sessions_per_owner
        self._metrics = metrics
        self._clock = clock

    async def create(self, record: SessionRecord) -> None:
        """Store a new record, or raise TooManySessionsError at a cap."""
        if len(self._records) >= self._max_sessions:
            self._sweep()
            if len(self._records) >= self._max_sessions:
                self._reject("the server holds its maximum of sessions", self._max_sessions)
        owner = record.owner
        if owner is not None and self._per_owner.get(owner, 0) >= self._max_per_owner:
            self._sweep()
            if self._per_owner.get(owner, 0) >= self._max_per_owner:
                self._reject("this API key holds its maximum of sessions", self._max_per_owner)
        self._records[record.session_id] = frozen_record(record)
        if owner is not None:
            self._per_owner[owner] = self._per_owner.get(owner, 0) + 1

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live record or None."""
        return self._live(session_id)

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        """The live records or None, in order."""
        return [self._live(session_id) for session_id in session_ids]

    async def compare_and_set(self, record: SessionRecord, *, expected_seq: int) -> bool:
        """Write `record` if the stored seq is `expected_seq`; moves it to the dict's end."""
        return self._compare_and_set(record, expected_seq)

    async def compare_and_set_many(
        self, records: Sequence[SessionRecord], expected_seqs: Sequence[int]
    ) -> list[bool]:
        """Each record written if its stored seq is the expected one."""
        return [
            self._compare_and_set(record, seq)
            for record, seq in zip(records, expected_seqs, strict=True)
        ]

    def _compare_and_set(self, record: SessionRecord, expected_seq: int) -> bool:
        current = self._live(record.session_id)
        if current is None or current.seq != expected_seq:
            return False
        del self._records[record.session_id]
        self._records[record.session_id] = frozen_record(record)
        return True

    async def delete(self, session_id: str) -> bool:
        """Remove a live record."""
        if self._live(session_id) is None:
            return False
        self._drop(session_id)
        return True

    async def set_alias(self, alias: str, session_id: str, *, expires_at: float) -> None:
        """Point `alias` at a session; re-inserted last, so aliases stay in expiry order."""
        self._sweep_aliases()
        self._aliases.pop(alias, None)
        self._aliases[alias] = AliasEntry(session_id, expires_at)

    async def get_alias(self, alias: str) -> str | None:
        """The session id `alias` names, or None when unset or expired."""
        entry = self._aliases.get(alias)
        if entry is None or entry.expires_at <= self._clock():
            return None
        return entry.session_id

    async def delete_alias(self, alias: str) -> None:
        """Forget `alias`."""
        self._aliases.pop(alias, None)

    async def count(self) -> int:
        """Live sessions (expired ones still in the dict are swept first)."""
        self._sweep()
        return len(self._records)

    async def sweep_expired(self) -> int:
        """Drop every expired record; returns how many."""
        return self._sweep()

    async def ping(self) -> None:
        """Always answers: the store is this process."""

    async def close(self) -> None:
        """Forget every session."""
        self._records.clear()
        self._per_owner.clear()

    def _live(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is None:
            return None
        if record.expires_at <= self._clock():
            self._drop(session_id)
            self._metrics.session_events.labels("expired").inc()
            return None
        return record

    def _drop(self, session_id: str) -> None:
        record = self._records.pop(session_id)
        if record.owner is not None:
            left = self._per_owner[record.owner] - 1
            if left:
                self._per_owner[record.owner] = left
            else:
                del self._per_owner[record.owner]

    def _sweep(self) -> int:
        now = self._clock()
        expired: list[str] = []
        for session_id, record in self._records.items():
            if record.expires_at > now:
                break
            expired.append(session_id)
        for session_id in expired:
            self._drop(session_id)
        if expired:
            self._metrics.session_events.labels("expired").inc(len(expired))
        return len(expired)

    def _sweep_aliases(self) -> None:
        # amortised on writes: expired aliases sit at the front of the dict
        now = self._clock()
        while self._aliases:
            alias, entry = next(iter(self._aliases.items()))
            if entry.expires_at > now:
                break
            del self._aliases[alias]

    def _reject(self, message: str, limit: int) -> None:
        self._metrics.session_events.labels("rejected").inc()
        # the oldest record is the next to expire: a fair hint for when a slot frees up
        oldest = next(iter(self._records.values()), None)
        wait_s = MIN_RETRY_AFTER_S if oldest is None else oldest.expires_at - self._clock()
        raise TooManySessionsError(
            f"{message} ({limit}); close sessions you no longer need",
            retry_after_s=max(MIN_RETRY_AFTER_S, wait_s),
            detail={"limit": limit},
        )
