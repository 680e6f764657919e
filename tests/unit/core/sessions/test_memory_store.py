"""What the memory store adds to the contract: a clock it can be tested with, metrics, order."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from service.core.sessions import MemorySessionStore, SessionRecord
from service.core.state import RecurrentState
from service.errors import TooManySessionsError
from service.metrics import Metrics
from tests.support.clock import ManualClock
from tests.unit.core.sessions.test_store_contract import advanced, make_record

TTL_S = 10.0


def at(clock: ManualClock, record: SessionRecord) -> SessionRecord:
    """The record as written at the clock's time: expiry = now + TTL."""
    return replace(record, created_at=clock.now, expires_at=clock.now + TTL_S, ttl_s=TTL_S)


def events(metrics: Metrics, event: str) -> float:
    value = metrics.registry.get_sample_value("rnnserve_session_events_total", {"event": event})
    return value or 0.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def make_store(clock: ManualClock, metrics: Metrics, **caps: int) -> MemorySessionStore:
    return MemorySessionStore(
        max_sessions=caps.get("max_sessions", 100),
        max_sessions_per_owner=caps.get("max_sessions_per_owner", 100),
        metrics=metrics,
        clock=clock,
    )


async def test_expiry_on_access_is_counted(clock: ManualClock, metrics: Metrics) -> None:
    store = make_store(clock, metrics)
    record = at(clock, make_record())
    await store.create(record)
    clock.now += TTL_S - 0.001
    assert await store.get(record.session_id) is not None
    clock.now += 0.001
    assert await store.get(record.session_id) is None
    assert events(metrics, "expired") == 1


async def test_sweep_drops_exactly_the_sessions_idle_past_their_ttl(
    clock: ManualClock, metrics: Metrics
) -> None:
    store = make_store(clock, metrics)
    records = []
    for _ in range(4):
        records.append(at(clock, make_record()))
        await store.create(records[-1])
        clock.now += 1.0
    # a step on the oldest refreshes it: it now expires last
    assert await store.compare_and_set(at(clock, advanced(records[0])), expected_seq=0)
    clock.now = records[2].expires_at
    assert await store.sweep_expired() == 2  # records 1 and 2; 0 was refreshed
    assert events(metrics, "expired") == 2
    assert [await store.get(r.session_id) is not None for r in records] == [
        True,
        False,
        False,
        True,
    ]


async def test_a_full_store_sweeps_before_refusing(clock: ManualClock, metrics: Metrics) -> None:
    store = make_store(clock, metrics, max_sessions=2)
    await store.create(at(clock, make_record()))
    await store.create(at(clock, make_record()))
    clock.now += 4.0
    with pytest.raises(TooManySessionsError) as refused:
        await store.create(at(clock, make_record()))
    assert refused.value.retry_after_s == pytest.approx(TTL_S - 4.0)
    assert events(metrics, "rejected") == 1
    clock.now += TTL_S
    await store.create(at(clock, make_record()))
    assert await store.count() == 1


async def test_owner_slots_come_back_when_sessions_expire(
    clock: ManualClock, metrics: Metrics
) -> None:
    store = make_store(clock, metrics, max_sessions_per_owner=1)
    await store.create(at(clock, make_record(owner="a")))
    with pytest.raises(TooManySessionsError):
        await store.create(at(clock, make_record(owner="a")))
    clock.now += TTL_S
    await store.create(at(clock, make_record(owner="a")))


async def test_stored_state_is_a_compact_read_only_copy(
    clock: ManualClock, metrics: Metrics
) -> None:
    store = make_store(clock, metrics)
    batch = np.zeros((2, 5, 8), np.float32)
    record = at(clock, make_record())
    view = replace(record, state=RecurrentState((batch[:, 3:4],)))
    await store.create(view)
    got = await store.get(record.session_id)
    assert got is not None
    (h,) = got.state.arrays
    assert h.base is None and h.flags.c_contiguous
    assert not h.flags.writeable
    assert sys.getsizeof(h) < sys.getsizeof(batch)
