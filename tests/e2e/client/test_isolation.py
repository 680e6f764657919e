"""The client installs and imports without the server's dependencies."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.support.servers import ROOT

SERVER_ONLY = ("service", "export", "onnxruntime", "torch", "fastapi", "starlette", "numpy")


def test_importing_the_client_loads_none_of_the_servers_packages() -> None:
    probe = (
        "import sys, rnnserve_client; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    )
    assert result.stdout.strip() == "[]"


def test_the_client_package_depends_on_httpx_and_websockets_only() -> None:
    project = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())
    names = {
        dep.split(">")[0].split("=")[0].split("[")[0] for dep in project["project"]["dependencies"]
    }
    assert names == {"httpx", "websockets"}
