"""The SessionStore contract: every store implementation must pass this suite unchanged.

Add a store by adding a parameter to `store_factory` (a Redis store: flush its database,
build it with the caps asked for, close it at teardown). Expiry tests use real time with
TTLs of a few hundred milliseconds, because stores such as Redis expire by their own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import numpy as np
import pytest

from service.core.sessions import MemorySessionStore, SessionRecord, SessionStore
from service.core.sessions.record import NO_OUTPUTS, new_session_id
from service.core.state import RecurrentState
from service.errors import TooManySessionsError
from service.metrics import Metrics
from tests.support.redis import drop_prefix, fresh_prefix, make_store, store_url

StoreFactory = Callable[..., Awaitable[SessionStore]]

SHORT_TTL_S = 0.3
LONG_TTL_S = 600.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Builds stores of the parametrised kind: `await make(max_sessions=..., ...)`."""
    made: list[SessionStore] = []
    prefix = fresh_prefix()  # redis: this test's own keys on the shared server

    async def make(*, max_sessions: int = 1000, max_sessions_per_owner: int = 1000) -> SessionStore:
        if request.param == "memory":
            store: SessionStore = MemorySessionStore(
                max_sessions=max_sessions,
                max_sessions_per_owner=max_sessions_per_owner,
                metrics=Metrics(),
            )
        elif request.param == "redis":
            store = make_store(
                store_url(prefix),
                max_sessions=max_sessions,
                max_sessions_per_owner=max_sessions_per_owner,
            )
        else:
            raise AssertionError(f"no factory for {request.param}")
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    if request.param == "redis":
        await drop_prefix(prefix)


@pytest.fixture
async def store(store_factory: StoreFactory) -> SessionStore:
    """A store with generous caps."""
    return await store_factory()


SHAPES = {"rnn": ((2, 8),), "lstm": ((2, 8), (2, 8)), "lstm-gru": ((1, 8), (1, 8), (2, 5))}


def state_of(kind: str = "rnn", *, seed: int = 0) -> RecurrentState:
    """A random state: one [rows, 1, width] float32 tensor per (rows, width) of the kind."""
    rng = np.random.default_rng(seed)
    return RecurrentState(
        tuple(rng.normal(size=(rows, 1, width)).astype(np.float32) for rows, width in SHAPES[kind])
    )


def outputs_of(steps: int, seed: int) -> np.ndarray:
    """The [steps, 3] outputs a step request answered."""
    return np.random.default_rng(seed).normal(size=(steps, 3)).astype(np.float32)


def make_record(
    *,
    owner: str | None = None,
    seq: int = 0,
    ttl_s: float = LONG_TTL_S,
    kind: str = "rnn",
    seed: int = 0,
) -> SessionRecord:
    """A plausible record expiring `ttl_s` from now."""
    now = time.time()
    return SessionRecord(
        session_id=new_session_id(),
        model=kind,
        version=1,
        owner=owner,
        seq=seq,
        state=state_of(kind, seed=seed),
        initial=None,
        last_seq=None,
        last_digest=b"",
        last_outputs=NO_OUTPUTS,
        created_at=now,
        expires_at=now + ttl_s,
        ttl_s=ttl_s,
    )


def advanced(record: SessionRecord, steps: int = 1, *, seed: int = 1) -> SessionRecord:
    """The record after `steps` more steps: new state, new last outputs, expiry refreshed."""
    return replace(
        record,
        seq=record.seq + steps,
        state=state_of(record.model, seed=seed),
        last_seq=record.seq,
        last_digest=bytes([seed % 256]) * 32,
        last_outputs=outputs_of(steps, seed),
        expires_at=time.time() + record.ttl_s,
    )


def assert_same_record(got: SessionRecord | None, want: SessionRecord) -> None:
    """Field by field; state arrays bit for bit, float32, [rows, 1, hidden]."""
    assert got is not None
    for name in SessionRecord.__slots__:
        if name in ("state", "initial", "last_outputs"):
            continue
        if name in ("created_at", "expires_at", "ttl_s"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-3), name
        else:
            assert getattr(got, name) == getattr(want, name), name
    for have, expected in ((got.state, want.state), (got.initial, want.initial)):
        assert (have is None) == (expected is None)
        if have is None or expected is None:
            continue
        assert len(have.arrays) == len(expected.arrays)
        for a, b in zip(have.arrays, expected.arrays, strict=True):
            assert a.dtype == np.float32 and a.shape == b.shape
            assert a.tobytes() == b.tobytes()
    assert got.last_outputs.shape == want.last_outputs.shape
    assert got.last_outputs.tobytes() == want.last_outputs.tobytes()


