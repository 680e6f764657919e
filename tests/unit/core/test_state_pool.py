"""The device state pool on CPU OrtValues: it moves float32 values only, so steps run from it
equal the host path bit for bit, through chunked steps, lost compare-and-sets, resets, exports,
eviction and growth, for many sessions at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from export.api import export_module
from export.pool_graphs import build_graphs
from service.core.batching import BatchJob, run_jobs
from service.core.card import ModelCard
from service.core.pooled_steps import PooledStep, run_pooled_jobs, run_pooled_steps
from service.core.providers import CPU, ProviderConfig
from service.core.runtime import ModelRunner
from service.core.state import RecurrentState, SequenceArray
from service.core.state_pool import GRAPHS, Evicted, PoolGraphs, PoolKey, StatePool, StateTag
from service.core.version import load_version
from tests.export.test_kinds import KINDS
from tests.support.models import RandomRepository

STREAMING_MODELS = ("lstm3", "lstm-tok", "gru-last", "rnn-relu3")


@pytest.fixture(scope="module")
def per_sequence_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("pool-kinds")
    torch.manual_seed(5)
    export_module(KINDS["packed_classifier"].build().eval(), name="packed", repository=repository)
    # per_sequence and not padding-safe: a pooled batch runs each length on its own
    export_module(
        KINDS["last_step_of_padded"].build().eval(), name="unpadded", repository=repository
    )
    return repository / "packed" / "1"


def runner_of(path: Path) -> ModelRunner:
    return load_version(path, providers=[CPU], intra_op_threads=1, config=ProviderConfig()).runner


def new_pool(card: ModelCard, max_slots: int = 1024, **kwargs: object) -> StatePool:
    return StatePool(card.states, PoolGraphs(provider=CPU), max_slots=max_slots, **kwargs)  # type: ignore[arg-type]


def random_state(card: ModelCard, rng: np.random.Generator) -> RecurrentState:
    return RecurrentState(
        tuple(rng.standard_normal((s.rows, 1, s.width)).astype(np.float32) for s in card.states)
    )


def random_steps(card: ModelCard, rng: np.random.Generator, length: int) -> SequenceArray:
    if card.vocab_size is not None:
        return rng.integers(0, card.vocab_size, length).astype(np.int64)
    assert card.input_size is not None
    return rng.standard_normal((length, card.input_size)).astype(np.float32)


def same(a: RecurrentState, b: RecurrentState) -> bool:
    return all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays, strict=True)
    )


@dataclass
class Stored:
    """A stand-in for the store's record: the write's tag and its host state."""

    tag: StateTag
    state: RecurrentState


def host_step(runner: ModelRunner, items: list[tuple[SequenceArray, RecurrentState]]) -> list:  # type: ignore[type-arg]
    """The host path the server takes today: one batch from each record's host state."""
    jobs = [BatchJob([seq], state, future=None) for seq, state in items]  # type: ignore[arg-type]
    return [rows[0] for rows in run_jobs(jobs, runner)]


def test_the_committed_graphs_are_what_export_pool_graphs_builds() -> None:
    for name, data in build_graphs().items():
        assert (GRAPHS / name).read_bytes() == data, f"run python -m export.pool_graphs ({name})"


def test_put_gather_and_export_round_trip_bit_for_bit_across_growth(
    random_repository: RandomRepository,
) -> None:
    card = runner_of(random_repository.path / "lstm3" / "1").card
    pool = new_pool(card, initial_slots=1)
    rng = np.random.default_rng(0)
    states = {f"s{i}": random_state(card, rng) for i in range(40)}
    for i, (sid, state) in enumerate(states.items()):
        pool.put(sid, StateTag(0, b"", float(i)), state)
    assert len(pool) == 40 and pool.capacity == 64
    for sid, state in states.items():
        assert same(pool.export(sid), state)
    order = ["s7", "s0", "s33"]
    gathered = [np.array(v.numpy(), copy=True) for v in pool.gather(order)]
    expected = RecurrentState.stack([states[s] for s in order])
    assert same(RecurrentState(tuple(gathered)), expected)


