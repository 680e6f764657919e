"""`make soak` / `python -m bench.soak --minutes N`: hours of production compressed into minutes.

One real `rnnserve serve` on loopback with the Redis session store (the shared Redis on 6379,
under a key prefix of its own, removed at the end) and a short session TTL, under mixed load:

- predict clients (batches of random sequences, `output: all`);
- REST streams: open a session, step it in chunks with `seq`, delete it;
- WebSocket streams: open a session over the socket, step it, close the socket and leave the
  session to expire (expiry churn);
- abandoned sessions: open, one step, never touched again.

Every stream is checked at the end against one predict of its whole sequence: its outputs must
match and its final `seq` must equal the steps sent (a lost step leaves it short, a duplicated
one long). A sampler records the server's RSS, open file descriptors, live sessions, p99
latency and errors over time. bench/soak_report.py writes the table into bench/RESULTS.md and
the plot to bench/soak.png. Exit status 1 when a step was lost, duplicated or corrupted, or
RSS or descriptors grew after warm-up beyond the tolerance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import websockets

from bench.soak_report import Sample, SoakResult, write_report

ROOT = Path(__file__).resolve().parents[1]
MODEL = "co2-forecaster"  # demo model: 1 feature, per-step head
REDIS = "redis://127.0.0.1:6379/0"
TTL_S = 5.0
WORKERS = {"predict": 3, "rest": 6, "ws": 6, "abandon": 1}


@dataclass
class Window:
    """What happened since the last sample."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    requests: int = 0


@dataclass
class Totals:
    """What happened over the whole run."""

    streams_checked: int = 0
    steps_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    errors: int = 0
    requests: int = 0
    retries: int = 0


class Soak:
    """The load, the checks and the sampler around one server."""

    def __init__(self, base_url: str, pid: int, *, deadline: float, pace_s: float) -> None:
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://")
        self.pid = pid
        self.deadline = deadline
        self.pace_s = pace_s
        self.window = Window()
        self.totals = Totals()
        self.samples: list[Sample] = []

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def record(self, started: float, ok: bool) -> None:
        self.window.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.window.requests += 1
        self.totals.requests += 1
        if not ok:
            self.window.errors += 1
            self.totals.errors += 1

    async def predict_all(self, client: httpx.AsyncClient, sequence: list[list[float]]) -> Any:
        """One predict of the whole sequence: the reference a stream is checked against."""
        body = {"inputs": [sequence], "output": "all"}
        for _ in range(20):
            answer = await client.post(f"/v1/models/{MODEL}/predict", json=body)
            if answer.status_code == 200:
                return np.asarray(answer.json()["outputs"][0], np.float32)
            await asyncio.sleep(0.2)
        raise RuntimeError(f"reference predict failed: {answer.status_code} {answer.text}")

    def check(self, outputs: list[Any], final_seq: int, sent: int, reference: Any) -> None:
        got = np.asarray([row for chunk in outputs for row in chunk], np.float32)
        self.totals.streams_checked += 1
        self.totals.steps_checked += sent
        if final_seq < sent:
            self.totals.lost += sent - final_seq
        elif final_seq > sent:
            self.totals.duplicated += final_seq - sent
        elif got.shape != reference.shape or not np.allclose(got, reference, 1e-4, 1e-4):
            self.totals.corrupted += 1

    async def predict_worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        while self.running():
            batch = [
                [[rng.uniform(-1, 1)] for _ in range(rng.randint(1, 40))]
                for _ in range(rng.randint(1, 8))
            ]
            started = time.perf_counter()
            try:
                answer = await client.post(
                    f"/v1/models/{MODEL}/predict", json={"inputs": batch, "output": "all"}
                )
                self.record(started, answer.status_code == 200)
            except httpx.HTTPError:
                self.record(started, False)
            await asyncio.sleep(self.pace_s)

    async def step_rest(self, client: httpx.AsyncClient, session: str, body: Any) -> Any:
        """One step, resent as is after a refusal (the same seq: applied once at most)."""
        for _ in range(50):
            started = time.perf_counter()
            try:
                answer = await client.post(f"/v1/sessions/{session}/steps", json=body)
            except httpx.HTTPError:
                self.record(started, False)
            else:
                self.record(started, answer.status_code == 200)
                if answer.status_code == 200:
                    return answer.json()
            self.totals.retries += 1
            await asyncio.sleep(0.1)
        raise RuntimeError(f"step of {session} never succeeded")

    async def rest_worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        while self.running():
            opened = await client.post(f"/v1/models/{MODEL}/sessions")
            if opened.status_code != 201:
                self.window.errors += 1
                self.totals.errors += 1
                await asyncio.sleep(0.5)
                continue
            session = opened.json()["session_id"]
            sequence = [[rng.uniform(-1, 1)] for _ in range(rng.randint(5, 60))]
            outputs, seq = [], 0
            while seq < len(sequence):
                chunk = sequence[seq : seq + rng.randint(1, 4)]
                answer = await self.step_rest(client, session, {"seq": seq, "inputs": chunk})
                outputs.append(answer["outputs"])
                seq = answer["seq"]
                await asyncio.sleep(self.pace_s)
            self.check(outputs, seq, len(sequence), await self.predict_all(client, sequence))
            deleted = await client.delete(f"/v1/sessions/{session}")
            if deleted.status_code not in (200, 204):
                self.totals.errors += 1

    async def ws_worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        while self.running():
            sequence = [[rng.uniform(-1, 1)] for _ in range(rng.randint(5, 60))]
            outputs: list[Any] = []
            seq = 0
            try:
                async with websockets.connect(f"{self.ws_url}/v1/models/{MODEL}/stream") as ws:
                    orjson.loads(await ws.recv())  # the session, seq 0
                    while seq < len(sequence):
                        chunk = sequence[seq : seq + rng.randint(1, 4)]
                        started = time.perf_counter()
                        await ws.send(orjson.dumps({"seq": seq, "inputs": chunk}).decode())
                        answer = orjson.loads(await ws.recv())
                        self.record(started, "error" not in answer)
                        if "error" in answer:
                            self.totals.retries += 1
                            await asyncio.sleep(0.1)
                            continue
                        outputs.append(answer["outputs"])
                        seq = answer["seq"]
                        await asyncio.sleep(self.pace_s)
            except (OSError, websockets.WebSocketException):
                self.window.errors += 1
                self.totals.errors += 1
                continue
            # the socket is gone; the session expires on its own (TTL)
            self.check(outputs, seq, len(sequence), await self.predict_all(client, sequence))

    async def abandon_worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        while self.running():
            opened = await client.post(f"/v1/models/{MODEL}/sessions")
            if opened.status_code == 201:
                session = opened.json()["session_id"]
                await self.step_rest(client, session, {"seq": 0, "inputs": [[rng.random()]]})
            await asyncio.sleep(0.2)

    async def sampler(self, client: httpx.AsyncClient, every_s: float, started: float) -> None:
        while self.running():
            await asyncio.sleep(every_s)
            if not self.running():
                return  # the load is winding down: not a sample of it
            window, self.window = self.window, Window()
            metrics = (await client.get("/metrics")).text
            live = next(
                (
                    float(line.split()[-1])
                    for line in metrics.splitlines()
                    if line.startswith("rnnserve_live_sessions ")
                ),
                0.0,
            )
            latencies = window.latencies_ms or [0.0]
            self.samples.append(
                Sample(
                    t_s=time.monotonic() - started,
                    rss_mib=rss_mib(self.pid),
                    fds=open_fds(self.pid),
                    live_sessions=int(live),
                    p99_ms=float(np.percentile(latencies, 99)),
                    requests=window.requests,
                    errors=window.errors,
                )
            )