async def test_a_created_record_reads_back_equal(store: SessionStore) -> None:
    record = make_record(owner="key-a")
    await store.create(record)
    assert_same_record(await store.get(record.session_id), record)


@pytest.mark.parametrize("kind", ["lstm", "lstm-gru"])
async def test_every_state_tensor_the_initial_state_and_last_outputs_round_trip_exactly(
    store: SessionStore, kind: str
) -> None:
    record = advanced(make_record(kind=kind, seed=3), 3, seed=9)
    record = replace(record, initial=state_of(kind, seed=4))
    extreme = record.state.arrays[-1].copy()
    extreme.flat[:4] = [-0.0, 3.4e38, -1.0e-45, np.float32(1) / 3]
    record = replace(record, state=RecurrentState((*record.state.arrays[:-1], extreme)))
    await store.create(record)
    assert_same_record(await store.get(record.session_id), record)


async def test_unknown_ids_read_as_none(store: SessionStore) -> None:
    assert await store.get(new_session_id()) is None
    assert await store.delete(new_session_id()) is False


async def test_compare_and_set_applies_only_at_the_expected_seq(store: SessionStore) -> None:
    record = make_record()
    await store.create(record)
    step1 = advanced(record, 2)
    assert await store.compare_and_set(step1, expected_seq=0) is True
    assert_same_record(await store.get(record.session_id), step1)
    stale = advanced(record, 1, seed=5)
    assert await store.compare_and_set(stale, expected_seq=0) is False
    assert await store.compare_and_set(advanced(step1, seed=6), expected_seq=7) is False
    assert_same_record(await store.get(record.session_id), step1)


async def test_compare_and_set_on_a_missing_session_writes_nothing(store: SessionStore) -> None:
    record = make_record()
    assert await store.compare_and_set(advanced(record), expected_seq=0) is False
    assert await store.get(record.session_id) is None
    assert await store.count() == 0


async def test_of_many_racing_writers_on_one_seq_exactly_one_wins(store: SessionStore) -> None:
    record = make_record()
    await store.create(record)
    candidates = [advanced(record, seed=i) for i in range(20)]
    results = await asyncio.gather(*(store.compare_and_set(c, expected_seq=0) for c in candidates))
    assert sum(results) == 1
    winner = candidates[results.index(True)]
    assert_same_record(await store.get(record.session_id), winner)


async def test_get_many_reads_each_record_in_order_and_none_for_the_missing(
    store: SessionStore,
) -> None:
    records = [make_record(owner="key-a", seed=i, kind="lstm") for i in range(5)]
    for record in records:
        await store.create(record)
    missing = new_session_id()
    ids = [records[3].session_id, missing, *(r.session_id for r in records[:3])]
    got = await store.get_many(ids)
    assert got[1] is None
    for have, want in zip([got[0], *got[2:]], [records[3], *records[:3]], strict=True):
        assert_same_record(have, want)
    assert await store.get_many([]) == []


async def test_compare_and_set_many_writes_each_record_on_its_own(store: SessionStore) -> None:
    records = [make_record(seed=i) for i in range(4)]
    for record in records[:3]:  # the fourth never existed
        await store.create(record)
    await store.compare_and_set(advanced(records[1], seed=7), expected_seq=0)  # moved on
    updates = [advanced(r, 2, seed=10 + i) for i, r in enumerate(records)]
    assert await store.compare_and_set_many(updates, [0, 0, 0, 0]) == [True, False, True, False]
    assert_same_record(await store.get(records[0].session_id), updates[0])
    assert (await store.get(records[1].session_id)).seq == 1  # type: ignore[union-attr]
    assert_same_record(await store.get(records[2].session_id), updates[2])
    assert await store.get(records[3].session_id) is None


async def test_delete_removes_the_record(store: SessionStore) -> None:
    record = make_record(owner="k")
    await store.create(record)
    assert await store.delete(record.session_id) is True
    assert await store.get(record.session_id) is None
    assert await store.delete(record.session_id) is False
    assert await store.compare_and_set(advanced(record), expected_seq=0) is False


async def test_count_counts_live_sessions(store: SessionStore) -> None:
    records = [make_record(seed=i) for i in range(5)]
    for record in records:
        await store.create(record)
    await store.delete(records[0].session_id)
    assert await store.count() == 4


