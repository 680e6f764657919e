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
from service.core.runtime import RnnResult
from service.core.sessions.record import SessionRecord, advanced
from service.core.sessions.store import ColumnarStore, SessionStore
from service.core.sessions.table import SessionTable
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.version import LoadedModel
from service.errors import (
    RnnServeError,
    SessionConflictError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from service.metrics import Metrics

NO_SEQ = -1


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

    async def run_step_rows(
        self, model: LoadedModel, inputs: SequenceArray, states: RecurrentState
    ) -> RnnResult:
        """Sequences of one length, stacked (`[n, steps, ...]`): every output and final
        state at once, in order."""
        ...


@dataclass(frozen=True, slots=True)
class StepColumns:
    """Steps for many distinct sessions, column-wise (as a binary frame carries them).

    Record i applies its `counts[i]` steps to session `session_ids[i]` from `seqs[i]`; the
    steps of every record lie back to back in `inputs`, already the model's dtype and width
    (float32 `[steps, input_size]`, or int64 `[steps]` token ids).
    """

    session_ids: Sequence[str]
    seqs: Sequence[int] | npt.NDArray[np.uint64]
    counts: npt.NDArray[np.integer[Any]]
    inputs: npt.NDArray[Any]

    @staticmethod
    def of(
        session_ids: Sequence[str],
        seqs: Sequence[int] | npt.NDArray[np.uint64],
        sequences: Sequence[SequenceArray],
    ) -> StepColumns:
        """Columns from one array per record (each the model's dtype and width)."""
        counts = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        return StepColumns(session_ids, seqs, counts, np.concatenate(sequences))

    def sequences(self) -> list[npt.NDArray[Any]]:
        """Each record's own steps (views into `inputs`)."""
        ends = np.cumsum(self.counts, dtype=np.int64).tolist()
        return [self.inputs[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


@dataclass(frozen=True, slots=True)
class StepAnswers:
    """What became of each record of a StepColumns, column-wise.

    `answered[i]`: record i was applied, or (`replayed[i]`) answered again from the session's
    stored answer; its `answer_rows[i]` rows of `outputs` follow those of the answered records
    before it. Otherwise `errors[i]` says why nothing happened. `next_seqs[i]` is the
    session's next expected seq, -1 when the session could not be read.
    """

    next_seqs: npt.NDArray[np.int64]
    answered: npt.NDArray[np.bool_]
    replayed: npt.NDArray[np.bool_]
    errors: dict[int, RnnServeError]
    outputs: FloatArray
    answer_rows: npt.NDArray[np.int64]

    def outputs_of(self, index: int) -> FloatArray | None:
        """Record `index`'s answer rows, None when it was not answered."""
        if not self.answered[index]:
            return None
        start = int(self.answer_rows[:index].sum())
        return self.outputs[start : start + int(self.answer_rows[index])]

    @staticmethod
    def of(items: Sequence[ItemResult]) -> StepAnswers:
        """Column-wise answers from one result per record."""
        answered = [r.error is None for r in items]
        outputs = [r.outputs for r in items if r.error is None and r.outputs is not None]
        return StepAnswers(
            next_seqs=np.fromiter(
                (NO_SEQ if r.next_seq is None else r.next_seq for r in items), np.int64
            ),
            answered=np.array(answered, np.bool_),
            replayed=np.array([r.replayed for r in items], np.bool_),
            errors={i: r.error for i, r in enumerate(items) if r.error is not None},
            outputs=_rows_together(outputs),
            answer_rows=np.fromiter(
                (len(r.outputs) if r.error is None and r.outputs is not None else 0 for r in items),
                np.int64,
            ),
        )


def _rows_together(parts: Sequence[FloatArray]) -> FloatArray:
    if not parts:
        return np.zeros((0, 0), np.float32)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p.reshape(len(p), -1) for p in parts])


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
    ) -> StepAnswers:
        """What became of each record. Records must name distinct sessions (a caller with
        several requests for one session sends them in successive calls)."""
        store = self._store
        if isinstance(store, ColumnarStore) and bool((columns.counts == 1).all()):
            table = store.table_of(model.name, model.version)
            if table is not None:
                return await self._step_rows(model, columns, owner, store, table)
        return StepAnswers.of(await self._step_records(model, columns, owner))

    async def _step_rows(
        self,
        model: LoadedModel,
        columns: StepColumns,
        owner: str | None,
        store: ColumnarStore,
        table: SessionTable,
    ) -> StepAnswers:
        # one step per record, sessions column-wise: the path that keeps up with the model
        ids = columns.session_ids
        rows = store.locate(table, ids, owner)
        found = rows >= 0
        next_seqs = np.where(found, table.seq[np.maximum(rows, 0)], NO_SEQ)
        errors: dict[int, RnnServeError] = {
            int(i): _gone(ids[i]) for i in np.flatnonzero(~found).tolist()
        }
        for index, error in check_step_columns(
            columns.inputs, columns.counts, model.card, max_steps=self._max_steps
        ).items():
            errors.setdefault(index, error)
        valid = found.copy()
        valid[list(errors)] = False
        seqs = np.asarray(columns.seqs, np.uint64)
        due = valid & (seqs == next_seqs.astype(np.uint64))
        others: dict[int, FloatArray] = {}  # answers that are not this batch's rows
        for index in np.flatnonzero(valid & ~due).tolist():
            record = table.record(int(rows[index]))
            self._replay_or_conflict(index, record, columns, errors, others)
        runnable = np.flatnonzero(due)
        outputs, applied = np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        if runnable.size:
            outputs, applied = await self._run_rows(
                model, columns, table, rows, next_seqs, runnable, errors, others
            )
            next_seqs[applied] += 1
        answered = np.zeros(len(ids), np.bool_)
        answered[applied] = True
        replayed = np.zeros(len(ids), np.bool_)
        replayed[list(others)] = True
        answered |= replayed
        if others:  # interleave the stored answers with the batch's rows, in record order
            mine = dict(zip(applied.tolist(), outputs, strict=True))
            parts = [
                others[i] if i in others else mine[i][None]
                for i in np.flatnonzero(answered).tolist()
            ]
            outputs = _rows_together(parts)
        return StepAnswers(
            next_seqs=next_seqs,
            answered=answered,
            replayed=replayed,
            errors=errors,
            outputs=outputs,
            answer_rows=answered.astype(np.int64),
        )

    async def _run_rows(
        self,
        model: LoadedModel,
        columns: StepColumns,
        table: SessionTable,
        rows: npt.NDArray[np.int64],
        next_seqs: npt.NDArray[np.int64],
        runnable: npt.NDArray[np.int64],
        errors: dict[int, RnnServeError],
        others: dict[int, FloatArray],
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Run the due records as one batch and write back those still due; the outputs of
        the written ones and their record indices."""
        every = runnable.size == len(columns.session_ids)
        inputs = columns.inputs if every else columns.inputs[runnable]
        # a one-step record's bytes are its row's: the digest its single step would have
        digests = [digest_of(row) for row in inputs]
        try:
            result = await self._runner.run_step_rows(
                model,
                inputs.reshape(len(runnable), 1, *inputs.shape[1:]),
                table.gather(rows[runnable]),
            )
        except RnnServeError as exc:  # queue full, shutting down, model unloaded
            for index in runnable.tolist():
                errors[index] = exc
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        y = result.y[:, 0] if result.y.ndim == 3 else result.y
        ids = columns.session_ids
        written = table.commit(
            rows[runnable],
            ids if every else [ids[i] for i in runnable.tolist()],
            next_seqs[runnable],
            state=result.state,
            outputs=y,
            digests=digests,
            now=self._clock(),
        )
        self._count(applied=int(written.sum()))
        lost = runnable[~written].tolist()
        if lost:  # another writer moved these sessions while the batch ran
            winners = await self._store.get_many([ids[i] for i in lost])
            for index, winner in zip(lost, winners, strict=True):
                if winner is None:
                    errors[index] = _gone(ids[index])
                    next_seqs[index] = NO_SEQ
                else:
                    next_seqs[index] = winner.seq
                    self._replay_or_conflict(index, winner, columns, errors, others)
        return y[written], runnable[written]

    def _replay_or_conflict(
        self,
        index: int,
        record: SessionRecord,
        columns: StepColumns,
        errors: dict[int, RnnServeError],
        others: dict[int, FloatArray],
    ) -> None:
        seq = int(columns.seqs[index])
        if is_replay(record, seq, digest_of(columns.inputs[index : index + 1])):
            self._count(replayed=1)
            others[index] = record.last_outputs
        else:
            self._count(conflicts=1)
            errors[index] = conflict_error(record, seq)

    async def _step_records(
        self, model: LoadedModel, columns: StepColumns, owner: str | None
    ) -> list[ItemResult]:
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
        seqs = [int(seq) for seq in columns.seqs]
        for index, (record, seq) in enumerate(zip(records, seqs, strict=True)):
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
