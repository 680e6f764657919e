"""Streaming sessions as a use case: open, step (exactly once per seq), reset, export, delete.

Typed in, typed out: inputs and initial states arrive as arrays (each edge decodes its own wire
format), results leave as records and output arrays (each edge renders them). The store's
compare-and-set on `seq` is the single source of truth: a step is acknowledged only once its new
state is stored, and of two requests racing for one seq exactly one is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from service.core.batching import SequenceResult
from service.core.inputs import check_sequence
from service.core.sessions.record import (
    NO_OUTPUTS,
    SessionRecord,
    advanced,
    new_session_id,
)
from service.core.sessions.store import SessionStore
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.state_pool import PoolKey, pool_key
from service.core.version import LoadedModel
from service.errors import (
    NotStreamableError,
    SessionConflictError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from service.metrics import Metrics
from service.operations.multistep import BatchStepRunner, MultiStepper
from service.operations.step_columns import StepAnswers, StepColumns
from service.operations.step_rules import conflict_error, digest_of, is_replay

log = logging.getLogger(__name__)

RESET_ATTEMPTS = 8


class ModelLookup(Protocol):
    """Finds a ready model version (the repository)."""

    def get(self, name: str, version: int | None) -> LoadedModel:
        """The version, or the highest ready one; ModelNotFoundError otherwise."""
        ...


class StepRunner(BatchStepRunner, Protocol):
    """Runs steps of one sequence from a state, batched with other sessions' steps (and, as
    a BatchStepRunner, many sessions' steps at once)."""

    async def run_steps(
        self,
        model: LoadedModel,
        sequence: SequenceArray,
        state: RecurrentState,
        key: PoolKey | None = None,
    ) -> SequenceResult:
        """Outputs of the steps and the state after the last one; `key` names the session
        and the stored writes involved, for runners that keep states on the device."""
        ...


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the session use case needs from the settings."""

    ttl_s: float
    max_steps: int


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """A step request's answer: the outputs of its steps and the session after it.

    `replayed` is true when the request was the retry of the last applied one: the stored
    outputs are answered again and the session did not advance.
    """

    outputs: FloatArray
    record: SessionRecord
    replayed: bool

    @property
    def next_seq(self) -> int:
        """The session's next expected step index."""
        return self.record.seq


def sweep_interval_s(ttl_s: float) -> float:
    """How often expired sessions are swept: a quarter TTL, between 50 ms and 5 s."""
    return min(max(ttl_s / 4, 0.05), 5.0)


