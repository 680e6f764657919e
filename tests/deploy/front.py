"""deploy/nginx.conf outside Docker: loopback replicas in place of the compose service name.

nginx resolves `rnnserve` (the compose service) when it starts, and Docker's DNS answers one
address per replica. Outside Docker that name does not resolve, so the tests put loopback
addresses in place of that one `server` line, one per replica, and change nothing else but the
listen address and pid file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import NGINX_CONF


def nginx_binary() -> str:
    """The nginx binary; skips where nginx is not installed (Debian: nginx-light)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


UPSTREAM_SERVER = re.compile(r"^(\s*)server (\S+):(\d+)( [^;]*)?;$", re.MULTILINE)


def loopback_config(*, upstream_ports: list[int], listen_port: int, pid_path: Path) -> str:
    """deploy/nginx.conf with loopback replicas in place of the compose service name."""
    text = NGINX_CONF.read_text()
    (match,) = UPSTREAM_SERVER.finditer(text)
    indent, params = match.group(1), match.group(4) or ""
    servers = "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in upstream_ports)
    text = text[: match.start()] + servers + text[match.end() :]
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
    return text.replace("pid /tmp/nginx.pid;", f"pid {pid_path};")


def start_front(nginx: str, config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground on the given config, logging to `log_path`."""
    # Append mode: nginx reopens /dev/stdout for the access log, and without O_APPEND the two
    # file descriptions would overwrite each other's lines.
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [nginx, "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until_up(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Poll `url` until it answers (bounded), failing with nginx's log if nginx exits."""
    for _ in range(200):
        assert process.poll() is None, log_path.read_text()
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"nginx did not answer:\n{log_path.read_text()}")
