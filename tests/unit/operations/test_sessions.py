"""The session use case without HTTP or an engine: seq rules, retries, races, ownership, reset,
expiry. Built from its narrow parts: the repository, a direct step runner, the memory store."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from service.core.batching import SequenceResult, run_batch
from service.core.repository import Repository
from service.core.runtime import RnnBatch, RnnResult
from service.core.sessions import MemorySessionStore, SessionRecord
from service.core.state import RecurrentState, SequenceArray
from service.core.version import LoadedModel
from service.edges.http.codec import to_state
from service.errors import (
    InvalidInputError,
    LimitExceededError,
    ModelNotFoundError,
    NotStreamableError,
    SessionConflictError,
    SessionNotFoundError,
)
from service.metrics import Metrics
from service.operations.sessions import SessionManager, SessionSettings, StepOutcome
from tests.support.clock import ManualClock
from tests.support.models import RandomRepository
from tests.support.reference import assert_close, card_of, random_state, random_steps, run_alone
from tests.unit.core.sessions.test_store_contract import assert_same_record

TTL_S = 60.0


class DirectSteps:
    """A StepRunner that runs each request alone, no batcher."""

    async def run_steps(
        self,
        model: LoadedModel,
        sequence: SequenceArray,
        state: RecurrentState,
        key: object = None,
    ) -> SequenceResult:
        lengths = np.array([len(sequence)], np.int32)
        (result,) = run_batch(RnnBatch(sequence[None], lengths, state), model.runner)
        return result

    async def run_step_batch(
        self,
        model: LoadedModel,
        sequences: list[SequenceArray],
        states: RecurrentState,
        keys: object = None,
    ) -> list[SequenceResult]:
        return [
            await self.run_steps(model, sequence, states.rows(row, row + 1))
            for row, sequence in enumerate(sequences)
        ]

    async def run_step_rows(
        self, model: LoadedModel, inputs: SequenceArray, states: RecurrentState
    ) -> RnnResult:
        lengths = np.full(len(inputs), inputs.shape[1], np.int32)
        return model.runner.run(RnnBatch(inputs, lengths, states))


class Sessions:
    """The manager plus the JSON-free calls a test makes (an edge's job, done by hand)."""

    def __init__(self, repository: Repository, clock: ManualClock) -> None:
        self.metrics = Metrics()
        self.clock = clock
        store = MemorySessionStore(
            max_sessions=100, max_sessions_per_owner=100, metrics=self.metrics, clock=clock
        )
        self.manager = SessionManager(
            models=repository,
            runner=DirectSteps(),
            store=store,
            settings=SessionSettings(ttl_s=TTL_S, max_steps=50),
            metrics=self.metrics,
            clock=clock,
        )

    async def open(
        self, name: str, version: int | None, initial: Any, owner: str | None
    ) -> SessionRecord:
        model = self.manager.streamable_model(name, version)
        state = None if initial is None else to_state(initial, model.card, where="initial_state")
        return await self.manager.open(model, state, owner)

    async def step(
        self, session_id: str, *, seq: int | None, inputs: Any, owner: str | None
    ) -> StepOutcome:
        record = await self.manager.get(session_id, owner)
        return await self.manager.step(record, seq=seq, inputs=np.asarray(inputs))

    async def get(self, session_id: str, owner: str | None) -> SessionRecord:
        return await self.manager.get(session_id, owner)

    async def reset(self, session_id: str, initial: Any, owner: str | None) -> SessionRecord:
        state = None
        if initial is not None:
            card = self.manager.model_of(await self.get(session_id, owner)).card
            state = to_state(initial, card, where="initial_state")
        return await self.manager.reset(session_id, state, owner)

    async def delete(self, session_id: str, owner: str | None) -> None:
        await self.manager.delete(session_id, owner)

    def counted(self, metric: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(metric, labels or {}) or 0.0

    def steps_counted(self, outcome: str) -> float:
        return self.counted("rnnserve_session_steps_total", {"outcome": outcome})


@pytest.fixture(scope="module")
def repository(random_repository: RandomRepository) -> Repository:
    return Repository.load(
        random_repository.path, providers=["CPUExecutionProvider"], intra_op_threads=1
    )


@pytest.fixture
def sessions(repository: Repository) -> Sessions:
    return Sessions(repository, ManualClock())


FEATURES = [[0.1, -0.2, 0.3, 0.4], [1.0, 0.5, -0.5, 0.0]]  # two steps of rnn-feat


def same_answer(a: StepOutcome, b: StepOutcome) -> bool:
    return a.next_seq == b.next_seq and a.outputs.tobytes() == b.outputs.tobytes()


async def test_steps_carry_state_like_one_run_over_the_whole_sequence(
    sessions: Sessions, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "lstm3" / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(0)
    initial = random_state(card, rng)
    sequence = random_steps(card, 6, rng)
    record = await sessions.open("lstm3", None, initial, None)
    outputs: list[Any] = []
    for start, end in ((0, 1), (1, 4), (4, 6)):
        answer = await sessions.step(
            record.session_id, seq=start, inputs=sequence[start:end], owner=None
        )
        assert answer.next_seq == end and not answer.replayed
        outputs.extend(answer.outputs.tolist())
    expected = run_alone(version_dir, sequence, initial)
    assert_close(outputs, expected.y)
    final = await sessions.get(record.session_id, None)
    h, c = final.state.arrays
    assert_close(h[:, 0], expected.h)
    assert expected.c is not None
    assert_close(c[:, 0], expected.c)


async def test_a_retry_of_the_last_request_returns_the_same_answer_and_does_not_advance(
    sessions: Sessions,
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    first = await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    before = await sessions.get(record.session_id, None)
    again = await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    assert same_answer(again, first) and again.replayed
    after = await sessions.get(record.session_id, None)
    assert after.seq == 2 and after.state.arrays[0].tobytes() == before.state.arrays[0].tobytes()
    assert sessions.steps_counted("replayed") == 1


async def test_ints_and_floats_spelling_the_same_inputs_count_as_a_retry(
    sessions: Sessions,
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    first = await sessions.step(record.session_id, seq=0, inputs=[[1, 2, 3, 4]], owner=None)
    again = await sessions.step(record.session_id, seq=0, inputs=[[1.0, 2.0, 3.0, 4.0]], owner=None)
    assert same_answer(again, first) and again.replayed


@pytest.mark.parametrize(
    ("seq", "inputs", "fragment"),
    [
        (0, [[9.0, 9.0, 9.0, 9.0]], "already applied with different inputs"),
        (3, FEATURES, "leaves a gap"),
    ],
)
async def test_out_of_order_steps_conflict_with_the_expected_seq(
    sessions: Sessions, seq: int, inputs: Any, fragment: str
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    with pytest.raises(SessionConflictError) as conflict:
        await sessions.step(record.session_id, seq=seq, inputs=inputs, owner=None)
    assert conflict.value.expected_seq == 2
    assert fragment in conflict.value.message


async def test_an_older_request_than_the_last_conflicts(sessions: Sessions) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=0, inputs=FEATURES[:1], owner=None)
    await sessions.step(record.session_id, seq=1, inputs=FEATURES[1:], owner=None)
    with pytest.raises(SessionConflictError, match="already applied"):
        await sessions.step(record.session_id, seq=0, inputs=FEATURES[:1], owner=None)


async def test_racing_duplicates_are_applied_once_and_answered_alike(
    sessions: Sessions,
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    answers = await asyncio.gather(
        *(sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None) for _ in range(8))
    )
    assert all(same_answer(a, answers[0]) for a in answers)
    assert sessions.steps_counted("applied") == 1
    assert (await sessions.get(record.session_id, None)).seq == 2


async def test_racing_different_requests_for_one_seq_have_exactly_one_winner(
    sessions: Sessions,
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    bodies = [[[float(i), 0.0, 0.0, 0.0]] for i in range(6)]
    results = await asyncio.gather(
        *(sessions.step(record.session_id, seq=0, inputs=b, owner=None) for b in bodies),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, StepOutcome)]
    assert len(winners) == 1
    losers = [r for r in results if not isinstance(r, StepOutcome)]
    assert all(isinstance(r, SessionConflictError) for r in losers)
    stored = await sessions.get(record.session_id, None)
    assert stored.seq == 1 and stored.last_outputs.tobytes() == winners[0].outputs.tobytes()


async def test_seq_none_applies_the_steps_as_the_next_ones(sessions: Sessions) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=None, inputs=FEATURES, owner=None)
    answer = await sessions.step(record.session_id, seq=None, inputs=FEATURES[:1], owner=None)
    assert answer.next_seq == 3


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        ([[1.0, 2.0]], InvalidInputError),
        ([], InvalidInputError),
        ("abc", InvalidInputError),
        ([[float("nan")] * 4], InvalidInputError),
        ([[0.0] * 4] * 51, LimitExceededError),
    ],
)
async def test_bad_inputs_are_refused_and_leave_the_session_as_it_was(
    sessions: Sessions, inputs: Any, error: type[Exception]
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    before = await sessions.get(record.session_id, None)
    with pytest.raises(error):
        await sessions.step(record.session_id, seq=2, inputs=inputs, owner=None)
    assert_same_record(await sessions.get(record.session_id, None), before)


async def test_another_owners_session_does_not_exist_for_you(sessions: Sessions) -> None:
    record = await sessions.open("rnn-feat", None, None, "owner-a")
    await sessions.get(record.session_id, "owner-a")
    for owner in ("owner-b", None):
        with pytest.raises(SessionNotFoundError):
            await sessions.get(record.session_id, owner)
        with pytest.raises(SessionNotFoundError):
            await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=owner)
        with pytest.raises(SessionNotFoundError):
            await sessions.reset(record.session_id, None, owner)
        with pytest.raises(SessionNotFoundError):
            await sessions.delete(record.session_id, owner)
    assert (await sessions.get(record.session_id, "owner-a")).seq == 0


async def test_bidirectional_models_refuse_to_stream_and_say_why(
    sessions: Sessions,
) -> None:
    with pytest.raises(NotStreamableError, match="bidirectional"):
        await sessions.open("bi-rnn", None, None, None)


async def test_unknown_models_and_versions_are_not_found(sessions: Sessions) -> None:
    with pytest.raises(ModelNotFoundError):
        await sessions.open("no-such-model", None, None, None)
    with pytest.raises(ModelNotFoundError):
        await sessions.open("rnn-feat", 2, None, None)


async def test_reset_returns_to_the_initial_state_or_a_new_one(
    sessions: Sessions, random_repository: RandomRepository
) -> None:
    card = card_of(random_repository.path / "gru1" / "1")
    rng = np.random.default_rng(5)
    initial, other = random_state(card, rng), random_state(card, rng)
    record = await sessions.open("gru1", None, initial, None)
    first = await sessions.step(record.session_id, seq=0, inputs=[[0.5, 0.5]], owner=None)
    await sessions.step(record.session_id, seq=1, inputs=[[0.1, 0.9]], owner=None)
    reset = await sessions.reset(record.session_id, None, None)
    assert reset.seq == 0
    again = await sessions.step(record.session_id, seq=0, inputs=[[0.5, 0.5]], owner=None)
    assert same_answer(again, first) and not again.replayed
    await sessions.reset(record.session_id, other, None)
    moved = await sessions.get(record.session_id, None)
    assert_close(moved.state.arrays[0][:, 0], np.asarray(other["h"], np.float32))


async def test_a_deleted_session_is_gone(sessions: Sessions) -> None:
    record = await sessions.open("gru1", None, None, None)
    await sessions.delete(record.session_id, None)
    with pytest.raises(SessionNotFoundError):
        await sessions.step(record.session_id, seq=0, inputs=[[0.0, 0.0]], owner=None)
    with pytest.raises(SessionNotFoundError):
        await sessions.delete(record.session_id, None)
    assert sessions.counted("rnnserve_session_events_total", {"event": "closed"}) == 1


async def test_idle_sessions_expire_and_the_sweep_updates_the_gauge(sessions: Sessions) -> None:
    kept = await sessions.open("gru1", None, None, None)
    idle = await sessions.open("gru1", None, None, None)
    assert sessions.counted("rnnserve_live_sessions") == 2
    sessions.clock.advance(TTL_S / 2)
    await sessions.step(kept.session_id, seq=0, inputs=[[0.0, 0.0]], owner=None)
    sessions.clock.advance(TTL_S / 2 + 1)  # idle is past its TTL; kept was refreshed
    await sessions.manager.sweep_once()
    assert sessions.counted("rnnserve_live_sessions") == 1
    assert sessions.counted("rnnserve_session_events_total", {"event": "expired"}) == 1
    with pytest.raises(SessionNotFoundError):
        await sessions.get(idle.session_id, None)
    assert (await sessions.get(kept.session_id, None)).seq == 1
