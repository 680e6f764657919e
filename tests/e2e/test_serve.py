"""A real `rnnserve serve` process on loopback: predict under concurrent load, strict start, CLI."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.models import RandomRepository
from tests.support.reference import assert_close, card_of, run_alone
from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e


async def post_all(base_url: str, path: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post(path, json=b) for b in bodies))


def test_64_concurrent_mixed_length_requests_equal_solo_runs_and_form_batches(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(random_repository.path)
    version_dir = random_repository.path / "rnn-feat" / "1"
    rng = np.random.default_rng(11)
    sequences = [
        rng.normal(size=(int(n), card_of(version_dir)["input_size"])).tolist()
        for n in rng.integers(1, 120, 64)
    ]
    bodies = [{"inputs": [s], "output": "all"} for s in sequences]
    responses = asyncio.run(post_all(server.base_url, "/v1/models/rnn-feat/predict", bodies))
    for seq, response in zip(sequences, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_close(response.json()["outputs"][0], run_alone(version_dir, seq).y)
    metrics = httpx.get(f"{server.base_url}/metrics").text
    count = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("rnnserve_batch_size_count")
        and 'model="rnn-feat"' in line
        and 'kind="predict"' in line
    )
    assert count < 64, f"64 requests took {count} onnxruntime calls"
    assert '"request_id"' in server.log(), "access log lines are JSON with a request id"


def test_strict_start_with_a_broken_model_exits_with_a_one_line_message(
    random_repository: RandomRepository, tmp_path: Path
) -> None:
    shutil.copytree(random_repository.path / "gru1", tmp_path / "gru1")
    (tmp_path / "gru1" / "1" / "model.onnx").write_bytes(b"garbage")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--repository",
            str(tmp_path),
            "--port",
            "0",
            "--strict",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sha256" in errors[0]
    assert "Traceback" not in result.stderr


def test_non_strict_start_serves_the_good_models_and_lists_the_broken_one(
    server_factory: Any, random_repository: RandomRepository, tmp_path: Path
) -> None:
    for name in ("gru1", "rnn-feat"):
        shutil.copytree(random_repository.path / name, tmp_path / name)
    (tmp_path / "rnn-feat" / "1" / "model.json").unlink()
    server = server_factory(tmp_path)
    models = {m["name"]: m for m in httpx.get(f"{server.base_url}/v1/models").json()["models"]}
    assert models["gru1"]["status"] == "ready"
    assert models["rnn-feat"]["status"] == "unavailable"
    assert "model.json: missing" in models["rnn-feat"]["reason"]


def test_models_and_verify_commands(random_repository: RandomRepository) -> None:
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "models",
            "--repository",
            str(random_repository.path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert "lstm-tok" in listing.stdout and "ready" in listing.stdout
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "verify",
            str(random_repository.path / "lstm3" / "1"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert verify.returncode == 0 and '"ok": true' in verify.stdout


def test_verify_reports_a_tampered_graph(
    random_repository: RandomRepository, tmp_path: Path
) -> None:
    shutil.copytree(random_repository.path / "lstm3" / "1", tmp_path / "lstm3" / "1")
    graph = tmp_path / "lstm3" / "1" / "model.onnx"
    graph.write_bytes(graph.read_bytes().replace(b"lstm", b"LSTM", 1) + b"x")
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "verify", str(tmp_path / "lstm3" / "1")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "sha256" in result.stderr


def test_a_client_that_disconnects_mid_body_is_logged_without_a_traceback(
    server_factory: Any, random_repository: RandomRepository
) -> None:

    server = server_factory(random_repository.path)
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/models/gru1/predict HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs": '
        )
    answer = httpx.post(
        f"{server.base_url}/v1/models/gru1/predict", json={"inputs": [[[0.0, 1.0]]]}
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 5
    while "client disconnected" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "client disconnected" in server.log()
    assert "Traceback" not in server.log() and '"exc"' not in server.log()


def run_cli(*args: str, hide_redis: bool = False) -> subprocess.CompletedProcess[str]:
    """`rnnserve ARGS` in a fresh interpreter; `hide_redis` makes the [redis] extra absent."""
    hide = "import sys; sys.modules['redis'] = None; " if hide_redis else ""
    code = f"{hide}from service.cli import main; raise SystemExit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("args", "hide_redis", "status", "fragment"),
    [
        (("serve", "--repository", "/no/such/dir"), False, 1, "RNNSERVE_REPOSITORY"),
        (
            ("serve", "--session-store", "redis://127.0.0.1:6379/0"),
            True,
            2,
            "pip install 'rnnserve[redis]'",
        ),
        (("serve", "--session-store", "memcached://x"), False, 2, "RNNSERVE_SESSION_STORE"),
        (("serve", "--log-level", "chatty"), False, 2, "RNNSERVE_LOG_LEVEL"),
    ],
    ids=["missing repository", "redis without the extra", "unknown store", "bad log level"],
)
def test_startup_mistakes_end_in_one_line_that_says_the_fix(
    args: tuple[str, ...], hide_redis: bool, status: int, fragment: str
) -> None:
    result = run_cli(*args, hide_redis=hide_redis)
    assert result.returncode == status, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert fragment in result.stderr and "Traceback" not in result.stderr
