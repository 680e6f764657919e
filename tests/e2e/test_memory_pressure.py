"""A real server configured with a memory watermark below its RSS: it refuses new sessions with
429 and Retry-After before anything else gives, keeps serving predict and existing sessions,
counts the refusals and says how much memory it measured."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.models import RandomRepository
from tests.support.streams import metric

pytestmark = [pytest.mark.e2e]

PREDICT = {"inputs": [[[0.5, -1.0], [0.25, 2.0]]]}
MIB = 1024 * 1024


def test_above_its_watermark_a_server_refuses_sessions_and_keeps_serving(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    # 16 MiB: below what any rnnserve process holds once onnxruntime is loaded
    server = server_factory(
        random_repository.path,
        env={"RNNSERVE_MEMORY_WATERMARK_BYTES": str(16 * MIB), "RNNSERVE_ACCESS_LOG": "false"},
    )
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        refused = client.post("/v1/models/gru1/sessions")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "memory_pressure"
        assert int(refused.headers["Retry-After"]) >= 1
        assert client.post("/v1/models/gru1/predict", json=PREDICT).status_code == 200
        text = client.get("/metrics").text
    assert metric(text, "rnnserve_limit_rejections_total", 'limit="memory"') == 1
    assert metric(text, "rnnserve_memory_bytes", 'source="rss"') > 16 * MIB
    assert '"level":"error"' not in server.log()
