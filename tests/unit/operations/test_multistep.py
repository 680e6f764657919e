"""Steps for many sessions at once without HTTP: per-item rules, lost races, a store that fails."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from service.core.repository import Repository
from service.core.sessions import MemorySessionStore, SessionRecord
from service.errors import SessionConflictError, SessionNotFoundError, StoreUnavailableError
from service.metrics import Metrics
from service.operations.multistep import MultiStepper, StepColumns
from service.operations.sessions import SessionManager, SessionSettings
from tests.support.clock import ManualClock
from tests.unit.operations.test_sessions import FEATURES, DirectSteps, Sessions, repository

__all__ = ["repository"]  # the module-scoped fixture, shared


class RacingStore(MemorySessionStore):
    """A real memory store where another writer applies `rival` just before each batch write."""

    rival: dict[str, SessionRecord] = {}  # noqa: RUF012 (each test sets its own)

    async def compare_and_set_many(
        self, records: Sequence[SessionRecord], expected_seqs: Sequence[int]
    ) -> list[bool]:
        for record, seq in zip(records, expected_seqs, strict=True):
            if record.session_id in self.rival:
                await self.compare_and_set(self.rival.pop(record.session_id), expected_seq=seq)
        return await super().compare_and_set_many(records, expected_seqs)


class DownStore(MemorySessionStore):
    """A memory store whose reads fail as a Redis that does not answer would."""

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        raise StoreUnavailableError("the session store is unavailable (test)")


def columns_of(records: list[tuple[str, int, object]]) -> StepColumns:
    """Column-wise steps of rnn-feat (float32, 4 features) from (session id, seq, steps)."""
    return StepColumns.of(
        [r[0] for r in records],
        [r[1] for r in records],
        [np.asarray(r[2], np.float32) for r in records],
    )


def stepper(store: MemorySessionStore) -> MultiStepper:
    return MultiStepper(
        runner=DirectSteps(), store=store, metrics=Metrics(), max_steps=50, clock=ManualClock()
    )


def store_of(cls: type[MemorySessionStore]) -> MemorySessionStore:
    return cls(max_sessions=100, max_sessions_per_owner=100, metrics=Metrics(), clock=ManualClock())


@pytest.fixture
def sessions(repository: Repository) -> Sessions:
    return Sessions(repository, ManualClock())


async def test_each_item_answers_what_a_single_step_answers(sessions: Sessions) -> None:
    single = await sessions.open("rnn-feat", None, None, None)
    answered = await sessions.step(single.session_id, seq=0, inputs=FEATURES, owner=None)
    batch = [await sessions.open("rnn-feat", None, None, None) for _ in range(3)]
    model = sessions.manager.model_of(single)
    columns = columns_of([(r.session_id, 0, FEATURES) for r in batch])
    results = await sessions.manager.step_many(model, columns, None)
    for result in results:
        assert result.error is None and result.next_seq == 2
        assert result.outputs is not None
        assert result.outputs.tobytes() == answered.outputs.tobytes()


async def test_an_item_of_another_owner_is_not_found_and_fails_alone(sessions: Sessions) -> None:
    mine = await sessions.open("rnn-feat", None, None, "me")
    theirs = await sessions.open("rnn-feat", None, None, "them")
    model = sessions.manager.model_of(mine)
    columns = columns_of([(r.session_id, 0, FEATURES) for r in (mine, theirs)])
    ok, foreign = await sessions.manager.step_many(model, columns, "me")
    assert ok.error is None
    assert isinstance(foreign.error, SessionNotFoundError) and foreign.next_seq is None


async def test_a_race_lost_to_the_same_steps_is_a_replay_and_to_other_steps_a_conflict(
    repository: Repository,
) -> None:
    store = store_of(RacingStore)
    assert isinstance(store, RacingStore)
    manager = SessionManager(
        models=repository,
        runner=DirectSteps(),
        store=store,
        settings=SessionSettings(ttl_s=60.0, max_steps=50),
        metrics=Metrics(),
        clock=ManualClock(),
    )
    model = manager.streamable_model("rnn-feat", None)
    same, other = [await manager.open(model, None, None) for _ in range(2)]
    inputs = np.asarray(FEATURES)
    # another replica applies exactly these steps to `same`, and other steps to `other`
    store.rival = {}
    rival_same = (await manager.step(same, seq=0, inputs=inputs)).record
    rival_other = (await manager.step(other, seq=0, inputs=inputs[:1])).record
    for record in (same, other):  # back to seq 0, the rivals to be applied mid-batch
        await store.compare_and_set(record, expected_seq=(await store.get(record.session_id)).seq)  # type: ignore[union-attr]
    store.rival = {same.session_id: rival_same, other.session_id: rival_other}
    columns = columns_of([(same.session_id, 0, inputs), (other.session_id, 0, inputs)])
    replayed, conflict = await manager.step_many(model, columns, None)
    assert replayed.replayed and replayed.error is None and replayed.next_seq == 2
    assert replayed.outputs is not None
    assert replayed.outputs.tobytes() == rival_same.last_outputs.tobytes()
    assert isinstance(conflict.error, SessionConflictError) and conflict.next_seq == 1


async def test_a_store_that_does_not_answer_fails_every_item_and_moves_nothing(
    repository: Repository,
) -> None:
    store = store_of(DownStore)
    sessions = Sessions(repository, ManualClock())
    record = await sessions.open("rnn-feat", None, None, None)
    await store.create(record)
    model = sessions.manager.model_of(record)
    (result,) = await stepper(store).step_many(
        model, columns_of([(record.session_id, 0, FEATURES)]), None
    )
    assert isinstance(result.error, StoreUnavailableError)
    assert (await store.get(record.session_id)) == record
