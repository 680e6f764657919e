"""`python -m bench.hostile`: a well-behaved client's predict latency with and without hostile
connections, against one real server on loopback with its default deadlines.

The attacker runs in its own process and keeps IDLE sockets that never speak, TRICKLE sockets
sending a request line and headers a byte every 100 ms, and BODY sockets sending complete
headers then a body a byte every 100 ms, reopening each one the server closes. The client
sends sequential predicts for SECONDS in each phase (no attacker, attacker), and the factor is
attacked / quiet for p50 and p99. The section between the hostile markers of bench/RESULTS.md
is replaced with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.soak import ROOT, free_port

IDLE, TRICKLE, BODY = 300, 100, 100
SECONDS = 40.0  # past the default request timeout (30 s): trickling sockets get cut too
PREDICT = {"inputs": [[[0.1], [0.2], [0.3], [0.4]] * 4]}
START, END = "<!-- hostile:start -->", "<!-- hostile:end -->"
HEAD = (
    b"POST /v1/models/co2-forecaster/predict HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
)


async def hold(port: int, first: bytes, trickle: bytes, counter: list[int]) -> None:
    """Keep one hostile socket open: reopen it whenever the server closes it."""
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(first)
            for byte in trickle:
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
            else:
                await reader.read()
            counter[0] += 1
            writer.close()
        except (ConnectionError, OSError):
            counter[0] += 1
            await asyncio.sleep(0.05)


async def attack(port: int) -> None:
    counter = [0]
    idle = [hold(port, b"", b"", counter) for _ in range(IDLE)]
    trickle = [
        hold(port, b"", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 1000, counter)
        for _ in range(TRICKLE)
    ]
    body = [hold(port, HEAD, b"[" * 100_000, counter) for _ in range(BODY)]
    await asyncio.gather(*idle, *trickle, *body)


def attacker(port: int) -> None:
    """The attacker process's entry point."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(attack(port))


async def measure(base_url: str, seconds: float) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            answer = await client.post("/v1/models/co2-forecaster/predict", json=PREDICT)
            if answer.status_code != 200:
                raise RuntimeError(f"well-behaved predict failed: {answer.status_code}")
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def rejections(base_url: str) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith("rnnserve_limit_rejections_total{"):
            label = line.split('"')[1]
            found[label] = float(line.rsplit(" ", 1)[1])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    port = free_port()
    env = {
        **os.environ,
        "RNNSERVE_PROVIDERS": "CPUExecutionProvider",
        "RNNSERVE_ACCESS_LOG": "false",
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/health/ready").status_code == 200:
                    break
            time.sleep(0.1)
        asyncio.run(measure(base_url, 2.0))  # warm-up
        quiet = asyncio.run(measure(base_url, args.seconds))
        process = multiprocessing.Process(target=attacker, args=(port,), daemon=True)
        process.start()
        time.sleep(3.0)  # let the attacker open its sockets
        fds_attacked = len(list(Path(f"/proc/{server.pid}/fd").iterdir()))
        attacked = asyncio.run(measure(base_url, args.seconds))
        process.terminate()
        process.join(10)
        closed = rejections(base_url)
    finally:
        server.terminate()
        server.wait(30)
    q50, q99 = np.percentile(quiet, [50, 99])
    a50, a99 = np.percentile(attacked, [50, 99])
    lines = [
        f"hostile: {IDLE} idle + {TRICKLE} header-trickling + {BODY} body-trickling sockets "
        f"(reopened when closed), server fds during the attack: {fds_attacked}",
        f"quiet:    {len(quiet)} predicts, p50 {q50:.2f} ms, p99 {q99:.2f} ms",
        f"attacked: {len(attacked)} predicts, p50 {a50:.2f} ms, p99 {a99:.2f} ms, all 200",
        f"factor: p50 {a50 / q50:.2f}x, p99 {a99 / q99:.2f}x",
        f"closed by the deadlines: {closed}",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write(lines, args.seconds)
    return 0


def write(lines: list[str], seconds: float) -> None:
    section = "\n".join(
        [
            START,
            f"## Hostile clients ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"`python -m bench.hostile --seconds {seconds:g}`: one server with the default "
            "deadlines (idle 5 s, request 30 s), a well-behaved client sending sequential "
            "predicts (co2-forecaster, 16 steps) for the same time without and with the "
            "attacker process. Shared 2-core machine: the attacker's process competes for CPU "
            "too, so the factor is an upper bound of what the connections alone cost.",
            "",
            "```",
            *lines,
            "```",
            END,
        ]
    )
    results = ROOT / "bench" / "RESULTS.md"
    text = results.read_text()
    if START in text and END in text:
        head, _, rest = text.partition(START)
        text = head + section + rest.partition(END)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
