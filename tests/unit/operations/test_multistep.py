"""Steps for many sessions at once without HTTP, on both paths: single steps on the memory
store's rows (column-wise) and longer records through records. Per-record rules, lost races,
a store that fails."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from service.core.repository import Repository
from service.core.runtime import RnnResult
from service.core.sessions import MemorySessionStore, SessionRecord
from service.core.state import RecurrentState, SequenceArray
from service.core.version import LoadedModel
from service.errors import SessionConflictError, SessionNotFoundError, StoreUnavailableError
from service.metrics import Metrics
from service.operations.multistep import MultiStepper
from service.operations.sessions import SessionManager, SessionSettings
from service.operations.step_columns import StepColumns
from tests.support.clock import ManualClock
from tests.unit.operations.test_sessions import FEATURES, DirectSteps, Sessions, repository

__all__ = ["repository"]  # the module-scoped fixture, shared

PATHS = pytest.mark.parametrize("steps", [1, 2], ids=["rows", "records"])


class RacingRunner(DirectSteps):
    """Runs the batch, but first another writer applies `rival` records (as another request
    or replica would while the batch runs)."""

    def __init__(self, store: MemorySessionStore) -> None:
        self.store = store
        self.rival: list[SessionRecord] = []

    async def _race(self) -> None:
        for record in self.rival:
            await self.store.compare_and_set(record, expected_seq=0)
        self.rival = []

    async def run_step_rows(
        self, model: LoadedModel, inputs: SequenceArray, states: RecurrentState
    ) -> RnnResult:
        await self._race()
        return await super().run_step_rows(model, inputs, states)

    async def run_step_batch(self, model, sequences, states, keys=None):  # type: ignore[no-untyped-def]
        await self._race()
        return await super().run_step_batch(model, sequences, states, keys)


class DownStore(MemorySessionStore):
    """A memory store whose reads fail as a Redis that does not answer would; not columnar."""

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        raise StoreUnavailableError("the session store is unavailable (test)")

    table_of = None  # type: ignore[assignment]


def columns_of(records: list[tuple[str, int, object]]) -> StepColumns:
    """Column-wise steps of rnn-feat (float32, 4 features) from (session id, seq, steps)."""
    return StepColumns.of(
        [r[0] for r in records],
        [r[1] for r in records],
        [np.asarray(r[2], np.float32) for r in records],
    )


def manager_on(
    repository: Repository, store: MemorySessionStore, runner: DirectSteps
) -> SessionManager:
    return SessionManager(
        models=repository,
        runner=runner,
        store=store,
        settings=SessionSettings(ttl_s=60.0, max_steps=50),
        metrics=Metrics(),
        clock=ManualClock(),
    )


def store_of(cls: type[MemorySessionStore]) -> MemorySessionStore:
    return cls(max_sessions=100, max_sessions_per_owner=100, metrics=Metrics(), clock=ManualClock())


@pytest.fixture
def sessions(repository: Repository) -> Sessions:
    return Sessions(repository, ManualClock())


@PATHS
async def test_each_record_answers_what_a_single_step_answers(
    sessions: Sessions, steps: int
) -> None:
    inputs = FEATURES[:steps]
    single = await sessions.open("rnn-feat", None, None, None)
    answered = await sessions.step(single.session_id, seq=0, inputs=inputs, owner=None)
    batch = [await sessions.open("rnn-feat", None, None, None) for _ in range(3)]
    model = sessions.manager.model_of(single)
    answers = await sessions.manager.step_many(
        model, columns_of([(r.session_id, 0, inputs) for r in batch]), None
    )
    assert answers.answered.all() and not answers.replayed.any() and not answers.errors
    assert answers.next_seqs.tolist() == [steps] * 3
    for index, record in enumerate(batch):
        outputs = answers.outputs_of(index)
        assert outputs is not None
        # a batch of three and a batch of one agree to float32 rounding (1 ulp seen)
        np.testing.assert_allclose(outputs, answered.outputs, rtol=1e-6, atol=1e-7)
        stored = await sessions.get(record.session_id, None)
        single_state = (await sessions.get(single.session_id, None)).state
        for got, want in zip(stored.state.arrays, single_state.arrays, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@PATHS
async def test_a_resent_record_is_replayed_and_another_seq_conflicts(
    sessions: Sessions, steps: int
) -> None:
    inputs = FEATURES[:steps]
    a, b = [await sessions.open("rnn-feat", None, None, None) for _ in range(2)]
    model = sessions.manager.model_of(a)
    first = await sessions.manager.step_many(
        model, columns_of([(a.session_id, 0, inputs), (b.session_id, 0, inputs)]), None
    )
    again = await sessions.manager.step_many(
        model, columns_of([(a.session_id, 0, inputs), (b.session_id, 5, inputs)]), None
    )
    assert again.answered.tolist() == [True, False]
    assert again.replayed.tolist() == [True, False]
    assert again.next_seqs.tolist() == [steps, steps]
    np.testing.assert_array_equal(again.outputs_of(0), first.outputs_of(0))
    assert isinstance(again.errors[1], SessionConflictError)


@PATHS
async def test_a_record_of_another_owner_is_not_found_and_fails_alone(
    sessions: Sessions, steps: int
) -> None:
    mine = await sessions.open("rnn-feat", None, None, "me")
    theirs = await sessions.open("rnn-feat", None, None, "them")
    model = sessions.manager.model_of(mine)
    columns = columns_of([(r.session_id, 0, FEATURES[:steps]) for r in (mine, theirs)])
    answers = await sessions.manager.step_many(model, columns, "me")
    assert answers.answered.tolist() == [True, False]
    assert isinstance(answers.errors[1], SessionNotFoundError)
    assert answers.next_seqs[1] == -1


@PATHS
async def test_a_race_lost_to_the_same_steps_is_a_replay_and_to_other_steps_a_conflict(
    repository: Repository, steps: int
) -> None:
    store = store_of(MemorySessionStore)
    runner = RacingRunner(store)
    manager = manager_on(repository, store, runner)
    model = manager.streamable_model("rnn-feat", None)
    same, other = [await manager.open(model, None, None) for _ in range(2)]
    inputs = np.asarray(FEATURES[:steps], np.float32)
    # what the rival writes: exactly these steps on `same`, other steps on `other`
    rival_same = (await manager.step(same, seq=0, inputs=inputs)).record
    rival_other = (await manager.step(other, seq=0, inputs=inputs + 1)).record
    for record in (same, other):  # back to seq 0: the rivals land while the batch runs
        current = await store.get(record.session_id)
        assert current is not None
        await store.compare_and_set(record, expected_seq=current.seq)
    runner.rival = [rival_same, rival_other]
    answers = await manager.step_many(
        model, columns_of([(same.session_id, 0, inputs), (other.session_id, 0, inputs)]), None
    )
    assert answers.answered.tolist() == [True, False]
    assert answers.replayed.tolist() == [True, False]
    np.testing.assert_array_equal(answers.outputs_of(0), rival_same.last_outputs)
    assert isinstance(answers.errors[1], SessionConflictError)
    assert answers.next_seqs.tolist() == [steps, steps]
    stored = await store.get(other.session_id)
    assert stored is not None and stored.last_digest == rival_other.last_digest


async def test_a_store_that_does_not_answer_fails_every_record_and_moves_nothing(
    repository: Repository,
) -> None:
    store = store_of(DownStore)
    sessions = Sessions(repository, ManualClock())
    record = await sessions.open("rnn-feat", None, None, None)
    await store.create(record)
    model = sessions.manager.model_of(record)
    stepper = MultiStepper(
        runner=DirectSteps(), store=store, metrics=Metrics(), max_steps=50, clock=ManualClock()
    )
    answers = await stepper.step_many(
        model, columns_of([(record.session_id, 0, FEATURES[:1])]), None
    )
    assert isinstance(answers.errors[0], StoreUnavailableError)
    stored = await MemorySessionStore.get(store, record.session_id)
    assert stored is not None and stored.seq == 0
