"""One pipeline per round trip: every Redis command asked for while the previous round trip
was in flight goes out together.

The step batcher releases the requests of one batch at the same moment, so their state reads
and their compare-and-set writes arrive here together and cost one round trip each, however
many sessions the batch held; at low load a command goes out at once. Every failure (refused
connection, timeout, an error reply) reaches the callers as StoreUnavailableError, and each
round trip is bounded in time, so a dead or frozen Redis never hangs a request: a call fails
at most one deadline after it was made (what queued behind a failed round trip fails with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from service.core.sessions.redis_lua import LuaScript
from service.errors import StoreUnavailableError
from service.metrics import Metrics

log = logging.getLogger(__name__)

Arg = bytes | str | int | float
Command = tuple[Arg, ...]
RETRY_AFTER_S = 1.0
MAX_COMMANDS_PER_ROUND_TRIP = 1024


@dataclass(slots=True)
class PendingCall:
    """Commands that must travel in one round trip, and the future of their replies."""

    commands: Sequence[Command]
    future: asyncio.Future[list[Any]] = field(repr=False)


class StoreHealth:
    """Whether the last round trip succeeded: the `store_up` gauge and one log line per change."""

    def __init__(self, metrics: Metrics, where: str) -> None:
        self._gauge = metrics.store_up
        self._where = where
        self.up: bool | None = None

    def succeeded(self) -> None:
        """A round trip came back."""
        if self.up is not True:
            if self.up is False:
                log.warning("session store at %s answers again", self._where)
            self._gauge.set(1)
            self.up = True

    def failed(self, reason: str) -> None:
        """A round trip failed."""
        if self.up is not False:
            log.warning("session store at %s unavailable: %s", self._where, reason)
            self._gauge.set(0)
            self.up = False


class CommandPipe:
    """Sends commands to Redis in pipelines, one round trip in flight at a time."""

    def __init__(
        self,
        client: Redis,
        *,
        scripts: Sequence[LuaScript],
        deadline_s: float,
        health: StoreHealth,
        metrics: Metrics,
    ) -> None:
        self._client = client
        self._scripts = scripts
        self._deadline_s = deadline_s
        self._health = health
        self._sizes = metrics.store_round_trip_commands
        self._pending: deque[PendingCall] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def call(self, *command: Arg) -> Any:
        """Send one command; its reply."""
        (reply,) = await self.call_many([command])
        return reply

    async def call_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send several commands in the same round trip; their replies in order."""
        if not commands:
            return []
        call = PendingCall(commands, asyncio.get_running_loop().create_future())
        self._pending.append(call)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_all())
        return await call.future

    async def close(self) -> None:
        """Let the round trip in flight finish, then refuse what is still queued."""
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        while self._pending:
            call = self._pending.popleft()
            if not call.future.done():
                call.future.set_exception(_unavailable("the session store is closing"))

    async def _send_all(self) -> None:
        while self._pending:
            calls: list[PendingCall] = []
            size = 0
            while self._pending and (not calls or size < MAX_COMMANDS_PER_ROUND_TRIP):
                call = self._pending.popleft()
                calls.append(call)
                size += len(call.commands)
            try:
                await self._send(calls)
            except BaseException as exc:  # a bug must reach the callers, not hang them
                for call in calls:
                    if not call.future.done():
                        call.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, calls: list[PendingCall]) -> None:
        commands = [command for call in calls for command in call.commands]
        try:
            async with asyncio.timeout(self._deadline_s):
                replies = await self._round_trip(commands)
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            self._health.failed(reason)
            # what queued meanwhile would only wait for the same failure: answer it now
            calls += self._pending
            self._pending.clear()
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(_unavailable(reason))
            return
        self._health.succeeded()
        start = 0
        for call in calls:
            mine = replies[start : start + len(call.commands)]
            start += len(call.commands)
            error = next((r for r in mine if isinstance(r, ResponseError)), None)
            if call.future.done():
                continue
            if error is None:
                call.future.set_result(mine)
            else:
                # Redis refused this command (out of memory, read-only replica, ...)
                log.error("session store refused a command: %s", error)
                call.future.set_exception(_unavailable(str(error)))

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        replies = await self._pipeline(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Redis restarted or flushed its scripts: load them, resend only what bounced
            for script in self._scripts:
                await self._client.script_load(script.source)
            again = await self._pipeline([commands[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        self._sizes.observe(len(commands))
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _unavailable(reason: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"the session store is unavailable ({reason}); retry shortly",
        retry_after_s=RETRY_AFTER_S,
    )