async def test_records_are_values_not_shared_objects(store: SessionStore) -> None:
    record = make_record(seed=2)
    expected = record.state.arrays[0].copy()
    await store.create(record)
    record.state.arrays[0][...] = 42.0  # the caller keeps using its own arrays
    got = await store.get(record.session_id)
    assert got is not None
    assert got.state.arrays[0].tobytes() == expected.tobytes()
    with contextlib.suppress(ValueError):  # read-only arrays are one way to stay a value
        got.state.arrays[0][...] = -1.0
    again = await store.get(record.session_id)
    assert again is not None and again.state.arrays[0].tobytes() == expected.tobytes()


async def test_a_record_expires_after_its_ttl(store: SessionStore) -> None:
    short = make_record(ttl_s=SHORT_TTL_S)
    await store.create(short)
    assert await store.get(short.session_id) is not None
    await asyncio.sleep(SHORT_TTL_S + 0.2)
    assert await store.get(short.session_id) is None
    assert await store.compare_and_set(advanced(short), expected_seq=0) is False
    assert await store.count() == 0


async def test_a_write_refreshes_the_ttl(store: SessionStore) -> None:
    record = make_record(ttl_s=SHORT_TTL_S)
    await store.create(record)
    await asyncio.sleep(SHORT_TTL_S * 0.6)
    assert await store.compare_and_set(advanced(record), expected_seq=0)
    await asyncio.sleep(SHORT_TTL_S * 0.6)
    assert await store.get(record.session_id) is not None


async def test_sweep_leaves_only_live_sessions(store: SessionStore) -> None:
    for i in range(3):
        await store.create(make_record(ttl_s=SHORT_TTL_S, seed=i))
    keeper = make_record()
    await store.create(keeper)
    await asyncio.sleep(SHORT_TTL_S + 0.2)
    assert await store.sweep_expired() >= 0
    assert await store.count() == 1
    assert await store.get(keeper.session_id) is not None


async def test_the_global_cap_refuses_with_a_retry_hint(store_factory: StoreFactory) -> None:
    store = await store_factory(max_sessions=3)
    records = [make_record(seed=i) for i in range(3)]
    for record in records:
        await store.create(record)
    with pytest.raises(TooManySessionsError) as refused:
        await store.create(make_record())
    assert refused.value.retry_after_s >= 1
    assert await store.count() == 3
    await store.delete(records[0].session_id)
    await store.create(make_record())


async def test_the_owner_cap_counts_each_owner_separately(store_factory: StoreFactory) -> None:
    store = await store_factory(max_sessions_per_owner=2)
    mine = [make_record(owner="a", seed=i) for i in range(2)]
    for record in mine:
        await store.create(record)
    with pytest.raises(TooManySessionsError):
        await store.create(make_record(owner="a"))
    await store.create(make_record(owner="b"))
    for i in range(3):  # no owner (keys off): only the global cap applies
        await store.create(make_record(owner=None, seed=i))
    await store.delete(mine[0].session_id)
    await store.create(make_record(owner="a"))


async def test_expired_sessions_free_their_slots(store_factory: StoreFactory) -> None:
    store = await store_factory(max_sessions=2, max_sessions_per_owner=1)
    await store.create(make_record(owner="a", ttl_s=SHORT_TTL_S))
    await store.create(make_record(owner="b", ttl_s=SHORT_TTL_S))
    await asyncio.sleep(SHORT_TTL_S + 0.2)
    await store.create(make_record(owner="a"))
    await store.create(make_record(owner="b"))


async def test_ping_answers(store: SessionStore) -> None:
    await store.ping()


async def test_an_alias_names_a_session_until_replaced_or_deleted(store: SessionStore) -> None:
    first, second = make_record(seed=1), make_record(seed=2)
    await store.create(first)
    await store.create(second)
    assert await store.get_alias("triton:7") is None
    await store.set_alias("triton:7", first.session_id, expires_at=time.time() + LONG_TTL_S)
    assert await store.get_alias("triton:7") == first.session_id
    await store.set_alias("triton:7", second.session_id, expires_at=time.time() + LONG_TTL_S)
    assert await store.get_alias("triton:7") == second.session_id
    await store.delete_alias("triton:7")
    assert await store.get_alias("triton:7") is None
    await store.delete_alias("triton:7")  # deleting an unset alias is no error


async def test_an_alias_expires_on_its_own_clock(store: SessionStore) -> None:
    record = make_record()
    await store.create(record)
    await store.set_alias("a", record.session_id, expires_at=time.time() + SHORT_TTL_S)
    await store.set_alias("b", record.session_id, expires_at=time.time() + LONG_TTL_S)
    await asyncio.sleep(SHORT_TTL_S + 0.2)
    assert await store.get_alias("a") is None
    assert await store.get_alias("b") == record.session_id
    assert await store.get(record.session_id) is not None
