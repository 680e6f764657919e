"""Schemathesis fuzzes every route of the OpenAPI document: no input may cause a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import DEMO_REPOSITORY, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEMATHESIS = shutil.which("st", path=str(ROOT / ".venv" / "bin")) or "st"


def schemathesis_run(
    server: Any, *run_options: str, checks: str, max_examples: int, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One `st run` against the server's OpenAPI document: one worker, seed 1."""
    return subprocess.run(
        [
            SCHEMATHESIS,
            *(["--config-file", str(config)] if config is not None else []),
            "run",
            f"{server.base_url}/openapi.json",
            *run_options,
            "--checks",
            checks,
            "--max-examples",
            str(max_examples),
            "--workers",
            "1",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def test_no_generated_request_gets_a_server_error(server_factory: Any) -> None:
    server = server_factory(DEMO_REPOSITORY)
    result = schemathesis_run(
        server,
        "--phases",
        "examples,coverage,fuzzing",  # the stateful walks are the test below
        checks="not_a_server_error",
        max_examples=25,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout
    assert '"level":"error"' not in server.log()


SCHEMA_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "use_after_free",
        "ensure_resource_availability",
    ]
)


def test_stateful_session_walks_answer_what_the_schema_documents(server_factory: Any) -> None:
    """open -> step -> state -> reset -> delete, following the OpenAPI links: every answer has
    a documented status, content type and body shape, and a deleted session stays gone."""
    server = server_factory(DEMO_REPOSITORY)
    result = schemathesis_run(
        server,
        "--phases",
        "examples,stateful",
        # GET /v1/models produces the model names that opening a session consumes:
        # without a producer, schemathesis never starts a walk from the open route
        "--include-path-regex",
        r"^/v1/(models|models/\{name\}/sessions|sessions/.*)$",
        checks=SCHEMA_CHECKS,
        max_examples=100,
        config=Path(__file__).with_name("schemathesis-sessions.toml"),
    )
    assert result.returncode == 0, result.stdout[-6000:]
    covered = re.search(r"API Links:\s+(\d+) covered", result.stdout)
    assert covered is not None and int(covered.group(1)) > 0, result.stdout[-3000:]
    assert '"level":"error"' not in server.log()
