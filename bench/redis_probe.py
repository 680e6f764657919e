"""Redis probe: steps/s of 64 concurrent single-step REST streams with the Redis session store
next to the memory store (same run, alternating), and Redis round trips per step.

    .venv/bin/python -m bench.redis_probe [--seconds 5] [--streams 64] [--rounds 2]

One rnnserve process per store, pinned to the first CPU, the load generator on the second, a
private `redis-server` (own port, no persistence) unpinned. The Redis-backed server gets a
10 s store timeout, so that a starved Redis on a busy machine shows as latency here, not as
503s that end the run. Round trips are counted twice:
by the server (pipelines sent, from /metrics) and by Redis (read events, INFO stats); commands
by Redis (INFO commandstats). Numbers compare the rows of one run, never a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.sessions_probe import (
    Rate,
    RawHttp,
    export_model,
    free_port,
    start_server,
    stream_rate,
)


@dataclass(frozen=True)
class Counters:
    """What one measurement moves: steps applied, pipelines sent, Redis reads and commands."""

    steps: float
    pipelines: float
    pipeline_commands: float
    redis_reads: float
    redis_cpu_s: float
    redis_calls: dict[str, float]


def server_counters(port: int) -> tuple[float, float, float]:
    """Applied steps, store round trips, commands in them (from the server's /metrics)."""
    _, body = asyncio.run(RawHttp(port).request("GET", "/metrics"))
    values = {"steps": 0.0, "count": 0.0, "sum": 0.0}
    for line in body.decode().splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == 'rnnserve_session_steps_total{outcome="applied"}':
            values["steps"] = float(value)
        elif sample == "rnnserve_session_store_round_trip_commands_count":
            values["count"] = float(value)
        elif sample == "rnnserve_session_store_round_trip_commands_sum":
            values["sum"] = float(value)
    return values["steps"], values["count"], values["sum"]


def snapshot(port: int, client: redis.Redis | None) -> Counters:
    steps, pipelines, commands = server_counters(port)
    reads, cpu_s, calls = 0.0, 0.0, {}
    if client is not None:
        reads = float(client.info("stats")["total_reads_processed"])
        cpu = client.info("cpu")
        cpu_s = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        calls = {k: float(v["calls"]) for k, v in client.info("commandstats").items()}
    return Counters(steps, pipelines, commands, reads, cpu_s, calls)


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--daemonize", "no"]
    # started before this process pins itself, so it may run on either CPU
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            if redis.Redis(port=port).ping():
                return process, port
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def measure(
    repository: Path, cpu: int | None, env: dict[str, str], client: redis.Redis | None, args: Any
) -> tuple[Rate, Counters, Counters]:
    server = start_server(repository, cpu, env)
    try:
        before = snapshot(server.port, client)
        rate = asyncio.run(stream_rate(server, args.streams, args.seconds, "rest"))
        return rate, before, snapshot(server.port, client)
    finally:
        server.stop()


def report(label: str, rate: Rate, before: Counters, after: Counters) -> None:
    steps = max(1.0, after.steps - before.steps)
    line = (
        f"{label:8} {rate.steps_per_s:7.0f} steps/s {rate.server_cpu_us_per_step:5.0f} us CPU/step"
    )
    if after.pipelines > before.pipelines:
        pipelines = after.pipelines - before.pipelines
        commands = after.pipeline_commands - before.pipeline_commands
        reads = after.redis_reads - before.redis_reads
        sent = {
            name.removeprefix("cmdstat_"): after.redis_calls[name] - before.redis_calls.get(name, 0)
            for name in after.redis_calls
            if name in ("cmdstat_evalsha", "cmdstat_hgetall", "cmdstat_eval", "cmdstat_script")
        }
        per_step = ", ".join(f"{k} {v / steps:.2f}" for k, v in sorted(sent.items()) if v)
        redis_us = 1e6 * (after.redis_cpu_s - before.redis_cpu_s) / steps
        line += (
            f" + redis {redis_us:.0f} us"
            f" | round trips/step: {pipelines / steps:.3f} (server),"
            f" {reads / steps:.3f} (redis reads)"
            f" | commands/step: {commands / steps:.2f} ({per_step})"
            f" | commands/round trip: {commands / pipelines:.1f}"
        )
    print(line, flush=True)


def main() -> None:
    """Export the probe model, alternate memory and Redis servers, print a row each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    other_cpu = cpus[1] if len(cpus) > 1 else None
    process, port = start_redis()
    if other_cpu is not None:
        os.sched_setaffinity(0, {other_cpu})
    repository = Path(tempfile.mkdtemp(prefix="redis-probe-"))
    client = redis.Redis(port=port)
    try:
        export_model(repository)
        print(f"{args.streams} concurrent single-step REST streams, {args.seconds:.0f} s each")
        redis_env = {
            "RNNSERVE_SESSION_STORE": f"redis://127.0.0.1:{port}/0",
            "RNNSERVE_STORE_TIMEOUT_S": "10",
        }
        for _ in range(args.rounds):
            report("memory", *measure(repository, server_cpu, {}, None, args))
            report("redis", *measure(repository, server_cpu, redis_env, client, args))
    finally:
        client.close()
        process.terminate()
        process.wait()
        shutil.rmtree(repository, ignore_errors=True)


if __name__ == "__main__":
    main()
