"""The Lua scripts that make each session-store write one atomic step inside Redis.

Expiry lives in two places that always move together: the record's own key TTL (PEXPIRE,
what makes a forgotten session vanish) and its score in the `live` sorted set, and in its
owner's set (what the caps count). Scores are expiry times in milliseconds on Redis's own
clock (TIME), so replicas with skewed clocks agree; a member whose score has passed is an
expired session and never counts toward a cap. Scripts are sent by SHA1 (EVALSHA) and loaded
again whenever Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and the SHA1 that EVALSHA names it by."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Writes the record's fields from ARGV[first] on and moves its expiry everywhere at once:
# key TTL, score in the live set and (KEYS[3]) in its owner's set, whose own expiry is pushed
# out to its newest member's so the set of an owner whose sessions are all gone vanishes.
_WRITE_RECORD = """
local function write_record(ttl_ms, first)
  redis.call('HSET', KEYS[1], unpack(ARGV, first))
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  redis.call('ZADD', KEYS[2], now + ttl_ms, ARGV[1])
  if #KEYS == 3 then
    redis.call('ZADD', KEYS[3], now + ttl_ms, ARGV[1])
    if redis.call('PTTL', KEYS[3]) < ttl_ms then redis.call('PEXPIRE', KEYS[3], ttl_ms) end
  end
end
"""

# KEYS: record, live set[, owner set]; ARGV: id, ttl_ms, max_sessions, max_per_owner,
# field, value, ... -> {1, swept} created, {0 | 2, swept, ms until a slot frees} at the
# global | owner cap. An existing record means a retried create (ids never collide): no-op.
CREATE = LuaScript(
    "create",
    _NOW_MS
    + _WRITE_RECORD
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, 0} end
local swept = 0
local function full(key, limit, counted)
  if redis.call('ZCARD', key) < limit then return false end
  local gone = redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if counted then swept = swept + gone end
  return redis.call('ZCARD', key) >= limit
end
local function wait_ms(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(0, math.floor(tonumber(first[2]) - now))
end
if full(KEYS[2], tonumber(ARGV[3]), true) then return {0, swept, wait_ms(KEYS[2])} end
if #KEYS == 3 and full(KEYS[3], tonumber(ARGV[4]), false) then
  return {2, swept, wait_ms(KEYS[3])}
end
write_record(tonumber(ARGV[2]), 5)
return {1, swept}
""",
)

# KEYS: record, live set[, owner set]; ARGV: id, ttl_ms, expected seq, field, value, ...
# -> 1 written (record replaced whole, TTL and scores refreshed), 0 nothing written.
COMPARE_AND_SET = LuaScript(
    "compare_and_set",
    _NOW_MS
    + _WRITE_RECORD
    + """
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
write_record(tonumber(ARGV[2]), 4)
return 1
""",
)

# KEYS: live set, then per record its key and (when it has an owner) its owner's set;
# ARGV: n, then per record: id, ttl_ms, expected seq, has owner (0 | 1), 2 x fields,
# field, value, ... -> {1 | 0, ...}: per record, written as COMPARE_AND_SET would, or not.
# One call for a whole batch of steps: one command to pack and parse, not one per session.
COMPARE_AND_SET_MANY = LuaScript(
    "compare_and_set_many",
    _NOW_MS
    + """
local written = {}
local k, a = 2, 2
for i = 1, tonumber(ARGV[1]) do
  local key, id, ttl_ms, expected = KEYS[k], ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local owner_key = nil
  if ARGV[a + 3] == '1' then owner_key = KEYS[k + 1]; k = k + 1 end
  local count = tonumber(ARGV[a + 4])
  local first = a + 5
  k, a = k + 1, first + count
  if redis.call('HGET', key, 'seq') == expected then
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(ARGV, first, first + count - 1))
    redis.call('PEXPIRE', key, ttl_ms)
    redis.call('ZADD', KEYS[1], now + ttl_ms, id)
    if owner_key then
      redis.call('ZADD', owner_key, now + ttl_ms, id)
      if redis.call('PTTL', owner_key) < ttl_ms then redis.call('PEXPIRE', owner_key, ttl_ms) end
    end
    written[i] = 1
  else
    written[i] = 0
  end
end
return written
""",
)

# KEYS: records -> each record's fields as HGETALL gives them (empty when there is none), in
# one reply for the batch.
READ_MANY = LuaScript(
    "read_many",
    """
local records = {}
for i, key in ipairs(KEYS) do records[i] = redis.call('HGETALL', key) end
return records
""",
)

# KEYS: record, live set; ARGV: id, owner-set key prefix -> 1 deleted, 0 there was none.
# The owner's set is named from the record itself, which the caller does not know.
DELETE = LuaScript(
    "delete",
    """
local owner = redis.call('HGET', KEYS[1], 'owner')
local gone = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if owner then redis.call('ZREM', ARGV[2] .. owner, ARGV[1]) end
return gone
""",
)

# KEYS: live set -> live sessions (expiry still ahead).
COUNT = LuaScript("count", _NOW_MS + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')")

# KEYS: live set -> members dropped because their expiry passed.
SWEEP = LuaScript("sweep", _NOW_MS + "return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)")

SCRIPTS = (CREATE, COMPARE_AND_SET, COMPARE_AND_SET_MANY, READ_MANY, DELETE, COUNT, SWEEP)
