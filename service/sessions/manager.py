"""Streaming sessions as a domain: open, step (exactly once per seq), reset, export, delete.

No HTTP here; the REST routes and the WebSocket stream both call this. The store's
compare-and-set on `seq` is the single source of truth: a step is acknowledged only once
its new state is stored, and of two requests racing for one seq exactly one is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from service.codecs import dump_json, to_sequence, to_state
from service.errors import (
    InvalidInputError,
    NotStreamableError,
    SessionConflictError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from service.repository import LoadedModel
from service.runtime import FloatArray, IntArray, RecurrentState
from service.sessions.record import SessionRecord, advanced, frozen_state, new_session_id
from service.sessions.store import SessionStore
from service.sessions.wire import digest_of

if TYPE_CHECKING:
    from service.engine import Engine

log = logging.getLogger(__name__)

RESET_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class AppliedStep:
    """A stored step: the answer bytes, the valid steps' outputs and the record after it."""

    answer: bytes
    y: FloatArray
    record: SessionRecord


def sweep_interval_s(ttl_s: float) -> float:
    """How often expired sessions are swept: a quarter TTL, between 50 ms and 5 s."""
    return min(max(ttl_s / 4, 0.05), 5.0)


class SessionManager:
    """Session lifecycle and the step path, over a SessionStore and the engine's step batchers."""

    def __init__(
        self, engine: Engine, store: SessionStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._store = store
        self._clock = clock
        self._metrics = engine.metrics
        self._ttl_s = engine.settings.session_ttl_s
        self._max_steps = engine.limits.max_steps
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._zeros: dict[tuple[str, int], RecurrentState] = {}
        self._sweeper: asyncio.Task[None] | None = None
        steps = self._metrics.session_steps
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

    async def open(
        self, name: str, version: int | None, initial_state: Any, owner: str | None
    ) -> SessionRecord:
        """Open a session on a streamable model, version pinned now, state zeros or given."""
        model = self._engine.repository.get(name, version)
        if not model.card.streamable:
            raise NotStreamableError(
                f"model {name!r} v{model.version} cannot run step by step: "
                f"{model.card.not_streamable_reason}; use predict",
                detail={"model": name, "version": model.version},
            )
        initial = self._parse_initial(model, initial_state, None)
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
            last_answer=b"",
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

    async def step(
        self, session_id: str, *, seq: int | None, inputs: Any, owner: str | None
    ) -> bytes:
        """Apply k >= 1 steps starting at `seq` (None: the next one); returns the answer bytes.

        A retry of the last applied request returns its answer again, state untouched; any
        other seq, or the same seq with other inputs, is a SessionConflictError.
        """
        record = await self.get(session_id, owner)
        model = self._model(record)
        sequence = to_sequence(inputs, model.card, where="inputs", max_steps=self._max_steps)
        digest = digest_of(sequence)
        if seq is not None and seq != record.seq:
            if seq == record.last_seq and digest == record.last_digest:
                self._replayed.inc()
                return record.last_answer
            raise self._conflict(record, seq)
        return (await self._apply(record, model, sequence, digest)).answer

    async def advance(self, record: SessionRecord, sequence: FloatArray | IntArray) -> AppliedStep:
        """Apply parsed steps at `record`'s seq, for callers without a step counter (V2).

        `record` comes from `get` (owner checked). Unlike `step` this is not retry-safe: a
        concurrent step that got there first makes this one a SessionConflictError.
        """
        model = self._model(record)
        expected = (model.card.input_size,) if not model.card.takes_tokens else ()
        if sequence.shape[1:] != expected or len(sequence) == 0:
            raise InvalidInputError(
                f"the session runs {model.name} v{model.version}, whose steps are {list(expected)}"
            )
        return await self._apply(record, model, sequence, digest_of(sequence))

    async def _apply(
        self,
        record: SessionRecord,
        model: LoadedModel,
        sequence: FloatArray | IntArray,
        digest: bytes,
    ) -> AppliedStep:
        (result,) = await self._engine.workers(model).step.submit([sequence], record.state)
        next_seq = record.seq + len(sequence)
        answer = dump_json({"session_id": record.session_id, "seq": next_seq, "outputs": result.y})
        # orjson hands back its 4 KiB working buffer; the record keeps an exact-size copy
        answer = bytes(memoryview(answer))
        updated = advanced(
            record,
            state=frozen_state(result.state),
            steps=len(sequence),
            digest=digest,
            answer=answer,
            expires_at=self._clock() + record.ttl_s,
        )
        if await self._store.compare_and_set(updated, expected_seq=record.seq):
            self._applied.inc()
            return AppliedStep(answer, result.y, updated)
        # lost the race for this seq: the winner's answer is ours too if it did the same steps
        winner = await self.get(record.session_id, record.owner)
        if winner.last_seq == record.seq and winner.last_digest == digest:
            self._replayed.inc()
            return AppliedStep(winner.last_answer, result.y, winner)
        raise self._conflict(winner, record.seq)

    def _conflict(self, record: SessionRecord, seq: int) -> SessionConflictError:
        self._conflicts.inc()
        if seq == record.last_seq:
            message = f"seq {seq} was already applied with different inputs"
        elif seq < record.seq:
            message = f"seq {seq} was already applied"
        else:
            message = f"seq {seq} leaves a gap"
        return SessionConflictError(
            f"{message}; the session expects seq {record.seq}", expected_seq=record.seq
        )

    async def reset(self, session_id: str, initial_state: Any, owner: str | None) -> SessionRecord:
        """Back to seq 0 and the initial state (or a new one, which becomes the initial)."""
        for _ in range(RESET_ATTEMPTS):
            record = await self.get(session_id, owner)
            model = self._model(record)
            initial = self._parse_initial(model, initial_state, record.initial)
            updated = replace(
                record,
                seq=0,
                state=initial if initial is not None else self._zero_state(model),
                initial=initial,
                last_seq=None,
                last_digest=b"",
                last_answer=b"",
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

    def _parse_initial(
        self, model: LoadedModel, raw: Any, default: RecurrentState | None
    ) -> RecurrentState | None:
        """A client's initial state as a frozen record value; `default` when none is sent."""
        if raw is None:
            return default
        return frozen_state(to_state(raw, model.card, where="initial_state"))

    def _model(self, record: SessionRecord) -> LoadedModel:
        key = (record.model, record.version)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = self._engine.repository.get(*key)
        return model

    def _zero_state(self, model: LoadedModel) -> RecurrentState:
        # one read-only zero state per model, shared by every fresh session
        key = (model.name, model.version)
        zeros = self._zeros.get(key)
        if zeros is None:
            zeros = self._zeros[key] = frozen_state(model.runner.zero_state(1))
        return zeros

    async def _sweep_loop(self) -> None:
        interval_s = sweep_interval_s(self._ttl_s)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._store.sweep_expired()
                self._metrics.live_sessions.set(await self._store.count())
                self._metrics.store_up.set(1)
            except StoreUnavailableError as exc:
                self._metrics.store_up.set(0)
                log.warning("session store unavailable: %s", exc.message)
            except Exception:  # the sweeper must outlive any one failure
                log.exception("session sweep failed")
