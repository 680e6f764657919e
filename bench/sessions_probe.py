"""Sessions probe: steps/s of concurrent single-step streams (step batcher on vs off, and
bench's hand-tuned FastAPI baseline, same run) and memory per live session next to the raw
state size.

    .venv/bin/python -m bench.sessions_probe [--seconds 5] [--rounds 3] [--streams 64]
                                             [--sessions 10000] [--skip-rates]

The model is the benchmark's shape (nn.RNN 32 -> 128, 2 layers, head 8: 1 KiB of state per
stream). Servers run pinned to the first CPU, this load generator on the second; rounds
interleave the servers. Next to steps/s it prints the server's CPU time per step, which a
busy neighbour on a shared machine disturbs far less. Numbers are for comparing the rows of
one run with each other, never with a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import orjson
import websockets

from bench.model import HIDDEN_SIZE, INPUT_SIZE, MODEL_NAME, NUM_LAYERS, export_bench_model

ROOT = Path(__file__).resolve().parent.parent
STATE_BYTES = NUM_LAYERS * HIDDEN_SIZE * 4


def export_model(repository: Path) -> None:
    """The benchmark model through the real exporter."""
    export_bench_model(repository)


def step_bodies(count: int = 16) -> list[bytes]:
    """Pre-encoded one-step inputs the streams cycle through."""
    rng = np.random.default_rng(0)
    return [
        orjson.dumps(np.round(rng.normal(size=(1, INPUT_SIZE)), 4).tolist()) for _ in range(count)
    ]


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client, so the load generator is not the bottleneck."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server so far, all its threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    repository: Path, cpu: int | None, env: dict[str, str], *, baseline: bool = False
) -> Server:
    """rnnserve (or bench's hand-tuned FastAPI baseline) on a free port, pinned to `cpu`."""
    port = free_port()
    if baseline:
        model = repository / MODEL_NAME / "1" / "model.onnx"
        command = [sys.executable, "-m", "bench.baselines.handtuned", "--model", str(model)]
        command += ["--port", str(port)]
    else:
        command = [sys.executable, "-m", "service.cli", "serve", "--repository", str(repository)]
        command += ["--port", str(port), "--log-level", "warning"]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    full_env = {
        **os.environ,
        "RNNSERVE_PROVIDERS": "CPUExecutionProvider",
        "RNNSERVE_ACCESS_LOG": "false",
        "RNNSERVE_MAX_SESSIONS": "1000000",
        "RNNSERVE_MAX_SESSIONS_PER_KEY": "1000000",
        **env,
    }
    process = subprocess.Popen(command, env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL)
    server = Server(process, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _ = asyncio.run(RawHttp(port).request("GET", "/health/ready"))
            if status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("server did not become ready")


async def open_sessions(port: int, count: int, concurrency: int = 64) -> list[str]:
    clients = [RawHttp(port) for _ in range(min(concurrency, count))]
    ids: list[str] = []

    async def worker(client: RawHttp, share: int) -> None:
        for _ in range(share):
            status, body = await client.request("POST", f"/v1/models/{MODEL_NAME}/sessions")
            assert status == 201, body
            ids.append(orjson.loads(body)["session_id"])

    shares = [count // len(clients) + (i < count % len(clients)) for i in range(len(clients))]
    await asyncio.gather(*(worker(c, s) for c, s in zip(clients, shares, strict=True)))
    for client in clients:
        client.close()
    return ids


async def closed_loop(
    calls: list[Callable[[int], Awaitable[None]]], seqs: list[int], seconds: float
) -> int:
    """Every stream sends its next step when the previous answer is back; steps done."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def run(index: int) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await calls[index](seqs[index])
            seqs[index] += 1
            done += 1

    await asyncio.gather(*(run(i) for i in range(len(calls))))
    return done


@dataclass(frozen=True)
class Rate:
    """Steps/s seen by the clients, and the server's CPU time per step (robust to other load
    on the machine: a busy neighbour lowers steps/s but hardly the CPU a step costs)."""

    steps_per_s: float
    server_cpu_us_per_step: float


async def stream_rate(server: Server, streams: int, seconds: float, protocol: str) -> Rate:
    """`streams` concurrent single-step streams over REST or the WebSocket."""
    port = server.port
    ids = await open_sessions(port, streams)
    bodies = step_bodies()
    closers: list[Callable[[], Any]] = []
    calls: list[Callable[[int], Awaitable[None]]] = []
    for index, session_id in enumerate(ids):
        if protocol == "ws":
            socket = await websockets.connect(
                f"ws://127.0.0.1:{port}/v1/sessions/{session_id}/stream",
                compression=None,
                ping_interval=None,
            )
            await socket.recv()  # the greeting: the session, its seq

            async def ws_call(seq: int, s: Any = socket, i: int = index) -> None:
                await s.send(b'{"seq":%d,"inputs":%s}' % (seq, bodies[(i + seq) % 16]), text=True)
                answer = await s.recv(decode=False)
                assert b'"error"' not in answer, answer

            calls.append(ws_call)
            closers.append(socket.close)
        else:
            client = RawHttp(port)

            async def rest_call(
                seq: int, c: RawHttp = client, sid: str = session_id, i: int = index
            ) -> None:
                body = b'{"seq":%d,"inputs":%s}' % (seq, bodies[(i + seq) % 16])
                status, answer = await c.request("POST", f"/v1/sessions/{sid}/steps", body)
                assert status == 200, answer

            calls.append(rest_call)
            closers.append(client.close)
    seqs = [0] * len(calls)
    await closed_loop(calls, seqs, 0.5)  # warm-up
    started, cpu_started = time.perf_counter(), server.cpu_s()
    done = await closed_loop(calls, seqs, seconds)
    rate = Rate(done / (time.perf_counter() - started), 1e6 * (server.cpu_s() - cpu_started) / done)
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    return rate


def mean_step_batch(port: int) -> float:
    _, body = asyncio.run(RawHttp(port).request("GET", "/metrics"))
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("rnnserve_batch_size_") and 'kind="step"' in line:
            values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return values.get("rnnserve_batch_size_sum", 0.0) / max(
        1.0, values.get("rnnserve_batch_size_count", 0.0)
    )


async def populate(port: int, count: int) -> None:
    """Open `count` sessions and step each once (so each holds its own state and answer)."""
    ids = await open_sessions(port, count)
    body = b'{"seq":0,"inputs":%s}' % step_bodies(1)[0]
    clients = [RawHttp(port) for _ in range(64)]

    async def worker(client: RawHttp, mine: list[str]) -> None:
        for session_id in mine:
            status, answer = await client.request("POST", f"/v1/sessions/{session_id}/steps", body)
            assert status == 200, answer

    await asyncio.gather(*(worker(c, ids[i::64]) for i, c in enumerate(clients)))
    for client in clients:
        client.close()


async def traced_bytes_per_session(repository: Path, count: int) -> float:
    """Python heap growth per live session in process (tracemalloc), each stepped once."""
    from service.engine import Engine
    from service.settings import Settings

    settings = Settings(
        repository=repository, providers=["CPUExecutionProvider"], max_sessions=count + 1
    )
    engine = Engine(settings)
    await engine.start()
    body = orjson.loads(step_bodies(1)[0])
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, count, 256):
            records = [
                await engine.sessions.open(MODEL_NAME, None, None, None)
                for _ in range(min(256, count - start))
            ]
            await asyncio.gather(
                *(
                    engine.sessions.step(r.session_id, seq=0, inputs=body, owner=None)
                    for r in records
                )
            )
        del records
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return grown / count
    finally:
        await engine.stop()


SERVERS = (
    ("rnnserve, step batcher on", {}, False),
    ("rnnserve, step batcher off", {"RNNSERVE_MAX_STEP_BATCH_SIZE": "1"}, False),
    ("hand-tuned FastAPI baseline", {}, True),
)


def measure_rates(
    repository: Path, cpu: int | None, streams: int, seconds: float, rounds: int
) -> None:
    """Steps/s and server CPU per step over the WebSocket and REST for each server; rounds
    interleave the servers (all started up front, idle when not measured)."""
    print(f"{streams} concurrent single-step streams, {seconds:.0f} s per row, median of {rounds}")
    servers = [(label, start_server(repository, cpu, env, baseline=b)) for label, env, b in SERVERS]
    rates: dict[tuple[str, str], list[Rate]] = {}
    try:
        for _ in range(rounds):
            for label, server in servers:
                for protocol in ("ws", "rest"):
                    rate = asyncio.run(stream_rate(server, streams, seconds, protocol))
                    rates.setdefault((label, protocol), []).append(rate)
        print(f"{'server':28} {'protocol':8} {'steps/s':>8} {'CPU us/step':>12} {'mean batch':>11}")
        for (label, protocol), values in rates.items():
            server = dict(servers)[label]
            batch = "-" if label == SERVERS[2][0] else f"{mean_step_batch(server.port):.1f}"
            steps = median(r.steps_per_s for r in values)
            cpu_us = median(r.server_cpu_us_per_step for r in values)
            print(f"{label:28} {protocol:8} {steps:8.0f} {cpu_us:12.1f} {batch:>11}")
    finally:
        for _, server in servers:
            server.stop()
    on, off, handtuned = (label for label, _, _ in SERVERS)

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> str:
        steps = median(r.steps_per_s for r in rates[a]) / median(r.steps_per_s for r in rates[b])
        cpu = median(r.server_cpu_us_per_step for r in rates[b]) / median(
            r.server_cpu_us_per_step for r in rates[a]
        )
        return f"{steps:.2f}x in steps/s, {cpu:.2f}x in server CPU per step"

    print(f"batcher on / off over the WebSocket: {ratio((on, 'ws'), (off, 'ws'))}")
    print(
        f"rnnserve WebSocket / hand-tuned per-step REST: {ratio((on, 'ws'), (handtuned, 'rest'))}"
    )


def measure_memory(repository: Path, cpu: int | None, sessions: int) -> None:
    """Bytes per live session: server RSS delta, and the Python heap in process."""
    print(f"\nmemory per live session at {sessions} sessions (raw state {STATE_BYTES} B)")
    server = start_server(repository, cpu, {})
    try:
        before = server.rss_bytes()
        asyncio.run(populate(server.port, sessions))
        rss = (server.rss_bytes() - before) / sessions
    finally:
        server.stop()
    print(f"  server RSS delta: {rss:7.0f} B/session ({rss / STATE_BYTES:.2f}x state)")
    traced = asyncio.run(traced_bytes_per_session(repository, sessions))
    print(f"  tracemalloc:      {traced:7.0f} B/session ({traced / STATE_BYTES:.2f}x state)")


def main() -> None:
    """Export the model, measure, clean up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-rates", action="store_true")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    if server_cpu is not None:
        os.sched_setaffinity(0, {cpus[1]})
    repository = Path(tempfile.mkdtemp(prefix="sessions-probe-"))
    try:
        export_model(repository)
        if not args.skip_rates:
            measure_rates(repository, server_cpu, args.streams, args.seconds, args.rounds)
        measure_memory(repository, server_cpu, args.sessions)
    finally:
        shutil.rmtree(repository, ignore_errors=True)


if __name__ == "__main__":
    main()