def test_the_least_recently_used_state_is_evicted_as_a_host_copy(
    random_repository: RandomRepository,
) -> None:
    card = runner_of(random_repository.path / "gru1" / "1").card
    evicted: list[Evicted] = []
    pool = new_pool(card, max_slots=4, initial_slots=2, on_evict=evicted.append)
    rng = np.random.default_rng(1)
    states = {f"s{i}": random_state(card, rng) for i in range(5)}
    for i in range(4):
        pool.put(f"s{i}", StateTag(0, b"", 0.0), states[f"s{i}"])
    assert pool.holds("s0", StateTag(0, b"", 0.0))  # s0 used: s1 is now the oldest
    pool.put("s4", StateTag(0, b"", 0.0), states["s4"])
    assert [e.session_id for e in evicted] == ["s1"] and "s1" not in pool
    assert same(evicted[0].state, states["s1"])
    assert pool.capacity == 4 and len(pool) == 4
    for sid in ("s0", "s2", "s3", "s4"):
        assert same(pool.export(sid), states[sid])
    pool.drop("s2")
    assert "s2" not in pool and len(pool) == 3


def test_a_batch_names_each_session_once_and_fits_the_pool(
    random_repository: RandomRepository,
) -> None:
    card = runner_of(random_repository.path / "gru1" / "1").card
    pool = new_pool(card, max_slots=2)
    state = random_state(card, np.random.default_rng(2))
    tag = StateTag(0, b"", 0.0)
    with pytest.raises(ValueError, match="one step per session"):
        pool.put_many(["a", "a"], [tag, tag], [state, state])
    with pytest.raises(ValueError, match="exceeds"):
        pool.put_many(["a", "b", "c"], [tag] * 3, [state] * 3)


@pytest.mark.parametrize("name", [*STREAMING_MODELS, "packed", "unpadded"])
def test_chunked_steps_of_many_sessions_equal_the_host_path_bit_for_bit(
    name: str, random_repository: RandomRepository, per_sequence_model: Path
) -> None:
    kinds = per_sequence_model.parents[1]
    path = (
        kinds / name / "1"
        if name in ("packed", "unpadded")
        else random_repository.path / name / "1"
    )
    runner = runner_of(path)
    card = runner.card
    assert card.streamable and (name != "unpadded" or not card.padding_safe)
    rng = np.random.default_rng(3)
    evicted: list[Evicted] = []
    # fewer slots than sessions: eviction and reloads happen along the way
    pool = new_pool(card, max_slots=24, initial_slots=4, on_evict=evicted.append)
    store = {f"s{i}": Stored(StateTag(0, b"", 0.0), random_state(card, rng)) for i in range(40)}
    for round_ in range(12):
        chosen = sorted(rng.choice(list(store), size=int(rng.integers(1, 20)), replace=False))
        seqs = {sid: random_steps(card, rng, int(rng.integers(1, 4))) for sid in chosen}
        expected = host_step(runner, [(seqs[s], store[s].state) for s in chosen])
        steps = [
            PooledStep(
                sid,
                seqs[sid],
                store[sid].tag,
                store[sid].state,
                StateTag(store[sid].tag.seq + len(seqs[sid]), bytes([round_]), float(round_)),
            )
            for sid in chosen
        ]
        got = run_pooled_steps(runner, pool, steps, host_states=True)
        for step, want, have in zip(steps, expected, got, strict=True):
            assert np.array_equal(want.y, have.y) and want.y.shape == have.y.shape
            assert have.state is not None and same(want.state, have.state)
            assert same(pool.export(step.session_id), want.state)
            store[step.session_id] = Stored(step.new_tag, have.state)  # the CAS won
    assert evicted, "the pool was smaller than the sessions: some were evicted"