class SessionManager:
    """Session lifecycle and the step path, over a store, a model lookup and a step runner."""

    def __init__(
        self,
        *,
        models: ModelLookup,
        runner: StepRunner,
        store: SessionStore,
        settings: SessionSettings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._models = models
        self._runner = runner
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._ttl_s = settings.ttl_s
        self._max_steps = settings.max_steps
        self._zeros: dict[tuple[str, int], RecurrentState] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._multi = MultiStepper(
            runner=runner, store=store, metrics=metrics, max_steps=self._max_steps, clock=clock
        )
        steps = metrics.session_steps
        self._applied = steps.labels("applied")
        self._replayed = steps.labels("replayed")
        self._conflicts = steps.labels("conflict")

    @property
    def store(self) -> SessionStore:
        """The store behind the sessions (V2 sequence-id aliases live there too)."""
        return self._store

    def start(self) -> None:
        """Start the periodic sweep of expired sessions."""
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_loop(), name="session-sweeper"
        )

    async def stop(self) -> None:
        """Stop sweeping and close the store."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self._store.close()

    def streamable_model(self, name: str, version: int | None) -> LoadedModel:
        """The model a session would run on; NotStreamableError when it cannot stream."""
        model = self._models.get(name, version)
        if not model.card.streamable:
            raise NotStreamableError(
                f"model {name!r} v{model.version} cannot run step by step: "
                f"{model.card.not_streamable_reason}; use predict",
                detail={"model": name, "version": model.version},
            )
        return model

    async def open(
        self, model: LoadedModel, initial: RecurrentState | None, owner: str | None
    ) -> SessionRecord:
        """Open a session on `model` (from `streamable_model`), from zeros or `initial`."""
        initial = None if initial is None else initial.frozen()
        now = self._clock()
        record = SessionRecord(
            session_id=new_session_id(),
            model=model.name,
            version=model.version,
            owner=owner,
            seq=0,
            state=initial if initial is not None else self._zero_state(model),
            initial=initial,
            last_seq=None,
            last_digest=b"",
            last_outputs=NO_OUTPUTS,
            created_at=now,
            expires_at=now + self._ttl_s,
            ttl_s=self._ttl_s,
        )
        await self._store.create(record)
        self._metrics.session_events.labels("opened").inc()
        self._metrics.live_sessions.inc()
        return record

    async def get(self, session_id: str, owner: str | None) -> SessionRecord:
        """The session, if it is live and belongs to `owner` (else SessionNotFoundError)."""
        record = await self._store.get(session_id)
        # another key's session answers exactly like a missing one: ids must not leak
        if record is None or record.owner != owner:
            raise SessionNotFoundError(
                "session not found (it may have expired or been deleted)",
                detail={"session_id": session_id},
            )
        return record

    def model_of(self, record: SessionRecord) -> LoadedModel:
        """The model version a session is pinned to."""
        return self._models.get(record.model, record.version)

    async def step(
        self, record: SessionRecord, *, seq: int | None, inputs: SequenceArray
    ) -> StepOutcome:
        """Apply k >= 1 steps to the session `record` (from `get`) starting at `seq`.

        `seq` None applies them as the next steps, whatever they are. A retry of the last
        applied request is answered again, state untouched; any other seq, or the same seq with
        other inputs, is a SessionConflictError.
        """
        model = self.model_of(record)
        sequence = check_sequence(inputs, model.card, where="inputs", max_steps=self._max_steps)
        digest = digest_of(sequence)
        if seq is not None and seq != record.seq:
            if is_replay(record, seq, digest):
                self._replayed.inc()
                return StepOutcome(record.last_outputs, record, replayed=True)
            raise self._conflict(record, seq)
        # the expiry is fixed before the run: with it, the key names the write this step makes
        expires_at = self._clock() + record.ttl_s
        key = pool_key(record, steps=len(sequence), digest=digest, expires_at=expires_at)
        result = await self._runner.run_steps(model, sequence, record.state, key)
        updated = advanced(
            record,
            state=result.state.frozen(),
            steps=len(sequence),
            digest=digest,
            outputs=result.y,
            expires_at=expires_at,
        )
        if await self._store.compare_and_set(updated, expected_seq=record.seq):
            self._applied.inc()
            return StepOutcome(result.y, updated, replayed=False)
        # lost the race for this seq: the winner's answer is ours too if it did the same steps
        winner = await self.get(record.session_id, record.owner)
        if is_replay(winner, record.seq, digest):
            self._replayed.inc()
            return StepOutcome(winner.last_outputs, winner, replayed=True)
        raise self._conflict(winner, record.seq)

    def _conflict(self, record: SessionRecord, seq: int) -> SessionConflictError:
        self._conflicts.inc()
        return conflict_error(record, seq)

    async def step_many(
        self, model: LoadedModel, columns: StepColumns, owner: str | None
    ) -> StepAnswers:
        """Steps for many sessions of `model` (distinct ones) at once, each by the rules of
        `step`; one result per record, a failed record failing alone (operations.multistep)."""
        return await self._multi.step_many(model, columns, owner)

    async def reset(
        self, session_id: str, initial: RecurrentState | None, owner: str | None
    ) -> SessionRecord:
        """Back to seq 0 and the initial state (or a new one, which becomes the initial)."""
        initial = None if initial is None else initial.frozen()
        for _ in range(RESET_ATTEMPTS):
            record = await self.get(session_id, owner)
            start = initial if initial is not None else record.initial
            updated = replace(
                record,
                seq=0,
                state=start if start is not None else self._zero_state(self.model_of(record)),
                initial=start,
                last_seq=None,
                last_digest=b"",
                last_outputs=NO_OUTPUTS,
                expires_at=self._clock() + record.ttl_s,
            )
            if await self._store.compare_and_set(updated, expected_seq=record.seq):
                self._metrics.session_events.labels("reset").inc()
                return updated
        raise SessionConflictError(
            "the session kept advancing while it was being reset; try again",
            expected_seq=record.seq,
        )

    async def delete(self, session_id: str, owner: str | None) -> None:
        """Close a session for good."""
        await self.get(session_id, owner)
        if not await self._store.delete(session_id):
            raise SessionNotFoundError("session not found", detail={"session_id": session_id})
        self._metrics.session_events.labels("closed").inc()
        self._metrics.live_sessions.dec()

    def _zero_state(self, model: LoadedModel) -> RecurrentState:
        # one read-only zero state per model, shared by every fresh session
        key = (model.name, model.version)
        zeros = self._zeros.get(key)
        if zeros is None:
            zeros = self._zeros[key] = model.runner.zero_state(1).frozen()
        return zeros

    async def sweep_once(self) -> None:
        """Drop expired sessions now and update the live-sessions gauge."""
        await self._store.sweep_expired()
        self._metrics.live_sessions.set(await self._store.count())
        self._metrics.store_up.set(1)

    async def _sweep_loop(self) -> None:
        interval_s = sweep_interval_s(self._ttl_s)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep_once()
            except StoreUnavailableError as exc:
                self._metrics.store_up.set(0)
                log.warning("session store unavailable: %s", exc.message)
            except Exception:  # the sweeper must outlive any one failure
                log.exception("session sweep failed")
