"""The session manager without HTTP: seq rules, retries, races, ownership, reset, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest

from service.engine import Engine
from service.errors import (
    InvalidInputError,
    LimitExceededError,
    ModelNotFoundError,
    NotStreamableError,
    SessionConflictError,
    SessionNotFoundError,
)
from service.sessions import SessionManager
from tests.conftest import RandomRepository, cpu_settings
from tests.reference import assert_close, card_of, run_alone
from tests.sessions.harness import random_state, random_steps


@pytest.fixture
async def engine(random_repository: RandomRepository) -> AsyncIterator[Engine]:
    engine = Engine(cpu_settings(random_repository.path, max_steps=50))
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
def sessions(engine: Engine) -> SessionManager:
    return engine.sessions


def steps_counted(engine: Engine, outcome: str) -> float:
    value = engine.metrics.registry.get_sample_value(
        "rnnserve_session_steps_total", {"outcome": outcome}
    )
    return value or 0.0


FEATURES = [[0.1, -0.2, 0.3, 0.4], [1.0, 0.5, -0.5, 0.0]]  # two steps of rnn-feat


async def test_steps_carry_state_like_one_run_over_the_whole_sequence(
    sessions: SessionManager, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "lstm3" / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(0)
    initial = random_state(card, rng)
    sequence = random_steps(card, 6, rng)
    record = await sessions.open("lstm3", None, initial, None)
    outputs: list[Any] = []
    for start, end in ((0, 1), (1, 4), (4, 6)):
        answer = orjson.loads(
            await sessions.step(
                record.session_id, seq=start, inputs=sequence[start:end], owner=None
            )
        )
        assert answer["seq"] == end
        outputs.extend(answer["outputs"])
    expected = run_alone(version_dir, sequence, initial)
    assert_close(outputs, expected.y)
    final = await sessions.get(record.session_id, None)
    assert_close(final.state.h[:, 0], expected.h)
    assert expected.c is not None and final.state.c is not None
    assert_close(final.state.c[:, 0], expected.c)


async def test_a_retry_of_the_last_request_returns_the_same_bytes_and_does_not_advance(
    sessions: SessionManager, engine: Engine
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    first = await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    before = await sessions.get(record.session_id, None)
    again = await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    assert again == first
    after = await sessions.get(record.session_id, None)
    assert after.seq == 2 and after.state.h.tobytes() == before.state.h.tobytes()
    assert steps_counted(engine, "replayed") == 1


async def test_ints_and_floats_spelling_the_same_inputs_count_as_a_retry(
    sessions: SessionManager,
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    first = await sessions.step(record.session_id, seq=0, inputs=[[1, 2, 3, 4]], owner=None)
    again = await sessions.step(record.session_id, seq=0, inputs=[[1.0, 2.0, 3.0, 4.0]], owner=None)
    assert again == first


@pytest.mark.parametrize(
    ("seq", "inputs", "fragment"),
    [
        (0, [[9.0, 9.0, 9.0, 9.0]], "already applied with different inputs"),
        (3, FEATURES, "leaves a gap"),
    ],
)
async def test_out_of_order_steps_conflict_with_the_expected_seq(
    sessions: SessionManager, seq: int, inputs: Any, fragment: str
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    with pytest.raises(SessionConflictError) as conflict:
        await sessions.step(record.session_id, seq=seq, inputs=inputs, owner=None)
    assert conflict.value.expected_seq == 2
    assert fragment in conflict.value.message


async def test_an_older_request_than_the_last_conflicts(sessions: SessionManager) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=0, inputs=FEATURES[:1], owner=None)
    await sessions.step(record.session_id, seq=1, inputs=FEATURES[1:], owner=None)
    with pytest.raises(SessionConflictError, match="already applied"):
        await sessions.step(record.session_id, seq=0, inputs=FEATURES[:1], owner=None)


async def test_racing_duplicates_are_applied_once_and_answered_alike(
    sessions: SessionManager, engine: Engine
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    answers = await asyncio.gather(
        *(sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None) for _ in range(8))
    )
    assert len(set(answers)) == 1
    assert steps_counted(engine, "applied") == 1
    assert (await sessions.get(record.session_id, None)).seq == 2


async def test_racing_different_requests_for_one_seq_have_exactly_one_winner(
    sessions: SessionManager,
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    bodies = [[[float(i), 0.0, 0.0, 0.0]] for i in range(6)]
    results = await asyncio.gather(
        *(sessions.step(record.session_id, seq=0, inputs=b, owner=None) for b in bodies),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, bytes)]
    assert len(winners) == 1
    assert all(isinstance(r, SessionConflictError) for r in results if not isinstance(r, bytes))
    stored = await sessions.get(record.session_id, None)
    assert stored.seq == 1 and stored.last_answer == winners[0]


async def test_seq_none_applies_the_steps_as_the_next_ones(sessions: SessionManager) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=None, inputs=FEATURES, owner=None)
    answer = orjson.loads(
        await sessions.step(record.session_id, seq=None, inputs=FEATURES[:1], owner=None)
    )
    assert answer["seq"] == 3


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
    sessions: SessionManager, inputs: Any, error: type[Exception]
) -> None:
    record = await sessions.open("rnn-feat", None, None, None)
    await sessions.step(record.session_id, seq=0, inputs=FEATURES, owner=None)
    before = await sessions.get(record.session_id, None)
    with pytest.raises(error):
        await sessions.step(record.session_id, seq=2, inputs=inputs, owner=None)
    assert await sessions.get(record.session_id, None) is before


async def test_another_owners_session_does_not_exist_for_you(sessions: SessionManager) -> None:
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
    sessions: SessionManager,
) -> None:
    with pytest.raises(NotStreamableError, match="bidirectional"):
        await sessions.open("bi-rnn", None, None, None)


async def test_unknown_models_and_versions_are_not_found(sessions: SessionManager) -> None:
    with pytest.raises(ModelNotFoundError):
        await sessions.open("no-such-model", None, None, None)
    with pytest.raises(ModelNotFoundError):
        await sessions.open("rnn-feat", 2, None, None)


async def test_reset_returns_to_the_initial_state_or_a_new_one(
    sessions: SessionManager, random_repository: RandomRepository
) -> None:
    card = card_of(random_repository.path / "gru1" / "1")
    rng = np.random.default_rng(5)
    initial, other = random_state(card, rng), random_state(card, rng)
    record = await sessions.open("gru1", None, initial, None)
    first = await sessions.step(record.session_id, seq=0, inputs=[[0.5, 0.5]], owner=None)
    await sessions.step(record.session_id, seq=1, inputs=[[0.1, 0.9]], owner=None)
    reset = await sessions.reset(record.session_id, None, None)
    assert reset.seq == 0
    assert await sessions.step(record.session_id, seq=0, inputs=[[0.5, 0.5]], owner=None) == first
    await sessions.reset(record.session_id, other, None)
    moved = await sessions.get(record.session_id, None)
    assert_close(moved.state.h[:, 0], np.asarray(other["h"], np.float32))


async def test_a_deleted_session_is_gone(sessions: SessionManager, engine: Engine) -> None:
    record = await sessions.open("gru1", None, None, None)
    await sessions.delete(record.session_id, None)
    with pytest.raises(SessionNotFoundError):
        await sessions.step(record.session_id, seq=0, inputs=[[0.0, 0.0]], owner=None)
    with pytest.raises(SessionNotFoundError):
        await sessions.delete(record.session_id, None)
    closed = engine.metrics.registry.get_sample_value(
        "rnnserve_session_events_total", {"event": "closed"}
    )
    assert closed == 1


async def test_idle_sessions_expire_and_the_sweeper_updates_the_gauge(
    random_repository: RandomRepository,
) -> None:
    engine = Engine(cpu_settings(random_repository.path, session_ttl_s=0.2))
    await engine.start()
    try:
        record = await engine.sessions.open("gru1", None, None, None)
        assert engine.metrics.registry.get_sample_value("rnnserve_live_sessions") == 1
        for _ in range(40):  # the sweeper runs every 50 ms here
            await asyncio.sleep(0.05)
            if engine.metrics.registry.get_sample_value("rnnserve_live_sessions") == 0:
                break
        assert engine.metrics.registry.get_sample_value("rnnserve_live_sessions") == 0
        expired = engine.metrics.registry.get_sample_value(
            "rnnserve_session_events_total", {"event": "expired"}
        )
        assert expired == 1
        with pytest.raises(SessionNotFoundError):
            await engine.sessions.get(record.session_id, None)
    finally:
        await engine.stop()
