"""The session store contract; `tests/sessions/test_store_contract.py` is its executable form.

Every implementation (memory, Redis) must pass that suite unchanged. Records are values:
a store never hands out an object through which its own copy could change, and what
`get` returns equals what was last written (state arrays bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from service.core.sessions.record import SessionRecord

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from service.core.sessions.table import SessionTable


class SessionStore(Protocol):
    """Where sessions live between steps. Every method may raise StoreUnavailableError."""

    async def create(self, record: SessionRecord) -> None:
        """Store a new record until `record.expires_at`.

        Raises TooManySessionsError when the live-session cap, or the cap of
        `record.owner` (when the owner is not None), is reached. Ids never collide
        (they carry 128 random bits), so create does not check for an existing id.
        """
        ...

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live record, or None when it never existed, was deleted or has expired."""
        ...

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        """`get` for several sessions at once, in order (one round trip for a remote store)."""
        ...

    async def compare_and_set(self, record: SessionRecord, *, expected_seq: int) -> bool:
        """Replace the stored record by `record` only if the stored `seq` equals `expected_seq`.

        Atomic: of several writers expecting the same seq, exactly one succeeds. Returns
        False, writing nothing, when the session is gone or its seq differs. A successful
        write keeps the record until the new `record.expires_at` (the idle TTL refresh).
        """
        ...

    async def compare_and_set_many(
        self, records: Sequence[SessionRecord], expected_seqs: Sequence[int]
    ) -> list[bool]:
        """`compare_and_set` for several records of different sessions, each on its own:
        one may fail while the others succeed (one round trip for a remote store)."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Remove the record; False when there was none."""
        ...

    async def set_alias(self, alias: str, session_id: str, *, expires_at: float) -> None:
        """Name a session by a client's own key (a V2 sequence id) until `expires_at`.

        Replaces any earlier target of `alias`. An alias can outlive its session, so
        readers check the session with `get`; writers refresh it with the session.
        """
        ...

    async def get_alias(self, alias: str) -> str | None:
        """The session id `alias` names, or None when it is unset or expired."""
        ...

    async def delete_alias(self, alias: str) -> None:
        """Forget `alias`; no error when it is unset."""
        ...

    async def count(self) -> int:
        """Live (unexpired) sessions."""
        ...

    async def sweep_expired(self) -> int:
        """Drop expired records now; returns how many went (stores that expire by
        themselves may return 0)."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailableError otherwise."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


@runtime_checkable
class ColumnarStore(Protocol):
    """A store that keeps sessions column-wise in this process (the memory store): a batch of
    single steps reads and writes its sessions' rows directly (operations.multistep)."""

    def table_of(self, model: str, version: int) -> SessionTable | None:
        """The sessions of a model version (None: none yet)."""
        ...

    def locate(
        self, table: SessionTable, session_ids: Sequence[str], owner: str | None
    ) -> npt.NDArray[np.int64]:
        """Each live session's row, -1 for a missing, expired or foreign one."""
        ...