def open_fds(pid: int) -> int:
    """The server's open file descriptors."""
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def rss_mib(pid: int) -> float:
    """The server's resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_load(soak: Soak, every_s: float, seed: int) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=soak.base_url, timeout=30, limits=limits) as client:
        rng = random.Random(seed)
        workers = [
            getattr(soak, f"{kind}_worker")(client, random.Random(rng.random()))
            for kind, count in WORKERS.items()
            for _ in range(count)
        ]
        await asyncio.gather(soak.sampler(client, every_s, time.monotonic()), *workers)


def start_server(port: int, prefix: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RNNSERVE_PROVIDERS": "CPUExecutionProvider",
        "RNNSERVE_SESSION_STORE": f"{REDIS}?key_prefix={prefix}",
        "RNNSERVE_SESSION_TTL_S": str(TTL_S),
        "RNNSERVE_ACCESS_LOG": "false",
        "RNNSERVE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}")


def stop_early(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def drop_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("RNNSERVE_SOAK_MINUTES", "10"))
    )
    parser.add_argument("--pace-ms", type=float, default=5.0, help="think time between requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only (CI)")
    args = parser.parse_args(argv)
    # stopped early (Ctrl-C, SIGTERM, or SIGINT to a background run that ignored it), the
    # server is still stopped and its Redis keys deleted, in `finally` below
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_early)
    port, prefix = free_port(), f"rnnserve-soak-{secrets.token_hex(4)}:"
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rnnserve-soak-{port}.log"
    process = start_server(port, prefix, log_path)
    duration_s = args.minutes * 60
    every_s = max(1.0, duration_s / 120)
    soak = Soak(
        f"http://127.0.0.1:{port}",
        process.pid,
        deadline=time.monotonic() + duration_s,
        pace_s=args.pace_ms / 1000,
    )
    try:
        asyncio.run(run_load(soak, every_s, args.seed))
    finally:
        process.terminate()
        process.wait(timeout=30)
        drop_keys(prefix)
    result = SoakResult(
        minutes=args.minutes,
        samples=soak.samples,
        totals=vars(soak.totals),
        workers=WORKERS,
        ttl_s=TTL_S,
        server_log_errors=log_path.read_text(errors="replace").count('"level":"error"'),
    )
    print(result.summary())
    if not args.no_write:
        write_report(result, ROOT / "bench")
    return 0 if result.passed() else 1


if __name__ == "__main__":
    sys.exit(main())
