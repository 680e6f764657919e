"""A rolling restart under streaming load: three real replicas behind deploy/nginx.conf (Debian's
nginx), sessions in the real Redis, each replica SIGTERMed in turn and started again on its port
while streams step through the front, over REST and over WebSockets. Clients retry a step they
got no answer for, with the same `seq` (a WebSocket client reconnects to its session first);
none of them sees an error, and every stream ends equal to one run of its inputs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.deploy.front import loopback_config, nginx_binary, start_front, wait_until_up
from tests.support.models import RandomRepository
from tests.support.redis import PATIENT_TIMEOUT_S, drop_prefix, fresh_prefix, store_url
from tests.support.servers import ROOT, free_port, server_provider_env
from tests.support.streams import Stream, make_streams, metric, open_stream, stored_session

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]

REPLICAS = 3
STREAMS = 24
WS_STREAMS = 6  # of STREAMS, the ones stepping over a WebSocket
# Streams stop soon after the last restart; this only bounds them.
MAX_STEPS = 3000
STEPS_AFTER_RESTARTS = 20
# What a client treats as "try the same step again": no answer, or the front had no replica.
RETRY_STATUSES = {502, 503, 504}
MAX_RETRIES_PER_STEP = 50
TIMEOUT = httpx.Timeout(30.0)


@dataclass
class Replica:
    """One `rnnserve serve` on a fixed port, so the front's upstream stays valid across restarts."""

    port: int
    repository: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it and wait until /health/ready answers 200; seconds that took."""
        began = time.monotonic()
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)]
        command += ["--repository", str(self.repository)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
            )
        for _ in range(600):
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                ready = httpx.get(f"http://127.0.0.1:{self.port}/health/ready", timeout=1)
                if ready.status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"replica on {self.port} not ready:\n{self.log_path.read_text()}")

    def terminate(self) -> tuple[int, float]:
        """SIGTERM, wait for the exit; (exit status, seconds the drain took)."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        returncode = self.process.wait(timeout=60)
        return returncode, time.monotonic() - began

    def stop(self) -> None:
        """Teardown: stop the process we started, if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Restart:
    """One replica's turn: how it stopped and how long it was away."""

    port: int
    returncode: int
    drain_s: float
    start_s: float


@dataclass
class Load:
    """What the clients did; `restarts_done` tells the streams they may wind down."""

    restarts_done: asyncio.Event = field(default_factory=asyncio.Event)
    steps: int = 0
    retries: int = 0
    retried_statuses: dict[str, int] = field(default_factory=dict)

    def retried(self, reason: str) -> None:
        """Count one retry of the same step, by what caused it."""
        self.retries += 1
        self.retried_statuses[reason] = self.retried_statuses.get(reason, 0) + 1


@pytest.fixture
def nginx() -> str:
    return nginx_binary()


@pytest.fixture
def prefix() -> Iterator[str]:
    key_prefix = fresh_prefix()
    yield key_prefix
    asyncio.run(drop_prefix(key_prefix))


async def step_with_retries(client: httpx.AsyncClient, stream: Stream, load: Load) -> None:
    """Send the next step until it is answered; a retry repeats the same `seq` and inputs."""
    for _ in range(MAX_RETRIES_PER_STEP):
        try:
            answer = await client.post(
                f"/v1/sessions/{stream.session_id}/steps", json=stream.body()
            )
        except httpx.TransportError as exc:
            reason = type(exc).__name__
        else:
            if answer.status_code == 200:
                stream.acknowledge(answer.json())
                load.steps += 1
                return
            assert answer.status_code in RETRY_STATUSES, answer.text
            reason = str(answer.status_code)
        load.retried(reason)
        await asyncio.sleep(0.05)
    pytest.fail(f"step {stream.seq} of {stream.session_id} unanswered {MAX_RETRIES_PER_STEP} times")


async def run_stream(client: httpx.AsyncClient, stream: Stream, load: Load) -> None:
    """Step until the restarts are over and a few more steps went through."""
    await open_stream(client, stream)
    after = 0
    while not stream.done and after < STEPS_AFTER_RESTARTS:
        await step_with_retries(client, stream, load)
        if load.restarts_done.is_set():
            after += 1


