"""A Docker engine for the image tests, and the images they need when no registry answers.

Measured on this kind of sandbox (Debian 12 VM, cgroup v1, root, no image registry reachable,
package registries reachable): Debian's `docker.io` 20.10 runs as root with `--iptables=false
--ip-masq=false` (nothing here needs NAT: builds use the host network, the tests reach
containers through published loopback ports, which docker-proxy serves without iptables) and
the default overlay2 storage driver. The engine started here keeps its data root under
/var/lib/rnnserve-ci, so the stand-in images and build layers are cached between runs.

Stand-ins: `python:3.12.12-slim-bookworm` becomes a debootstrap'd Debian bookworm with Debian's
python3 (3.11), python3-venv and pip at the slim image's paths (/usr/local/bin/python, pip), the
host's CA bundle, and a pip.conf naming it, so pip inside the build reaches the index the host
reaches. Redis and nginx become that base plus Debian's redis-server and nginx-light.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/rnnserve-ci")
RUN_DIR = Path("/run/rnnserve-ci")
SOCKET = RUN_DIR / "docker.sock"
DOCKERD_FLAGS = ("--iptables=false", "--ip-masq=false")

STAND_IN_LABEL = "org.rnnserve.stand-in"
# bump when debootstrap_rootfs changes, so a cached root filesystem is rebuilt
STAND_IN_RECIPE = "1"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
SERVICE_PACKAGES = ("redis-server", "nginx-light", "wget")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Engine:
    """A docker client bound to one engine (its environment names the engine's socket)."""

    docker: str
    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this engine; fails with its output unless `check=False`."""
        done = subprocess.run(
            [self.docker, *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            input=stdin,
        )
        result = subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr or result.stdout}")
        return result

    def has_image(self, name: str) -> bool:
        """Whether the engine holds an image of that name."""
        return self.run("image", "inspect", name, check=False, timeout=60).returncode == 0

    def label(self, name: str, key: str) -> str:
        """A label of a local image ('' when absent)."""
        template = "{{ index .Config.Labels " + f'"{key}"' + " }}"
        found = self.run("image", "inspect", "--format", template, name).stdout.strip()
        return "" if found == "<no value>" else found


def client_binary() -> str | None:
    """The docker CLI: Debian's, which matches its engine, before any other on PATH."""
    debian = Path("/usr/bin/docker")
    return str(debian) if debian.exists() else shutil.which("docker")


def answers(docker: str, env: dict[str, str]) -> bool:
    """Whether an engine answers this client."""
    try:
        done = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextmanager
def engine_lock(timeout_s: float = 1800) -> Iterator[None]:
    """One test session at a time drives the engine these tests start: two sessions on one
    machine would share its socket and data root, and the first to end would stop it under the
    other. A second session waits (bounded) for the first to finish."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "engine.lock").open("w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another test session held the engine too long") from None
                time.sleep(1)
        yield


def start_engine() -> subprocess.Popen[bytes]:
    """dockerd on a socket and data root of its own; returns once it answers (bounded)."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log = (STATE_DIR / "dockerd.log").open("ab")
    command = [
        dockerd,
        *DOCKERD_FLAGS,
        f"--host=unix://{SOCKET}",
        f"--data-root={STATE_DIR / 'docker'}",
        f"--exec-root={RUN_DIR / 'exec'}",
        f"--pidfile={RUN_DIR / 'dockerd.pid'}",
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}"}
    docker = client_binary()
    assert docker is not None
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {process.returncode}: see {log.name}")
        if answers(docker, env):
            return process
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"dockerd did not answer within 60 s: see {log.name}")


def stop_engine(process: subprocess.Popen[bytes]) -> None:
    """Stop the dockerd we started (by its PID); it stops its own containerd."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def debootstrap_rootfs(target: Path, packages: tuple[str, ...]) -> None:
    """A minimal bookworm with `packages`, slimmed like the slim images (no docs, no apt lists)."""
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            "bookworm",
            str(target),
            DEBIAN_MIRROR,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        for entry in (target / junk).glob("*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    local_bin = target / "usr/local/bin"
    for name, points_to in (("python", "python3"), ("python3", "python3"), ("pip", "pip3")):
        (local_bin / name).unlink(missing_ok=True)
        (local_bin / name).symlink_to(f"/usr/bin/{points_to}")
    shutil.copy2(HOST_CA_BUNDLE, target / "etc/ssl/certs/ca-certificates.crt")
    (target / "etc/pip.conf").write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n")


def stand_in_base(engine: Engine, name: str) -> None:
    """Import a debootstrap'd Debian under `name`; the root filesystem tarball is cached."""
    recipe = f"{STAND_IN_RECIPE} {' '.join(BASE_PACKAGES)}".encode()
    key = hashlib.sha256(recipe + HOST_CA_BUNDLE.read_bytes())
    tarball = STATE_DIR / f"stand-in-bookworm-{key.hexdigest()[:12]}.tar"
    if not tarball.exists():
        rootfs = STATE_DIR / "rootfs-build"
        shutil.rmtree(rootfs, ignore_errors=True)
        debootstrap_rootfs(rootfs, BASE_PACKAGES)
        partial = tarball.with_suffix(".partial")
        tar = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."]
        subprocess.run(tar, check=True, timeout=600)
        partial.rename(tarball)
        shutil.rmtree(rootfs)
    changes = [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"LABEL {STAND_IN_LABEL}=debootstrap-bookworm-minbase",
        'CMD ["python3"]',
    ]
    arguments = ["import", *(f"--change={c}" for c in changes), str(tarball), name]
    engine.run(*arguments, timeout=600)


def stand_in_service(engine: Engine, name: str, base: str, *, kind: str) -> None:
    """`base` plus Debian's redis-server and nginx-light, behaving as `kind`'s official image."""
    commands = {
        # The official redis image is built with protected mode off (it listens on a private
        # network); Debian's binary has it on, so the stand-in turns it off the same way.
        "redis": 'ENTRYPOINT ["sh", "-c", "exec \\"$0\\" --protected-mode no \\"$@\\""]\n'
        'CMD ["redis-server"]\nUSER redis\n',
        "nginx": 'CMD ["nginx", "-g", "daemon off;"]\n',
    }
    dockerfile = (
        f"FROM {base}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends "
        f"{' '.join(SERVICE_PACKAGES)} && rm -rf /var/lib/apt/lists/*\n"
        f"LABEL {STAND_IN_LABEL}=debian-{kind}\n{commands[kind]}"
    )
    build = ["build", "--network", "host", "--tag", name, "-"]
    engine.run(*build, stdin=dockerfile.encode(), timeout=900)


def obtain(engine: Engine, name: str, make_stand_in: Callable[[], None]) -> str:
    """Use `name` if the engine has it, pull it if a registry answers, else build a stand-in.
    Returns what happened, for the test output."""
    if engine.has_image(name):
        stand_in = engine.label(name, STAND_IN_LABEL)
        return f"{name}: cached stand-in ({stand_in})" if stand_in else f"{name}: present"
    pulled = engine.run("pull", name, check=False, timeout=120)
    if pulled.returncode == 0:
        return f"{name}: pulled"
    reason = (pulled.stderr.strip().splitlines() or ["no answer"])[-1]
    began = time.monotonic()
    make_stand_in()
    return (
        f"{name}: no registry answered ({reason}); built a stand-in "
        f"({engine.label(name, STAND_IN_LABEL)}) in {time.monotonic() - began:.0f} s"
    )
