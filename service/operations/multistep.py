"""Steps for many sessions of one model version at once: the use case behind the mux stream.

Each record follows the rules of a single step (`SessionManager.step`, operations.step_rules):
exactly once per `seq`, a retry of the last applied request answered from the stored outputs,
any other seq a conflict. A bad record fails alone. What changes is the cost, on two paths:

- rows: when every record is one step and the store keeps sessions column-wise (the memory
  store's SessionTable), the sessions are located, checked, gathered, run as one batch and
  written back with a few numpy operations, a compare-and-set per row; no per-session object.
- records: otherwise (Redis, longer records) the records are read in one store call, run
  through the step batcher together and written in one store call, so Redis costs one read
  and one write round trip for the whole set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from service.core.batching import SequenceResult
from service.core.inputs import check_step_columns
from service.core.runtime import RnnResult
from service.core.sessions.record import SessionRecord, advanced
from service.core.sessions.store import ColumnarStore, SessionStore
from service.core.sessions.table import SessionTable
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.state_pool import PoolKey, pool_key
from service.core.version import LoadedModel
from service.errors import InternalError, RnnServeError, StoreUnavailableError
from service.metrics import Metrics
from service.operations.step_columns import ItemResult, StepAnswers, StepColumns, rows_together
from service.operations.step_rules import (
    NO_SEQ,
    conflict_error,
    digest_of,
    is_replay,
    session_gone,
)


class BatchStepRunner(Protocol):
    """Runs steps of several sessions from their stacked states, as batched as possible."""

    async def run_step_batch(
        self,
        model: LoadedModel,
        sequences: list[SequenceArray],
        states: RecurrentState,
        keys: list[PoolKey] | None = None,
    ) -> list[SequenceResult]:
        """One result per sequence: its outputs and the state after its last step; `keys`
        name each session and the stored writes involved (for a device state pool)."""
        ...

    async def run_step_rows(
        self, model: LoadedModel, inputs: SequenceArray, states: RecurrentState
    ) -> RnnResult:
        """Sequences of one length, stacked (`[n, steps, ...]`): every output and final
        state at once, in order."""
        ...


@dataclass(frozen=True, slots=True)
class _Runnable:
    index: int
    record: SessionRecord
    sequence: SequenceArray
    digest: bytes


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
            int(i): session_gone(ids[i]) for i in np.flatnonzero(~found).tolist()
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
            outputs = rows_together(parts)
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
        except InternalError:  # the model failed: the whole request fails, nothing was written
            raise
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
                    errors[index] = session_gone(ids[index])
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
                results[index] = ItemResult(None, error=session_gone(columns.session_ids[index]))
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
        # the expiry is fixed before the run: with it, each key names the write its step makes
        now = self._clock()
        keys = [
            pool_key(
                r.record, steps=len(r.sequence), digest=r.digest, expires_at=now + r.record.ttl_s
            )
            for r in runnable
        ]
        try:
            outputs = await self._runner.run_step_batch(model, sequences, states, keys)
        except InternalError:  # the model failed: the whole request fails, nothing was written
            raise
        except RnnServeError as exc:  # queue full, shutting down, model unloaded
            return [(r.index, ItemResult(r.record.seq, error=exc)) for r in runnable]
        updated = [
            advanced(
                r.record,
                state=out.state.frozen(),
                steps=len(r.sequence),
                digest=r.digest,
                outputs=out.y,
                expires_at=key.new_tag.expires_at,
            )
            for r, out, key in zip(runnable, outputs, keys, strict=True)
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
                out.append((r.index, ItemResult(None, error=session_gone(r.record.session_id))))
            elif is_replay(winner, r.record.seq, r.digest):
                self._count(replayed=1)
                out.append((r.index, ItemResult(winner.seq, winner.last_outputs, replayed=True)))
            else:
                self._count(conflicts=1)
                out.append(
                    (r.index, ItemResult(winner.seq, error=conflict_error(winner, r.record.seq)))
                )
        return out
