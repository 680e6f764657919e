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

import numpy.typing as npt

from service.core.batching import SequenceResult
from service.core.inputs import check_sequence
from service.core.sessions.record import SessionRecord, advanced
from service.core.sessions.store import SessionStore
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.state_pool import PoolKey, pool_key
from service.core.version import LoadedModel
from service.errors import (
    RnnServeError,
    SessionConflictError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from service.metrics import Metrics


def digest_of(sequence: SequenceArray) -> bytes:
    """Identity of a request's inputs after decoding, so `1` and `1.0` count as the same."""
    digest = hashlib.sha256(f"{sequence.dtype.str}{sequence.shape}".encode())
    digest.update(sequence.tobytes())
    return digest.digest()


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
        self,
        model: LoadedModel,
        sequences: list[SequenceArray],
        states: RecurrentState,
        keys: list[PoolKey] | None = None,
    ) -> list[SequenceResult]:
        """One result per sequence: its outputs and the state after its last step; `keys`
        name each session and the stored writes involved (for a device state pool)."""
        ...


@dataclass(frozen=True, slots=True)
class StepItem:
    """One session's steps inside a multi-session request; `inputs` is decoded, not checked."""

    session_id: str
    seq: int
    inputs: npt.NDArray[Any]


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
        self, model: LoadedModel, items: Sequence[StepItem], owner: str | None
    ) -> list[ItemResult]:
        """One result per item, in order. Items must name distinct sessions (a caller with
        several requests for one session sends them in successive calls)."""
        try:
            records = await self._store.get_many([item.session_id for item in items])
        except StoreUnavailableError as exc:
            return [ItemResult(None, error=exc) for _ in items]
        results: dict[int, ItemResult] = {}
        runnable: list[_Runnable] = []
        for index, (item, record) in enumerate(zip(items, records, strict=True)):
            # another key's session, or one of another model, answers like a missing one
            if record is None or (record.owner, record.model, record.version) != (
                owner,
                model.name,
                model.version,
            ):
                results[index] = ItemResult(None, error=_gone(item.session_id))
                continue
            checked = self._check(index, item, record, model)
            if isinstance(checked, _Runnable):
                runnable.append(checked)
            else:
                results[index] = checked
        if runnable:
            results.update(await self._run(model, runnable))
        return [results[index] for index in range(len(items))]

    def _check(
        self, index: int, item: StepItem, record: SessionRecord, model: LoadedModel
    ) -> _Runnable | ItemResult:
        try:
            sequence = check_sequence(
                item.inputs, model.card, where=f"records[{index}]", max_steps=self._max_steps
            )
        except RnnServeError as exc:
            return ItemResult(record.seq, error=exc)
        digest = digest_of(sequence)
        if item.seq == record.seq:
            return _Runnable(index, record, sequence, digest)
        if is_replay(record, item.seq, digest):
            self._replayed.inc()
            return ItemResult(record.seq, record.last_outputs, replayed=True)
        self._conflicts.inc()
        return ItemResult(record.seq, error=conflict_error(record, item.seq))

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
                self._applied.inc()
                done.append((r.index, ItemResult(record.seq, record.last_outputs)))
            else:
                lost.append(r)
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
                self._replayed.inc()
                out.append((r.index, ItemResult(winner.seq, winner.last_outputs, replayed=True)))
            else:
                self._conflicts.inc()
                out.append(
                    (r.index, ItemResult(winner.seq, error=conflict_error(winner, r.record.seq)))
                )
        return out
