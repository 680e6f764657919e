"""Server processes the harness starts: pinned, recorded by PID, always stopped.

Every server runs in a process group of its own (so PyTriton's tritonserver and stub go with
it), is written to `pids.json` in the output folder the moment it starts, and is stopped by its
group id in `finally`, at exit, and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the servers and the load generator run on, and how that was enforced."""

    server_cpus: tuple[int, ...]
    client_cpus: tuple[int, ...]
    method: str

    def describe(self) -> str:
        """One line for the report."""
        if self.method == "none":
            return "not pinned (fewer than 2 CPUs available)"
        return (
            f"servers on CPU {','.join(map(str, self.server_cpus))}, load generator and harness "
            f"on CPU {','.join(map(str, self.client_cpus))} ({self.method})"
        )


def pin_harness() -> Pinning:
    """Pin this process (the load generator) to the second CPU; servers get the first."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(tuple(cpus), tuple(cpus), "none")
    server, client = (cpus[0],), (cpus[1],)
    os.sched_setaffinity(0, set(client))
    method = "taskset" if shutil.which("taskset") else "sched_setaffinity"
    return Pinning(server, client, method)


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server and how to know it is ready."""

    name: str
    command: tuple[str, ...]
    port: int
    ready_path: str = "/health/ready"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """Where it listens (loopback only)."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Server:
    """A started server process (the leader of its own process group)."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    ready_s: float | None = None

    @property
    def pid(self) -> int:
        """The leader's PID, also the group id."""
        return self.process.pid

    def failure(self) -> str:
        """The last exception the server logged (else its last line), for n/a and error rows."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        decoded = "\n".join(_log_text(line) for line in lines)
        errors = re.findall(r"^\s*([\w.]+(?:Error|Exception): .+)$", decoded, re.MULTILINE)
        if errors:
            return str(errors[-1]).strip()[:240]
        return lines[-1][:240] if lines else "no output"


def _log_text(line: str) -> str:
    """A JSON log line's string fields (tracebacks included), or the line itself."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(record, dict):
        return line
    return "\n".join(str(v) for v in record.values() if isinstance(v, str))


def process_starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a live process from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class ServerPool:
    """Starts servers, records them, and stops every one it started."""

    def __init__(self, *, out_dir: Path, pinning: Pinning) -> None:
        self.out_dir = out_dir
        self.log_dir = out_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pinning = pinning
        self.records: list[dict[str, Any]] = []
        self.live: list[Server] = []
        atexit.register(self.stop_all)

    def start(self, spec: ServerSpec) -> Server:
        """Launch the process pinned to the server CPU; does not wait for readiness."""
        command = list(spec.command)
        if self.pinning.method == "taskset":
            command = ["taskset", "-c", ",".join(map(str, self.pinning.server_cpus)), *command]
        log_path = self.log_dir / f"{spec.name}-{spec.port}.log"
        # Only the spec's RNNSERVE_* settings apply: none leak in from the caller's shell.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
        env = {**inherited, **spec.env}
        started_at = time.perf_counter()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        if self.pinning.method == "sched_setaffinity":
            with contextlib.suppress(OSError):
                os.sched_setaffinity(process.pid, set(self.pinning.server_cpus))
        server = Server(spec, process, log_path, started_at)
        self.live.append(server)
        self.records.append(
            {
                "name": spec.name,
                "pid": process.pid,
                "pgid": process.pid,
                "starttime": process_starttime(process.pid),
                "command": command,
            }
        )
        (self.out_dir / "pids.json").write_bytes(
            orjson.dumps(self.records, option=orjson.OPT_INDENT_2)
        )
        return server

    def wait_ready(self, server: Server, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll the ready route every 10 ms; returns seconds from launch to the first 200."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.spec.name} exited with {server.process.returncode}: "
                    f"{server.failure()}"
                )
            if ready_status(server.spec.port, server.spec.ready_path) == 200:
                server.ready_s = time.perf_counter() - server.started_at
                return server.ready_s
            time.sleep(0.01)
        raise RuntimeError(f"{server.spec.name} not ready within {timeout_s:.0f} s")

    def launch(self, spec: ServerSpec) -> Server:
        """Start and wait until ready; a server that never gets ready is stopped."""
        server = self.start(spec)
        try:
            self.wait_ready(server)
        except BaseException:
            self.stop(server)
            raise
        return server

    def stop(self, server: Server) -> None:
        """SIGTERM to its group, SIGKILL after a grace period, until no member is left."""
        pgid = server.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline:
                server.process.poll()
                if not group_members(pgid):
                    break
                time.sleep(0.05)
            if not group_members(pgid):
                break
        server.process.wait()
        if server in self.live:
            self.live.remove(server)

    def stop_all(self) -> None:
        """Stop every server still running (idempotent)."""
        for server in list(self.live):
            self.stop(server)


def ready_status(port: int, path: str) -> int | None:
    """The status of one GET on loopback, or None when nothing answers yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C so every `finally` stops its servers."""

    def _raise(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)
