"""The shared session store: every replica pointed at one Redis serves every session.

Keys, under a prefix (`rnnserve:` unless the URL says `?key_prefix=...`):
    {prefix}s:{id}      hash: seq, meta JSON, state as raw float32 bytes, last answer, owner
    {prefix}live        sorted set: every session, scored by its expiry (ms, Redis clock)
    {prefix}o:{owner}   sorted set: one API key's sessions, same scores (the per-key cap)
    {prefix}a:{alias}   string: the session a V2 sequence id names, with its own expiry
Every write is one Lua script (redis_lua), so two replicas can never both apply one step.
Redis Cluster is not supported (the scripts touch keys of several hash slots).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from service.core.sessions.record import SessionRecord
from service.core.sessions.redis_codec import decode_record, encode_record
from service.core.sessions.redis_lua import (
    COMPARE_AND_SET,
    COMPARE_AND_SET_MANY,
    COUNT,
    CREATE,
    DELETE,
    READ_MANY,
    SCRIPTS,
    SWEEP,
)
from service.core.sessions.redis_pipe import Arg, Command, CommandPipe, StoreHealth
from service.errors import RnnServeError, TooManySessionsError
from service.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "rnnserve:"
SCHEMES = ("redis", "rediss", "unix")
MAX_CONNECTIONS = 8  # one pipeline in flight, plus script loads and closing
MIN_RETRY_AFTER_S = 1.0
CREATED, GLOBAL_CAP = 1, 0
# sessions per batched script call: keeps each call's time inside Redis short
BATCH_CHUNK = 512


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the store lives: the URL redis-py connects to, and the key prefix."""

    url: str
    key_prefix: str

    @property
    def shown(self) -> str:
        """The address without credentials, for logs."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}{parts.path}"


def parse_target(url: str) -> RedisTarget:
    """Split `redis://[user:pass@]host:port/db[?key_prefix=...]` into URL and prefix."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise RnnServeError("session store URL must start with redis://, rediss:// or unix://")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for key, value in query if key == "key_prefix"]
    rest = urlencode([(key, value) for key, value in query if key != "key_prefix"])
    prefix = prefixes[-1] if prefixes else DEFAULT_KEY_PREFIX
    return RedisTarget(urlunsplit(parts._replace(query=rest)), prefix)


