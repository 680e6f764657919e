"""The embedded session store: sessions in the server process, good for one replica."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.core.sessions.record import SessionRecord
from service.core.sessions.table import SessionTable, TableKey, shapes_of
from service.errors import TooManySessionsError
from service.metrics import Metrics

MIN_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """Where an alias points, and until when."""

    session_id: str
    expires_at: float


class MemorySessionStore:
    """Sessions in this process, one column-wise SessionTable per model version.

    Expired sessions are dropped on access and by `sweep_expired` (one vectorised pass over
    each table). Nothing here awaits, so each method runs atomically on the event loop:
    compare-and-set needs no lock. Besides the SessionStore contract it offers its tables to
    the batched step path (`table_of`, `locate`): a batch of steps then reads and writes its
    sessions with a few numpy operations instead of a record each.
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        max_sessions_per_owner: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tables: dict[tuple[str, int], SessionTable] = {}
        self._where: dict[str, SessionTable] = {}
        self._per_owner: dict[str, int] = {}
        self._aliases: dict[str, AliasEntry] = {}
        self._max_sessions = max_sessions
        self._max_per_owner = max_sessions_per_owner
        self._metrics = metrics
        self._clock = clock

    async def create(self, record: SessionRecord) -> None:
        """Store a new record, or raise TooManySessionsError at a cap."""
        if len(self._where) >= self._max_sessions:
            self._sweep()
            if len(self._where) >= self._max_sessions:
                self._reject("the server holds its maximum of sessions", self._max_sessions)
        owner = record.owner
        if owner is not None and self._per_owner.get(owner, 0) >= self._max_per_owner:
            self._sweep()
            if self._per_owner.get(owner, 0) >= self._max_per_owner:
                self._reject("this API key holds its maximum of sessions", self._max_per_owner)
        table = self._table_for(record)
        table.insert(record)
        self._where[record.session_id] = table
        if owner is not None:
            self._per_owner[owner] = self._per_owner.get(owner, 0) + 1

    def _table_for(self, record: SessionRecord) -> SessionTable:
        key = TableKey(record.model, record.version, shapes_of(record.state))
        table = self._tables.get((key.model, key.version))
        if table is None:
            table = self._tables[(key.model, key.version)] = SessionTable(key)
        elif table.key != key:
            raise ValueError(f"session state shapes {key.shapes} differ from {table.key}")
        return table

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live record or None."""
        table, row = self._live(session_id)
        return None if table is None else table.record(row)

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        """The live records or None, in order."""
        return [await self.get(session_id) for session_id in session_ids]

    async def compare_and_set(self, record: SessionRecord, *, expected_seq: int) -> bool:
        """Write `record` if the stored seq is `expected_seq`."""
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
        table, row = self._live(record.session_id)
        if table is None or table.seq[row] != expected_seq:
            return False
        table.write(row, record)
        return True

    def table_of(self, model: str, version: int) -> SessionTable | None:
        """The sessions of a model version, column-wise (None: no session of it yet)."""
        return self._tables.get((model, version))

    def locate(
        self, table: SessionTable, session_ids: Sequence[str], owner: str | None
    ) -> npt.NDArray[np.int64]:
        """Each live session's row in `table`, -1 for one that is missing, expired (dropped
        now) or another owner's."""
        rows = np.fromiter((table.rows.get(s, -1) for s in session_ids), np.int64)
        found = rows >= 0
        if not found.any():
            return rows
        expired = found & (table.expires[np.maximum(rows, 0)] <= self._clock())
        for index in np.flatnonzero(expired).tolist():
            self._expire(session_ids[index])
        rows[expired] = -1
        owners = table.owners
        for index in np.flatnonzero(rows >= 0).tolist():
            if owners[rows[index]] != owner:
                rows[index] = -1
        return rows

    async def delete(self, session_id: str) -> bool:
        """Remove a live record."""
        table, _ = self._live(session_id)
        if table is None:
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
        """Live sessions (expired ones still held are swept first)."""
        self._sweep()
        return len(self._where)

    async def sweep_expired(self) -> int:
        """Drop every expired record; returns how many."""
        return self._sweep()

    async def ping(self) -> None:
        """Always answers: the store is this process."""

    async def close(self) -> None:
        """Forget every session."""
        self._tables.clear()
        self._where.clear()
        self._per_owner.clear()

    def _live(self, session_id: str) -> tuple[SessionTable | None, int]:
        table = self._where.get(session_id)
        if table is None:
            return None, -1
        row = table.rows[session_id]
        if table.expires[row] <= self._clock():
            self._expire(session_id)
            return None, -1
        return table, row

    def _expire(self, session_id: str) -> None:
        self._drop(session_id)
        self._metrics.session_events.labels("expired").inc()

    def _drop(self, session_id: str) -> None:
        table = self._where.pop(session_id)
        owner = table.owners[table.rows[session_id]]
        table.remove(session_id)
        if owner is not None:
            left = self._per_owner[owner] - 1
            if left:
                self._per_owner[owner] = left
            else:
                del self._per_owner[owner]

    def _sweep(self) -> int:
        now = self._clock()
        expired = [s for table in self._tables.values() for s in table.expired_rows(now)]
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
        # the next record to expire frees a slot: a fair hint for when to come back
        expiries = [e for t in self._tables.values() if (e := t.earliest_expiry()) is not None]
        wait_s = min(expiries) - self._clock() if expiries else MIN_RETRY_AFTER_S
        raise TooManySessionsError(
            f"{message} ({limit}); close sessions you no longer need",
            retry_after_s=max(MIN_RETRY_AFTER_S, wait_s),
            detail={"limit": limit},
        )
