"""Sessions of one model version, column-wise: what the memory store keeps, and how a batch of
steps reads and writes many sessions with a few numpy operations.

A session is a row. Its scalars live in arrays (seq, last seq, times), its state tensors in one
pool per tensor (`[capacity, rows, width]`), its last answer in an output pool when it is one
row (the answer of a single step), and the rest (id, owner, initial state, last digest, longer
answers) in lists. `record` builds a SessionRecord value from a row (copies: what it hands out
never changes), `write` stores one; `gather` and `commit` are the batch path: states of many
rows in one fancy-index, and every winner's new state, seq, expiry and answer written back in
one assignment per column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.core.sessions.record import NO_OUTPUTS, SessionRecord
from service.core.state import FloatArray, FrozenState, RecurrentState

IntArray = npt.NDArray[np.int64]
NO_SEQ = -1
INITIAL_CAPACITY = 64
# where a row's last answer is: none yet, one row in the output pool, or in `wide`
NO_ANSWER, POOLED, WIDE = 0, 1, 2

Shapes = tuple[tuple[int, int], ...]


def shapes_of(state: RecurrentState) -> Shapes:
    """(rows, width) of each state tensor of a one-sequence state."""
    return tuple((a.shape[0], a.shape[2]) for a in state.arrays)


def _frozen_copy(array: npt.NDArray[np.float32]) -> FloatArray:
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True)
class TableKey:
    """Sessions share a table when they run the same model version (same state shapes)."""

    model: str
    version: int
    shapes: Shapes


class SessionTable:
    """The sessions of one model version (see the module doc). Not thread-safe: the memory
    store uses it from the event loop only."""

    def __init__(self, key: TableKey, capacity: int = INITIAL_CAPACITY) -> None:
        self.key = key
        self.rows: dict[str, int] = {}
        self._free: list[int] = []
        self.ids: list[str | None] = []
        self.owners: list[str | None] = []
        self.initial: list[FrozenState | None] = []
        self.digests: list[bytes] = []
        self.wide: dict[int, FloatArray] = {}
        self.seq = np.zeros(0, np.int64)
        self.last_seq = np.zeros(0, np.int64)
        self.created = np.zeros(0, np.float64)
        self.expires = np.zeros(0, np.float64)
        self.ttl = np.zeros(0, np.float64)
        self.answer = np.zeros(0, np.int8)
        self.used = np.zeros(0, np.bool_)
        self.pools = tuple(np.zeros((0, rows, width), np.float32) for rows, width in key.shapes)
        self.outputs: FloatArray | None = None  # [capacity, output width], made on first use
        self._grow(capacity)

    def __len__(self) -> int:
        return len(self.rows)

    def _grow(self, capacity: int) -> None:
        old = len(self.ids)
        extra = capacity - old

        def grown(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            return np.concatenate([array, np.zeros((extra, *array.shape[1:]), array.dtype)])

        self.seq, self.last_seq = grown(self.seq), grown(self.last_seq)  # type: ignore[assignment]
        self.created, self.expires = grown(self.created), grown(self.expires)  # type: ignore[assignment]
        self.ttl, self.answer = grown(self.ttl), grown(self.answer)  # type: ignore[assignment]
        self.used = grown(self.used)  # type: ignore[assignment]
        self.pools = tuple(grown(pool) for pool in self.pools)  # type: ignore[misc]
        if self.outputs is not None:
            self.outputs = grown(self.outputs)  # type: ignore[assignment]
        self.ids += [None] * extra
        self.owners += [None] * extra
        self.initial += [None] * extra
        self.digests += [b""] * extra
        self._free.extend(range(capacity - 1, old - 1, -1))

    def insert(self, record: SessionRecord) -> None:
        """A new session in a free row."""
        if not self._free:
            self._grow(2 * len(self.ids))
        row = self._free.pop()
        self.rows[record.session_id] = row
        self.used[row] = True
        self.ids[row] = record.session_id
        self.owners[row] = record.owner
        self.created[row] = record.created_at
        self.ttl[row] = record.ttl_s
        self.write(row, record)

    def write(self, row: int, record: SessionRecord) -> None:
        """Store a record's changing fields in its row."""
        self.seq[row] = record.seq
        self.last_seq[row] = NO_SEQ if record.last_seq is None else record.last_seq
        self.expires[row] = record.expires_at
        self.initial[row] = None if record.initial is None else record.initial.frozen()
        self.digests[row] = record.last_digest
        for pool, array in zip(self.pools, record.state.arrays, strict=True):
            pool[row] = array[:, 0]
        self._write_answer(row, record.last_outputs)

    def _write_answer(self, row: int, outputs: FloatArray) -> None:
        self.wide.pop(row, None)
        if outputs.size == 0:
            self.answer[row] = NO_ANSWER
            return
        if outputs.shape[0] == 1 and self._pool_fits(outputs.shape[1]):
            assert self.outputs is not None
            self.outputs[row] = outputs[0]
            self.answer[row] = POOLED
            return
        self.wide[row] = _frozen_copy(outputs)
        self.answer[row] = WIDE

    def _pool_fits(self, width: int) -> bool:
        if self.outputs is None:
            self.outputs = np.zeros((len(self.ids), width), np.float32)
        fits: bool = self.outputs.shape[1] == width
        return fits

    def remove(self, session_id: str) -> int:
        """Free the session's row; the row it had."""
        row = self.rows.pop(session_id)
        self.used[row] = False
        self.ids[row] = self.owners[row] = self.initial[row] = None
        self.digests[row] = b""
        self.wide.pop(row, None)
        self._free.append(row)
        return row

    def record(self, row: int) -> SessionRecord:
        """The session in `row` as a value: arrays copied, read-only."""
        session_id = self.ids[row]
        assert session_id is not None
        state = FrozenState(tuple(_frozen_copy(pool[row][:, None]) for pool in self.pools))
        last_seq = int(self.last_seq[row])
        return SessionRecord(
            session_id=session_id,
            model=self.key.model,
            version=self.key.version,
            owner=self.owners[row],
            seq=int(self.seq[row]),
            state=state,
            initial=self.initial[row],
            last_seq=None if last_seq == NO_SEQ else last_seq,
            last_digest=self.digests[row],
            last_outputs=self._answer_of(row),
            created_at=float(self.created[row]),
            expires_at=float(self.expires[row]),
            ttl_s=float(self.ttl[row]),
        )

    def _answer_of(self, row: int) -> FloatArray:
        kind = self.answer[row]
        if kind == NO_ANSWER:
            return NO_OUTPUTS
        if kind == WIDE:
            return self.wide[row]
        assert self.outputs is not None
        return _frozen_copy(self.outputs[row : row + 1])

    def expired_rows(self, now: float) -> list[str]:
        """Ids of the sessions whose expiry has passed."""
        rows = np.flatnonzero(self.used & (self.expires <= now)).tolist()
        return [self.ids[r] for r in rows]  # type: ignore[misc]

    def earliest_expiry(self) -> float | None:
        """When the next session expires (None when empty)."""
        return float(self.expires[self.used].min()) if self.rows else None

    def gather(self, rows: IntArray) -> RecurrentState:
        """The states of `rows`, stacked as a batch (`[rows, batch, width]` per tensor)."""
        return RecurrentState(
            tuple(np.ascontiguousarray(pool[rows].transpose(1, 0, 2)) for pool in self.pools)
        )

    def commit(
        self,
        rows: IntArray,
        session_ids: Sequence[str],
        expected: IntArray,
        *,
        state: RecurrentState,
        outputs: FloatArray,
        digests: Sequence[bytes],
        now: float,
    ) -> npt.NDArray[np.bool_]:
        """Apply one step to each row still holding its session at its expected seq (a
        compare-and-set per row); `state` and `outputs` ([n, width]) are the batch's, in row
        order. Returns which rows were written."""
        same = np.fromiter(
            (self.ids[r] == s for r, s in zip(rows.tolist(), session_ids, strict=True)),
            bool,
            len(session_ids),
        )
        won: npt.NDArray[np.bool_] = same & (self.seq[rows] == expected)
        if not won.any():
            return won
        mine = rows[won]
        self.last_seq[mine] = self.seq[mine]
        self.seq[mine] += 1
        self.expires[mine] = now + self.ttl[mine]
        for pool, array in zip(self.pools, state.arrays, strict=True):
            pool[mine] = array[:, won].transpose(1, 0, 2)
        if self._pool_fits(outputs.shape[1]):
            assert self.outputs is not None
            self.outputs[mine] = outputs[won]
            self.answer[mine] = POOLED
            for row in mine.tolist():
                self.wide.pop(row, None)
        else:
            for row, answer in zip(mine.tolist(), outputs[won], strict=True):
                self._write_answer(row, answer[None])
        for row, digest, ok in zip(rows.tolist(), digests, won.tolist(), strict=True):
            if ok:
                self.digests[row] = digest
        return won