class RedisSessionStore:
    """SessionStore on Redis; any number of processes may share one."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        max_sessions: int,
        max_sessions_per_owner: int,
        timeout_s: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        pool = BlockingConnectionPool.from_url(
            target.url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout_s,
            # no timer per reply (they cost more than the replies): the pipe's deadline bounds reads
            socket_timeout=None,
            socket_connect_timeout=timeout_s,
            # one quick reconnect hides a pooled connection that died with an old Redis
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            client_name="rnnserve",
        )
        self._client = Redis(connection_pool=pool)
        self.target = target
        self._prefix = target.key_prefix
        self._live = f"{self._prefix}live"
        self._max_sessions = max_sessions
        self._max_per_owner = max_sessions_per_owner
        self._metrics = metrics
        self._clock = clock
        # the one bound that matters: a round trip (connecting included) takes <= timeout_s
        self._pipe = CommandPipe(
            self._client,
            scripts=SCRIPTS,
            deadline_s=timeout_s,
            health=StoreHealth(metrics, target.shown),
            metrics=metrics,
        )

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}s:{session_id}"

    def _keys(self, record: SessionRecord) -> list[str]:
        keys = [self._key(record.session_id), self._live]
        if record.owner is not None:
            keys.append(f"{self._prefix}o:{record.owner}")
        return keys

    def _ttl_ms(self, expires_at: float) -> int:
        return max(1, round((expires_at - self._clock()) * 1000))

    async def create(self, record: SessionRecord) -> None:
        """Store a new record, or raise TooManySessionsError at a cap (expired ones not counted)."""
        keys = self._keys(record)
        args: list[Arg] = [record.session_id, self._ttl_ms(record.expires_at)]
        args += [self._max_sessions, self._max_per_owner, *encode_record(record)]
        reply = await self._pipe.call("EVALSHA", CREATE.sha, len(keys), *keys, *args)
        self._count_expired(int(reply[1]))
        if int(reply[0]) == CREATED:
            return
        self._metrics.session_events.labels("rejected").inc()
        global_cap = int(reply[0]) == GLOBAL_CAP
        limit = self._max_sessions if global_cap else self._max_per_owner
        what = "the server holds" if global_cap else "this API key holds"
        raise TooManySessionsError(
            f"{what} its maximum of sessions ({limit}); close sessions you no longer need",
            retry_after_s=max(MIN_RETRY_AFTER_S, int(reply[2]) / 1000),
            detail={"limit": limit},
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live record or None (Redis drops a record when its TTL runs out)."""
        return decode_record(session_id, await self._pipe.call("HGETALL", self._key(session_id)))

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        """The live records or None, in order: one script call per chunk, one round trip."""
        chunks = [session_ids[a : a + BATCH_CHUNK] for a in range(0, len(session_ids), BATCH_CHUNK)]
        commands: list[Command] = [
            ("EVALSHA", READ_MANY.sha, len(chunk), *(self._key(i) for i in chunk))
            for chunk in chunks
        ]
        replies = [fields for reply in await self._pipe.call_many(commands) for fields in reply]
        return [
            decode_record(i, dict(zip(f[::2], f[1::2], strict=True)))
            for i, f in zip(session_ids, replies, strict=True)
        ]

    async def compare_and_set(self, record: SessionRecord, *, expected_seq: int) -> bool:
        """Replace the record whole if its stored seq is `expected_seq`; refreshes its TTL."""
        keys = self._keys(record)
        args: list[Arg] = [record.session_id, self._ttl_ms(record.expires_at), expected_seq]
        args += encode_record(record)
        reply = await self._pipe.call("EVALSHA", COMPARE_AND_SET.sha, len(keys), *keys, *args)
        return int(reply) == 1

    async def compare_and_set_many(
        self, records: Sequence[SessionRecord], expected_seqs: Sequence[int]
    ) -> list[bool]:
        """Every record's compare-and-set, one script call per chunk, one round trip; each
        record succeeds or fails on its own."""
        commands: list[Command] = []
        for a in range(0, len(records), BATCH_CHUNK):
            keys: list[Arg] = [self._live]
            args: list[Arg] = [len(records[a : a + BATCH_CHUNK])]
            for record, seq in zip(
                records[a : a + BATCH_CHUNK], expected_seqs[a : a + BATCH_CHUNK], strict=True
            ):
                keys.append(self._key(record.session_id))
                if record.owner is not None:
                    keys.append(f"{self._prefix}o:{record.owner}")
                fields = encode_record(record)
                args += [record.session_id, self._ttl_ms(record.expires_at), seq]
                args += [1 if record.owner is not None else 0, len(fields), *fields]
            commands.append(("EVALSHA", COMPARE_AND_SET_MANY.sha, len(keys), *keys, *args))
        replies = await self._pipe.call_many(commands)
        return [int(written) == 1 for reply in replies for written in reply]

    async def delete(self, session_id: str) -> bool:
        """Remove the record and its cap entries; False when there was none."""
        keys = (self._key(session_id), self._live)
        owners = f"{self._prefix}o:"
        reply = await self._pipe.call("EVALSHA", DELETE.sha, len(keys), *keys, session_id, owners)
        return int(reply) == 1

    async def set_alias(self, alias: str, session_id: str, *, expires_at: float) -> None:
        """Name a session until `expires_at`, for every replica."""
        await self._pipe.call(
            "SET", f"{self._prefix}a:{alias}", session_id, "PX", self._ttl_ms(expires_at)
        )

    async def get_alias(self, alias: str) -> str | None:
        """The session id `alias` names, or None."""
        reply: bytes | None = await self._pipe.call("GET", f"{self._prefix}a:{alias}")
        return None if reply is None else reply.decode()

    async def delete_alias(self, alias: str) -> None:
        """Forget `alias`."""
        await self._pipe.call("DEL", f"{self._prefix}a:{alias}")

    async def count(self) -> int:
        """Sessions whose expiry is still ahead, across every replica."""
        return int(await self._pipe.call("EVALSHA", COUNT.sha, 1, self._live))

    async def sweep_expired(self) -> int:
        """Drop expired entries from the cap sets (the records expired by themselves)."""
        swept = int(await self._pipe.call("EVALSHA", SWEEP.sha, 1, self._live))
        self._count_expired(swept)
        return swept

    async def ping(self) -> None:
        """One PING round trip; StoreUnavailableError when Redis does not answer."""
        await self._pipe.call("PING")

    async def close(self) -> None:
        """Finish the round trip in flight, close the connections; the data stays in Redis."""
        await self._pipe.close()
        await self._client.aclose(close_connection_pool=True)

    def _count_expired(self, swept: int) -> None:
        # each replica counts only what it removed itself, so the fleet counts each once
        if swept:
            self._metrics.session_events.labels("expired").inc(swept)


def redis_store_from(url: str, **kwargs: Any) -> RedisSessionStore:
    """A RedisSessionStore for a `redis://` (or `rediss://`, `unix://`) URL."""
    target = parse_target(url)
    log.info("session store: redis at %s, key prefix %r", target.shown, target.key_prefix)
    return RedisSessionStore(target, **kwargs)