async def run_ws_stream(client: httpx.AsyncClient, ws_url: str, stream: Stream, load: Load) -> None:
    """The same, one socket at a time: a socket the front or a replica closes is reopened on
    the session (whichever replica nginx picks) and the unanswered step is sent again."""
    await open_stream(client, stream)
    after = 0
    failures = 0
    while not stream.done and after < STEPS_AFTER_RESTARTS:
        assert failures < MAX_RETRIES_PER_STEP, f"{stream.session_id}: no socket"
        try:
            async with websockets.connect(f"{ws_url}/v1/sessions/{stream.session_id}/stream") as ws:
                # the greeting: the session as the replica that took the socket sees it
                greeting = json.loads(await ws.recv())
                assert greeting["session_id"] == stream.session_id, greeting
                assert greeting["seq"] in (stream.seq, stream.seq + 1), (greeting, stream.seq)
                while not stream.done and after < STEPS_AFTER_RESTARTS:
                    await ws.send(json.dumps(stream.body()))
                    answer = json.loads(await ws.recv())
                    assert "error" not in answer, answer
                    stream.acknowledge(answer)
                    load.steps += 1
                    failures = 0
                    if load.restarts_done.is_set():
                        after += 1
        except (websockets.ConnectionClosed, websockets.InvalidStatus, OSError) as exc:
            failures += 1
            load.retried(f"ws {type(exc).__name__}")
            await asyncio.sleep(0.05)


def roll(replicas: list[Replica]) -> list[Restart]:
    """SIGTERM each replica in turn, start it again, wait until it is ready."""
    restarts = []
    for replica in replicas:
        time.sleep(1.0)  # let the streams settle on the full set first
        returncode, drain_s = replica.terminate()
        start_s = replica.start()
        restarts.append(Restart(replica.port, returncode, drain_s, start_s))
    return restarts


async def rolling_run(front: str, replicas: list[Replica], streams: list[Stream]) -> Any:
    """Streams through the front while the replicas roll; the restarts and the load."""
    load = Load()
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
    async with httpx.AsyncClient(base_url=front, timeout=TIMEOUT, limits=limits) as client:
        ws_url = front.replace("http://", "ws://")
        tasks = [
            asyncio.create_task(
                run_ws_stream(client, ws_url, s, load)
                if i < WS_STREAMS
                else run_stream(client, s, load)
            )
            for i, s in enumerate(streams)
        ]
        began = time.monotonic()
        restarts = await asyncio.to_thread(roll, replicas)
        load.restarts_done.set()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
        stored = [await stored_session(client, s) for s in streams]
        metrics = [(await client.get(f"http://127.0.0.1:{r.port}/metrics")).text for r in replicas]
    return restarts, load, stored, metrics, elapsed


def test_rolling_restart_under_streaming_load_loses_no_step_and_applies_none_twice(
    nginx: str, random_repository: RandomRepository, prefix: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **server_provider_env(),
        "RNNSERVE_SESSION_STORE": store_url(prefix),
        "RNNSERVE_STORE_TIMEOUT_S": str(PATIENT_TIMEOUT_S),
        "RNNSERVE_ACCESS_LOG": "false",
        "RNNSERVE_SHUTDOWN_GRACE_S": "10",
    }
    replicas = [
        Replica(free_port(), random_repository.path, env, tmp_path / f"replica-{i}.log")
        for i in range(REPLICAS)
    ]
    front_port = free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(
        loopback_config(
            upstream_ports=[r.port for r in replicas],
            listen_port=front_port,
            pid_path=tmp_path / "nginx.pid",
        )
    )
    front_log = tmp_path / "nginx.log"
    streams = make_streams(random_repository.path, STREAMS, MAX_STEPS, seed=7)
    front = None
    try:
        for replica in replicas:
            replica.start()
        front = start_front(nginx, config, front_log)
        base = f"http://127.0.0.1:{front_port}"
        wait_until_up(front, f"{base}/health/live", front_log)
        restarts, load, stored, metrics, elapsed = asyncio.run(rolling_run(base, replicas, streams))
    finally:
        if front is not None:
            front.terminate()
            front.wait(timeout=20)
        for replica in replicas:
            replica.stop()

    print(
        f"\nrolling restart: {REPLICAS} replicas, {STREAMS} streams "
        f"({WS_STREAMS} over WebSockets), {load.steps} steps"
    )
    print(f"  {load.steps / elapsed:.0f} steps/s through nginx over {elapsed:.1f} s")
    print(f"  client retries: {load.retries} {load.retried_statuses}")
    upstreams = re.findall(r"upstream=(\S+(?:, \S+)*) request_id", front_log.read_text())
    rerouted = sum(", " in u for u in upstreams)
    print(f"  requests nginx passed to a second replica itself: {rerouted} of {len(upstreams)}")
    for restart in restarts:
        print(
            f"  replica :{restart.port} exit {restart.returncode}, "
            f"drained in {restart.drain_s:.2f} s, ready again in {restart.start_s:.2f} s"
        )
    for restart in restarts:
        assert restart.returncode == -signal.SIGTERM  # not PID 1 here: the signal, re-raised
    for stream, record in zip(streams, stored, strict=True):
        assert stream.seq > STEPS_AFTER_RESTARTS
        assert record["seq"] == stream.seq  # nothing applied twice or behind the client's back
        stream.check()  # every acknowledged output equals one uninterrupted run
        stream.check_state(record["state"])
    for text in metrics:
        assert metric(text, "rnnserve_session_steps_total", 'outcome="conflict"') == 0
