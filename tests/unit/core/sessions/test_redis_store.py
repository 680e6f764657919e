"""The Redis store beyond the shared contract: its layout in Redis, round trips, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis as AsyncRedis

from service.core.sessions import open_store
from service.core.sessions.redis_store import DEFAULT_KEY_PREFIX, RedisSessionStore, parse_target
from service.errors import RnnServeError, StoreUnavailableError
from service.settings import Settings
from tests.support.redis import (
    SHARED_REDIS,
    drop_prefix,
    fresh_prefix,
    keys_under,
    make_store,
    private_redis,
    store_url,
)
from tests.support.servers import free_port
from tests.unit.core.sessions.test_store_contract import advanced, make_record

pytestmark = pytest.mark.redis

GUARD_S = 10.0  # no test waits on Redis longer than this: a hang fails instead of stalling


@pytest.fixture
def prefix() -> str:
    return fresh_prefix()


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisSessionStore]:
    made = make_store(store_url(prefix))
    yield made
    await made.close()
    await drop_prefix(prefix)


@pytest.fixture
async def raw() -> AsyncIterator[AsyncRedis]:
    client = AsyncRedis.from_url(SHARED_REDIS)
    yield client
    await client.aclose()


def sample(store: RedisSessionStore, name: str) -> float:
    value = store._metrics.registry.get_sample_value(name)
    return value or 0.0


def round_trips(store: RedisSessionStore) -> float:
    return sample(store, "rnnserve_session_store_round_trip_commands_count")


def test_the_url_carries_the_key_prefix_and_the_rest_goes_to_redis() -> None:
    target = parse_target("redis://:secret@cache:6380/3?key_prefix=team-a:&socket_keepalive=true")
    assert target.key_prefix == "team-a:"
    assert target.url == "redis://:secret@cache:6380/3?socket_keepalive=true"
    assert target.shown == "redis://cache:6380/3"
    assert parse_target("redis://127.0.0.1:6379/0").key_prefix == DEFAULT_KEY_PREFIX
    with pytest.raises(RnnServeError):
        parse_target("http://127.0.0.1:6379")


async def test_open_store_picks_redis_for_a_redis_url(prefix: str) -> None:
    settings = Settings(session_store=store_url(prefix))
    store = open_store(settings, make_store(store_url(prefix))._metrics)
    assert isinstance(store, RedisSessionStore)
    assert store.target.key_prefix == prefix
    await store.close()
    with pytest.raises(ValidationError, match="neither 'memory' nor a redis"):
        Settings(session_store="postgres://x")


async def test_state_lives_as_raw_little_endian_float32_in_a_small_hash(
    store: RedisSessionStore, raw: AsyncRedis, prefix: str
) -> None:
    record = advanced(make_record(owner="key-a", kind="lstm-gru", ttl_s=60), 3, seed=4)
    await store.create(record)
    fields = await raw.hgetall(f"{prefix}s:{record.session_id}")
    assert fields[b"seq"] == b"3"
    assert fields[b"owner"] == b"key-a"
    # every state tensor in the card's order, raw little-endian float32, back to back
    assert fields[b"state"] == b"".join(a.astype("<f4").tobytes() for a in record.state.arrays)
    assert fields[b"last_outputs"] == record.last_outputs.astype("<f4").tobytes()
    meta = orjson.loads(fields[b"meta"])
    assert meta["model"] == "lstm-gru" and meta["last_seq"] == 0
    assert meta["shapes"] == [[1, 1, 8], [1, 1, 8], [2, 1, 5]] and meta["outputs_shape"] == [3, 3]
    assert set(fields) == {b"seq", b"meta", b"state", b"last_outputs", b"owner"}
    assert 0 < await raw.pttl(f"{prefix}s:{record.session_id}") <= 60_000


async def test_arrays_read_back_are_read_only(store: RedisSessionStore) -> None:
    record = make_record()
    await store.create(record)
    got = await store.get(record.session_id)
    assert got is not None and not got.state.arrays[0].flags.writeable
    assert got.state.arrays[0].dtype == np.float32 and not got.last_outputs.flags.writeable


async def test_a_write_moves_the_key_expiry_and_the_cap_score_together(
    store: RedisSessionStore, raw: AsyncRedis, prefix: str
) -> None:
    record = make_record(owner="k", ttl_s=5)
    await store.create(record)
    longer = replace(advanced(record), ttl_s=300, expires_at=record.expires_at + 295)
    assert await store.compare_and_set(longer, expected_seq=0)
    key_ms = await raw.pttl(f"{prefix}s:{record.session_id}")
    assert 5_000 < key_ms <= 300_000
    (now_s, now_us) = await raw.time()
    score = await raw.zscore(f"{prefix}live", record.session_id)
    assert score is not None and abs(score - (now_s * 1000 + now_us // 1000) - key_ms) < 2_000
    assert await raw.zscore(f"{prefix}o:k", record.session_id) == score


async def test_deleting_the_last_session_leaves_no_keys_behind(
    store: RedisSessionStore, prefix: str
) -> None:
    record = make_record(owner="k")
    await store.create(record)
    await store.set_alias("v2seq:m::u:1", record.session_id, expires_at=record.expires_at)
    await store.delete_alias("v2seq:m::u:1")
    assert await store.delete(record.session_id)
    assert keys_under(prefix) == []


async def test_concurrent_calls_share_round_trips(store: RedisSessionStore) -> None:
    records = [make_record(seed=i) for i in range(40)]
    await asyncio.gather(*(store.create(r) for r in records))
    before = round_trips(store)
    await asyncio.gather(*(store.get(r.session_id) for r in records))
    steps = [advanced(r) for r in records]
    done = await asyncio.gather(*(store.compare_and_set(s, expected_seq=0) for s in steps))
    assert all(done)
    assert round_trips(store) - before <= 4  # 80 commands; one in flight at a time


async def test_two_replicas_race_for_one_seq_and_exactly_one_wins(prefix: str) -> None:
    first, second = make_store(store_url(prefix)), make_store(store_url(prefix))
    try:
        record = make_record()
        await first.create(record)
        writes = [
            (first if i % 2 else second).compare_and_set(advanced(record, seed=i), expected_seq=0)
            for i in range(20)
        ]
        assert sum(await asyncio.gather(*writes)) == 1
    finally:
        await first.close()
        await second.close()
        await drop_prefix(prefix)


async def test_aliases_are_shared_between_replicas_and_expire(prefix: str) -> None:
    first, second = make_store(store_url(prefix)), make_store(store_url(prefix))
    try:
        record = make_record()
        await first.create(record)
        await first.set_alias("seq-7", record.session_id, expires_at=record.expires_at)
        assert await second.get_alias("seq-7") == record.session_id
        await second.set_alias("short", record.session_id, expires_at=record.created_at + 0.2)
        await asyncio.sleep(0.4)
        assert await first.get_alias("short") is None
        await second.delete_alias("seq-7")
        assert await first.get_alias("seq-7") is None
    finally:
        await first.close()
        await second.close()
        await drop_prefix(prefix)


async def test_an_unreachable_redis_raises_store_unavailable(tmp_path: Path) -> None:
    store = make_store(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    record = make_record()
    try:
        calls = [
            store.create(record),
            store.get(record.session_id),
            store.compare_and_set(advanced(record), expected_seq=0),
            store.delete(record.session_id),
            store.set_alias("a", record.session_id, expires_at=record.expires_at),
            store.get_alias("a"),
            store.count(),
            store.sweep_expired(),
            store.ping(),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailableError) as refused:
                await asyncio.wait_for(call, GUARD_S)
            assert refused.value.retry_after_s >= 1
        assert sample(store, "rnnserve_session_store_up") == 0
    finally:
        await store.close()


async def test_an_error_reply_becomes_store_unavailable(
    store: RedisSessionStore, raw: AsyncRedis, prefix: str
) -> None:
    await raw.set(f"{prefix}s:not-a-hash", b"x")
    with pytest.raises(StoreUnavailableError, match="WRONGTYPE"):
        await store.get("not-a-hash")
    await store.ping()  # the pipe carries on


async def test_a_frozen_redis_times_out_and_the_store_recovers_when_it_thaws(
    tmp_path: Path,
) -> None:
    server = private_redis(tmp_path)
    store = make_store(server.url, timeout_s=1.0)
    try:
        record = make_record()
        await store.create(record)
        server.freeze()
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(store.get(record.session_id), GUARD_S)
        server.thaw()
        assert await asyncio.wait_for(store.get(record.session_id), GUARD_S) is not None
        assert await store.compare_and_set(advanced(record), expected_seq=0)
    finally:
        await store.close()
        server.stop()


async def test_after_a_redis_restart_lost_sessions_read_as_none_and_new_ones_work(
    tmp_path: Path,
) -> None:
    server = private_redis(tmp_path)
    store = make_store(server.url)  # a stopped Redis refuses at once: no timeout involved
    try:
        lost = make_record()
        await store.create(lost)
        server.stop()
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(store.ping(), GUARD_S)
        server.start()  # empty: no persistence, no scripts loaded
        assert await asyncio.wait_for(store.get(lost.session_id), GUARD_S) is None
        fresh = make_record()
        await store.create(fresh)  # EVALSHA answers NOSCRIPT: loaded again, resent
        assert await store.compare_and_set(advanced(fresh), expected_seq=0)
        assert await store.count() == 1
        assert sample(store, "rnnserve_session_store_up") == 1
    finally:
        await store.close()
        server.stop()
