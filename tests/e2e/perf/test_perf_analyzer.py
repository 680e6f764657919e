"""Real perf_analyzer against a real `rnnserve serve`: stateless and sequences, HTTP and gRPC.

Every run sends a fixed number of requests (`--request-count`) with only `x` in `--input-data`,
must finish with 0 errors, and the server's own counters (Triton statistics, /metrics, sessions)
must agree with what perf_analyzer says it sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.perf.analyzer import NotInstallableError, PerfAnalyzer, install
from tests.support.models import RandomRepository
from tests.support.reference import card_of
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "rnn-feat"
REQUESTS = 60
SEQUENCE_LENGTH = 4


@pytest.fixture(scope="module")
def perf_analyzer() -> PerfAnalyzer:
    try:
        return install()
    except NotInstallableError as exc:
        pytest.skip(f"perf_analyzer cannot be installed here: {exc}")


def input_data(path: Path, card: dict[str, Any], steps: int) -> Path:
    """perf_analyzer's --input-data file holding `x` only ([steps, features] per item)."""
    x = np.random.default_rng(0).normal(size=(steps, card["input_size"])).round(4)
    path.write_text(
        json.dumps({"data": [{"x": {"content": x.ravel().tolist(), "shape": list(x.shape)}}]})
    )
    return path


def counters(base_url: str) -> dict[str, float]:
    """The server's own figures for MODEL."""
    stats = httpx.get(f"{base_url}/v2/models/{MODEL}/stats").json()["model_stats"][0]
    metrics = httpx.get(f"{base_url}/metrics").text

    def sample(pattern: str) -> float:
        found = re.findall(rf"^{pattern} (\S+)$", metrics, re.MULTILINE)
        return sum(float(v) for v in found)

    return {
        "success": stats["inference_stats"]["success"]["count"],
        "fail": stats["inference_stats"]["fail"]["count"],
        "inferences": stats["inference_count"],
        "http_infers": sample(
            r'rnnserve_requests_total\{method="POST",route="/v2/models/\{name\}/infer",status="200"\}'
        ),
        "opened": sample(r'rnnserve_session_events_total\{event="opened"\}'),
        "closed": sample(r'rnnserve_session_events_total\{event="closed"\}'),
        "live": sample("rnnserve_live_sessions"),
    }


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def endpoint(server: Any, grpc_port: int, protocol: str) -> list[str]:
    if protocol == "http":
        return ["-i", "http", "-u", server.base_url.removeprefix("http://")]
    return ["-i", "grpc", "-u", f"127.0.0.1:{grpc_port}"]


def assert_clean(run: Any) -> None:
    assert run.returncode == 0, run.output
    assert "error" not in run.output.lower(), run.output


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_stateless_profile_with_batch_2_matches_the_server_counters(
    perf_analyzer: PerfAnalyzer,
    server_factory: Any,
    random_repository: RandomRepository,
    tmp_path: Path,
    protocol: str,
) -> None:
    grpc_port = free_port()
    env = {"RNNSERVE_GRPC_PORT": str(grpc_port), "RNNSERVE_V2_SEQUENCE_BATCHING": "false"}
    server = server_factory(random_repository.path, env=env)
    card = card_of(random_repository.path / MODEL / "1")
    before = counters(server.base_url)
    run = perf_analyzer.run(
        "-m",
        MODEL,
        *endpoint(server, grpc_port, protocol),
        "-b",
        "2",
        "--input-data",
        str(input_data(tmp_path / "x.json", card, 6)),
        "--request-count",
        str(REQUESTS),
        "--concurrency-range",
        "4",
    )
    assert_clean(run)
    sent = run.client_figure("Request count")
    assert sent >= REQUESTS
    change = delta(before, counters(server.base_url))
    assert change["success"] == sent and change["fail"] == 0
    assert change["inferences"] == 2 * sent
    assert change["http_infers"] == (sent if protocol == "http" else 0)
    assert change["opened"] == 0


@pytest.mark.parametrize("mode", ["http", "grpc", "grpc-streaming"])
def test_sequence_profile_opens_and_closes_one_session_per_sequence(
    perf_analyzer: PerfAnalyzer,
    server_factory: Any,
    random_repository: RandomRepository,
    tmp_path: Path,
    mode: str,
) -> None:
    grpc_port = free_port()
    server = server_factory(random_repository.path, env={"RNNSERVE_GRPC_PORT": str(grpc_port)})
    card = card_of(random_repository.path / MODEL / "1")
    before = counters(server.base_url)
    streaming = ["--streaming"] if mode == "grpc-streaming" else []
    run = perf_analyzer.run(
        "-m",
        MODEL,
        *endpoint(server, grpc_port, mode.partition("-")[0]),
        *streaming,
        "--input-data",
        str(input_data(tmp_path / "x.json", card, 1)),
        "--sequence-length",
        str(SEQUENCE_LENGTH),
        "--sequence-length-variation",
        "0",
        "--request-count",
        str(REQUESTS),
        "--concurrency-range",
        "3",
    )
    assert_clean(run)
    sent = run.client_figure("Request count")
    sequences = run.client_figure("Sequence count")
    assert sent >= REQUESTS and sequences >= REQUESTS / SEQUENCE_LENGTH
    change = delta(before, counters(server.base_url))
    assert change["success"] == sent and change["fail"] == 0
    assert change["inferences"] == sent
    assert change["opened"] == change["closed"] == sequences
    assert counters(server.base_url)["live"] == 0