def test_a_lost_compare_and_set_is_never_served_from_the_pool(
    random_repository: RandomRepository,
) -> None:
    runner = runner_of(random_repository.path / "lstm3" / "1")
    card = runner.card
    rng = np.random.default_rng(4)
    pool = new_pool(card)
    start = Stored(StateTag(0, b"", 1.0), random_state(card, rng))
    pool.put("s", start.tag, start.state)
    loser = random_steps(card, rng, 2)
    run_pooled_steps(
        runner,
        pool,
        [PooledStep("s", loser, start.tag, start.state, StateTag(2, b"L", 2.0))],
        host_states=False,
    )
    # the store kept `start` (another request won with other steps, or nothing was written):
    # a step from the stored write must start from it, not from the loser's state
    assert not pool.holds("s", start.tag)
    winner = random_steps(card, rng, 2)
    [want] = host_step(runner, [(winner, start.state)])
    [got] = run_pooled_steps(
        runner,
        pool,
        [PooledStep("s", winner, start.tag, start.state, StateTag(2, b"W", 3.0))],
        host_states=True,
    )
    assert np.array_equal(want.y, got.y) and got.state is not None and same(want.state, got.state)


def test_a_reset_or_another_replicas_write_reloads_the_state(
    random_repository: RandomRepository,
) -> None:
    runner = runner_of(random_repository.path / "gru-last" / "1")
    card = runner.card
    rng = np.random.default_rng(5)
    pool = new_pool(card)
    first = Stored(StateTag(0, b"", 1.0), random_state(card, rng))
    step = random_steps(card, rng, 3)
    run_pooled_steps(
        runner,
        pool,
        [PooledStep("s", step, first.tag, first.state, StateTag(3, b"a", 2.0))],
        host_states=False,
    )
    assert pool.holds("s", StateTag(3, b"a", 2.0))
    # reset to a new initial state: seq 0 and an empty digest again, but another write
    reset = Stored(StateTag(0, b"", 5.0), random_state(card, rng))
    step = random_steps(card, rng, 1)
    [want] = host_step(runner, [(step, reset.state)])
    [got] = run_pooled_steps(
        runner,
        pool,
        [PooledStep("s", step, reset.tag, reset.state, StateTag(1, b"b", 6.0))],
        host_states=True,
    )
    assert np.array_equal(want.y, got.y) and got.state is not None and same(want.state, got.state)


def test_results_own_their_memory_and_host_states_are_optional(
    random_repository: RandomRepository,
) -> None:
    runner = runner_of(random_repository.path / "rnn-feat" / "1")
    card = runner.card
    rng = np.random.default_rng(6)
    pool = new_pool(card)
    tag = StateTag(0, b"", 0.0)
    first = run_pooled_steps(
        runner,
        pool,
        [PooledStep("a", random_steps(card, rng, 2), tag, random_state(card, rng), tag)],
        host_states=False,
    )[0]
    kept = first.y.copy()
    assert first.state is None
    run_pooled_steps(
        runner,
        pool,
        [PooledStep("b", random_steps(card, rng, 2), tag, random_state(card, rng), tag)],
        host_states=False,
    )
    assert np.array_equal(first.y, kept), "the next batch overwrote an answer"


def test_a_failing_pool_falls_back_to_the_host_path_and_forgets_those_sessions(
    random_repository: RandomRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = runner_of(random_repository.path / "gru1" / "1")
    card = runner.card
    rng = np.random.default_rng(9)
    pool = new_pool(card)
    tag, new_tag = StateTag(0, b"", 0.0), StateTag(1, b"x", 1.0)
    states = [random_state(card, rng) for _ in range(3)]
    pool.put_many(["a", "b", "c"], [tag] * 3, states)
    seqs = [random_steps(card, rng, 1) for _ in range(3)]
    keys = [PoolKey(sid, tag, new_tag) for sid in ("a", "b", "c")]
    jobs = [
        BatchJob([seq], state, future=None, keys=[key])  # type: ignore[arg-type]
        for seq, state, key in zip(seqs, states, keys, strict=True)
    ]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(StatePool, "scatter", broken)
    got = run_pooled_jobs(jobs, runner, pool=pool)
    want = host_step(runner, list(zip(seqs, states, strict=True)))
    for [have], expected in zip(got, want, strict=True):
        assert np.array_equal(have.y, expected.y) and same(have.state, expected.state)
    assert not any(sid in pool for sid in ("a", "b", "c"))
