"""What the harness reads from the side: process CPU and RSS from /proc, rnnserve's /metrics,
Redis counters, and py-spy profiles of a server under load.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen.rawhttp import encode_request, fetch
from bench.procs import group_members


@dataclass(frozen=True)
class SchedTimes:
    """CPU time a process group got, and time its threads were runnable but waited for a CPU."""

    cpu_s: float
    waited_s: float


def group_sched(pgid: int) -> SchedTimes:
    """Summed /proc/PID/task/TID/schedstat of every live process in the group (PyTriton has
    three); the wait tells a server starved by other work from one that is idle."""
    cpu_ns = wait_ns = 0
    for pid in group_members(pgid):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "schedstat").read_text().split()
            except OSError:
                continue
            cpu_ns += int(fields[0])
            wait_ns += int(fields[1])
    return SchedTimes(cpu_ns / 1e9, wait_ns / 1e9)


def rss_bytes(pid: int) -> int:
    """VmRSS of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass(frozen=True)
class BatchTotals:
    """Sum and count of rnnserve_batch_size for one kind (predict or step)."""

    total: float
    count: float


async def batch_totals(port: int, kind: str) -> BatchTotals | None:
    """Read the batch-size histogram's _sum/_count for `kind` from /metrics (None if absent)."""
    answer = await fetch(port, encode_request("GET", "/metrics"))
    if answer.status != 200:
        return None
    values: dict[str, float] = {}
    for line in answer.body.decode().splitlines():
        match = re.match(r"rnnserve_batch_size_(sum|count)\{([^}]*)\} (\S+)", line)
        if match and f'kind="{kind}"' in match.group(2):
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
    if "count" not in values:
        return None
    return BatchTotals(values.get("sum", 0.0), values["count"])


def mean_batch(before: BatchTotals | None, after: BatchTotals | None) -> float | None:
    """Mean sequences per onnxruntime call between two readings."""
    if before is None or after is None or after.count <= before.count:
        return None
    return (after.total - before.total) / (after.count - before.count)


def redis_command(port: int, *args: str, host: str = "127.0.0.1") -> bytes:
    """One RESP command on a fresh connection (enough for PING, INFO, SELECT+DBSIZE)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        payload += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(payload)
        data = b""
        while not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _complete(data: bytes) -> bool:
    head, separator, rest = data.partition(b"\r\n")
    if not separator:
        return False
    if head.startswith(b"$") and int(head[1:]) >= 0:
        return len(rest) >= int(head[1:]) + 2
    return True


def redis_up(port: int = 6379) -> bool:
    """Does a Redis answer PING on loopback?"""
    try:
        return redis_command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


def redis_commands_processed(port: int = 6379) -> int | None:
    """Redis's server-wide total_commands_processed counter."""
    try:
        info = redis_command(port, "INFO", "stats").decode(errors="replace")
    except OSError:
        return None
    match = re.search(r"total_commands_processed:(\d+)", info)
    return int(match.group(1)) if match else None


def py_spy() -> str | None:
    """py-spy from this interpreter's environment or PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy record (raw collapsed stacks) of one PID for the measurement window."""

    def __init__(self, pid: int, out_path: Path, duration_s: float) -> None:
        self.pid = pid
        self.out_path = out_path
        self.duration_s = duration_s
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Attach without pausing the target."""
        binary = py_spy()
        if binary is None:
            return
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        seconds = str(max(1, int(self.duration_s)))
        self.process = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(self.pid), "--duration", seconds, "--rate", "200",
            "--nonblocking", "--format", "raw", "--output", str(self.out_path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def finish(self) -> str:
        """Wait for py-spy; its collapsed stacks ("" when py-spy is missing or wrote nothing)."""
        if self.process is None:
            return ""
        await self.process.wait()
        return self.out_path.read_text() if self.out_path.exists() else ""


# Leaf frame -> component, first match wins: where a server's samples land, in plain words.
COMPONENTS = (
    ("onnxruntime (the model itself)", ("onnxruntime",)),
    ("rnnserve: JSON and tensor codecs", ("service/edges/http/codec", "service/edges/v2/")),
    ("rnnserve: sessions and store", ("service/core/sessions", "service/operations/sessions")),
    ("rnnserve: batching", ("service/core/batching", "service/core/runtime", "service/operations")),
    ("rnnserve: routes and middleware", ("service/edges/",)),
    ("rnnserve: other", ("service/",)),
    ("event loop and socket I/O (uvloop, C)", ("Runner.run", "asyncio/")),
    ("thread hand-off (executor, locks)", ("concurrent/futures", "threading.py")),
    ("uvicorn HTTP/WebSocket protocol", ("uvicorn/",)),
    ("websockets framing", ("websockets/",)),
    ("FastAPI/Starlette routing and middleware", ("fastapi/", "starlette/")),
    ("numpy", ("numpy/",)),
    ("prometheus_client", ("prometheus_client",)),
)


def component_of(frame: str) -> str:
    """The component a leaf frame belongs to."""
    for name, needles in COMPONENTS:
        if any(needle in frame for needle in needles):
            return name
    return "other Python"


def summarise_collapsed(text: str, top: int = 15) -> str:
    """Samples by component, self time by leaf frame and inclusive time by frame, in %."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            re.sub(r" \(.*?/(site-packages|lib/python3\.\d+)/", " (", f) for f in stack.split(";")
        ]
        total += count
        own[frames[-1]] += count
        components[component_of(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "by component (leaf frame):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in components.most_common()]
    lines += ["", "self time (leaf frames):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)
