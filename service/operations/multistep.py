"""Steps for many sessions of one model version at once: the use case behind the mux stream.

Each item follows the rules of a single step (`SessionManager.step`): exactly once per `seq`,
a retry of the last applied request answered from the stored outputs, any other seq a
conflict. What changes is the cost: the items' records are read in one store call, every
item that can run goes through the step batcher together (one onnxruntime call per batch),
and the new records are written in one store call, so a Redis store costs one read and one
write round trip for the whole set. Items fail one by one: a bad item never fails the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.core.batching import SequenceResult
from service.core.inputs import check_step_columns
from service.core.sessions.record import SessionRecord, advanced
from service.core.sessions.store import SessionStore
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.version import LoadedModel
from service.errors import (
    RnnServeError,
    SessionConflictError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from service.metrics import Metrics


def digest_of(sequence: SequenceArray) -> bytes:
    """Identity of a request's inputs after decoding, so `1` and `1.0` count as the same.

    The bytes alone suffice: a session's model fixes the dtype and the step width, so the
    length of the bytes gives the number of steps."""
    return hashlib.sha256(sequence.tobytes()).digest()


def conflict_error(record: SessionRecord, seq: int) -> SessionConflictError:
    """Why `seq` cannot be applied to the session as it stands in `record`."""
    if seq == record.last_seq:
        message = f"seq {seq} was already applied with different inputs"
    elif seq < record.seq:
        message = f"seq {seq} was already applied"
    else:
        message = f"seq {seq} leaves a gap"
    return SessionConflictError(
        f"{message}; the session expects seq {record.seq}", expected_seq=record.seq
    )


def is_replay(record: SessionRecord, seq: int, digest: bytes) -> bool:
    """True when `seq` with these inputs is the request the session applied last."""
    return seq == record.last_seq and digest == record.last_digest


class BatchStepRunner(Protocol):
    """Runs steps of several sessions from their stacked states, as batched as possible."""

    async def run_step_batch(
        self, model: LoadedModel, sequences: list[SequenceArray], states: RecurrentState
    ) -> list[SequenceResult]:
        """One result per sequence: its outputs and the state after its last step."""
        ...


@dataclass(frozen=True, slots=True)
class StepColumns:
    """Steps for many distinct sessions, column-wise (as a binary frame carries them).

    Record i applies its `counts[i]` steps to session `session_ids[i]` from `seqs[i]`; the
    steps of every record lie back to back in `inputs`, already the model's dtype and width
    (float32 `[steps, input_size]`, or int64 `[steps]` token ids).
    """

    session_ids: Sequence[str]
    seqs: Sequence[int]
    counts: npt.NDArray[np.integer[Any]]
    inputs: npt.NDArray[Any]

    @staticmethod
    def of(
        session_ids: Sequence[str], seqs: Sequence[int], sequences: Sequence[SequenceArray]
    ) -> StepColumns:
        """Columns from one array per record (each the model's dtype and width)."""
        counts = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        return StepColumns(session_ids, seqs, counts, np.concatenate(sequences))

    def sequences(self) -> list[npt.NDArray[Any]]:
        """Each record's own steps (views into `inputs`)."""
        ends = np.cumsum(self.counts, dtype=np.int64).tolist()
        return [self.inputs[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one item.

    `error` None: the steps were applied (or, `replayed`, answered again from the stored
    outputs) and `outputs` holds their answer. Otherwise `error` says why nothing happened.
    `next_seq` is the session's next expected seq when the session was read, else None.
    """

    next_seq: int | None
    outputs: FloatArray | None = None
    replayed: bool = False
    error: RnnServeError | None = None


@dataclass(frozen=True, slots=True)
class _Runnable:
    index: int
    record: SessionRecord
    sequence: SequenceArray
    digest: bytes


def _gone(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(
        "session not found (it may have expired or been deleted)",
        detail={"session_id": session_id},
    )


class MultiStepper:
    """Applies steps to many sessions of one model version at once (see the module doc)."""

    def __init__(
        self,
        *,
        runner: BatchStepRunner,
        store: SessionStore,
        metrics: Metrics,
        max_steps: int,
        clock: Callable[[], float],
    ) -> None:
        self._runner = runner
        self._store = store
        self._max_steps = max_steps
        self._clock = clock
        steps = metrics.session_steps
        self._applied = steps.labels("applied")
        self._replayed = steps.labels("replayed")
        self._conflicts = steps.labels("conflict")

    async def step_many(
        self, model: LoadedModel, columns: StepColumns, owner: str | None
    ) -> list[ItemResult]:
        """One result per record, in order. Records must name distinct sessions (a caller
        with several requests for one session sends them in successive calls)."""
        try:
            records = await self._store.get_many(columns.session_ids)
        except StoreUnavailableError as exc:
            return [ItemResult(None, error=exc) for _ in columns.session_ids]
        invalid = check_step_columns(
            columns.inputs, columns.counts, model.card, max_steps=self._max_steps
        )
        sequences = columns.sequences()
        results: dict[int, ItemResult] = {}
        runnable: list[_Runnable] = []
        mine = (owner, model.name, model.version)
        replayed = conflicts = 0
        for index, (record, seq) in enumerate(zip(records, columns.seqs, strict=True)):
            # another key's session, or one of another model, answers like a missing one
            if record is None or (record.owner, record.model, record.version) != mine:
                results[index] = ItemResult(None, error=_gone(columns.session_ids[index]))
            elif (error := invalid.get(index)) is not None:
                results[index] = ItemResult(record.seq, error=error)
            else:
                sequence = sequences[index]
                digest = digest_of(sequence)
                if seq == record.seq:
                    runnable.append(_Runnable(index, record, sequence, digest))
                elif is_replay(record, seq, digest):
                    replayed += 1
                    results[index] = ItemResult(record.seq, record.last_outputs, replayed=True)
                else:
                    conflicts += 1
                    results[index] = ItemResult(record.seq, error=conflict_error(record, seq))
        self._count(replayed=replayed, conflicts=conflicts)
        if runnable:
            results.update(await self._run(model, runnable))
        return [results[index] for index in range(len(records))]

    def _count(self, *, applied: int = 0, replayed: int = 0, conflicts: int = 0) -> None:
        # one increment per outcome and call: a counter's lock costs as much as a record
        for counter, count in (
            (self._applied, applied),
            (self._replayed, replayed),
            (self._conflicts, conflicts),
        ):
            if count:
                counter.inc(count)

    async def _run(
        self, model: LoadedModel, runnable: list[_Runnable]
    ) -> list[tuple[int, ItemResult]]:
        sequences = [r.sequence for r in runnable]
        states = RecurrentState.stack([r.record.state for r in runnable])
        try:
            outputs = await self._runner.run_step_batch(model, sequences, states)
        except RnnServeError as exc:  # queue full, shutting down, model unloaded
            return [(r.index, ItemResult(r.record.seq, error=exc)) for r in runnable]
        expires_at = self._clock()
        updated = [
            advanced(
                r.record,
                state=out.state.frozen(),
                steps=len(r.sequence),
                digest=r.digest,
                outputs=out.y,
                expires_at=expires_at + r.record.ttl_s,
            )
            for r, out in zip(runnable, outputs, strict=True)
        ]
        try:
            written = await self._store.compare_and_set_many(
                updated, [r.record.seq for r in runnable]
            )
        except StoreUnavailableError as exc:
            return [(r.index, ItemResult(r.record.seq, error=exc)) for r in runnable]
        done: list[tuple[int, ItemResult]] = []
        lost: list[_Runnable] = []
        for r, record, ok in zip(runnable, updated, written, strict=True):
            if ok:
                done.append((r.index, ItemResult(record.seq, record.last_outputs)))
            else:
                lost.append(r)
        self._count(applied=len(done))
        if lost:
            done += await self._after_lost_races(lost)
        return done

    async def _after_lost_races(self, lost: list[_Runnable]) -> list[tuple[int, ItemResult]]:
        # another writer applied these seqs first: its answer is ours if it did the same steps
        try:
            winners = await self._store.get_many([r.record.session_id for r in lost])
        except StoreUnavailableError as exc:
            return [(r.index, ItemResult(r.record.seq, error=exc)) for r in lost]
        out: list[tuple[int, ItemResult]] = []
        for r, winner in zip(lost, winners, strict=True):
            if winner is None:
                out.append((r.index, ItemResult(None, error=_gone(r.record.session_id))))
            elif is_replay(winner, r.record.seq, r.digest):
                self._count(replayed=1)
                out.append((r.index, ItemResult(winner.seq, winner.last_outputs, replayed=True)))
            else:
                self._count(conflicts=1)
                out.append(
                    (r.index, ItemResult(winner.seq, error=conflict_error(winner, r.record.seq)))
                )
        return out
