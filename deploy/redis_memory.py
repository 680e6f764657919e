"""How much Redis memory one streaming session of your model takes, measured, for capacity planning.

Starts a private `redis-server` (no persistence) on a free loopback port and one `rnnserve serve`
on it, opens N sessions of the model and steps each once (so each holds a state and a last
answer, as live streams do), and divides Redis's `used_memory` growth by N:

    python deploy/redis_memory.py --repository models --model co2-forecaster --sessions 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll `url` until 200 (bounded to 60 s), failing if the process exits."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rnnserve exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within 60 s")


async def open_and_step(base_url: str, model: str, step: Any, count: int) -> None:
    """Open `count` sessions and step each once, 32 at a time."""
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(32)

        async def one() -> None:
            async with semaphore:
                opened = await client.post(f"/v1/models/{model}/sessions")
                opened.raise_for_status()
                session = opened.json()["session_id"]
                stepped = await client.post(
                    f"/v1/sessions/{session}/steps", json={"seq": 0, "inputs": [step]}
                )
                stepped.raise_for_status()

        await asyncio.gather(*(one() for _ in range(count)))


def first_step(base_url: str, model: str) -> Any:
    """A valid step for the model: token 0, or zeros for every feature."""
    card = httpx.get(f"{base_url}/v1/models/{model}").json()["card"]
    if card.get("vocab_size"):
        return 0
    return [0.0] * int(card["input_size"])


def main() -> int:
    """Measure and print bytes per session and sessions per GiB."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--sessions", type=int, default=5000)
    args = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("error: redis-server is not installed", file=sys.stderr)
        return 1
    redis_port, port = free_port(), free_port()
    no_persistence = ["--save", "", "--appendonly", "no"]
    store = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", *no_persistence],
        stdout=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "RNNSERVE_SESSION_STORE": f"redis://127.0.0.1:{redis_port}/0",
        "RNNSERVE_PROVIDERS": "CPUExecutionProvider",
        "RNNSERVE_ACCESS_LOG": "false",
        "RNNSERVE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    server = subprocess.Popen([*command, "--repository", str(args.repository)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base_url}/health/ready", server)
        client = redis.Redis(port=redis_port)
        before = int(client.info("memory")["used_memory"])
        asyncio.run(
            open_and_step(base_url, args.model, first_step(base_url, args.model), args.sessions)
        )
        after = int(client.info("memory")["used_memory"])
        keys = int(client.dbsize())
    finally:
        server.terminate()
        server.wait(timeout=30)
        store.terminate()
        store.wait(timeout=30)
    per_session = (after - before) / args.sessions
    print(
        f"{args.model}: {args.sessions} sessions stepped once, {keys} keys, "
        f"used_memory {before / 2**20:.1f} -> {after / 2**20:.1f} MiB: "
        f"{per_session:,.0f} B per session, {2**30 / per_session:,.0f} sessions per GiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
