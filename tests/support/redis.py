"""Redis for tests: the shared server on 127.0.0.1:6379 under a fresh key prefix per test, and
private `redis-server` processes on free ports for tests that stop or freeze their Redis."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from service.core.sessions.redis_store import RedisSessionStore, parse_target
from service.metrics import Metrics
from tests.support.servers import free_port

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def fresh_prefix() -> str:
    """A key prefix no other test uses: tests never flush the shared server."""
    return f"rnnserve-test-{secrets.token_hex(6)}:"


def store_url(prefix: str, base: str = SHARED_REDIS) -> str:
    """The RNNSERVE_SESSION_STORE value for `base` under `prefix`."""
    return f"{base}?key_prefix={prefix}"


# Generous: on a loaded 2-core machine a healthy Redis can stall for a second. Tests of
# timeouts pass their own.
PATIENT_TIMEOUT_S = 10.0


def make_store(url: str, *, timeout_s: float = PATIENT_TIMEOUT_S, **caps: int) -> RedisSessionStore:
    """A RedisSessionStore with generous caps and timeout unless given."""
    return RedisSessionStore(
        parse_target(url),
        max_sessions=caps.get("max_sessions", 1000),
        max_sessions_per_owner=caps.get("max_sessions_per_owner", 1000),
        timeout_s=timeout_s,
        metrics=Metrics(),
    )


async def drop_prefix(prefix: str, base: str = SHARED_REDIS) -> int:
    """Delete every key under `prefix`; how many there were."""
    client = AsyncRedis.from_url(base)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


def keys_under(prefix: str, base: str = SHARED_REDIS) -> list[bytes]:
    """The keys under `prefix`, sorted (synchronous, for end-to-end tests)."""
    client = redis.Redis.from_url(base)
    try:
        return sorted(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


@dataclass
class PrivateRedis:
    """A `redis-server` this test started on its own port; stopped only by its PID."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, db 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) without persistence; wait until it answers."""
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is not installed"
        command = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--daemonize", "no"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not answer")

    def stop(self) -> None:
        """Stop the process we started and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen server cannot handle SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after freeze()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def info(self, section: str) -> dict[str, Any]:
        """INFO `section` as a dict."""
        client = redis.Redis(port=self.port)
        try:
            info: dict[str, Any] = client.info(section)
            return info
        finally:
            client.close()


def private_redis(log_dir: Path) -> PrivateRedis:
    """A started PrivateRedis on a free port."""
    server = PrivateRedis(free_port(), log_dir / "redis.log")
    server.start()
    return server
