"""`make soak` in miniature (15 s): the mixed load runs against a real server with the Redis
store, every stream is checked against predict, and nothing is lost or duplicated. Growth is
only judged on runs of MIN_GROWTH_MINUTES or more (`make soak`), not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_short_soak_loses_and_duplicates_no_step() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.25", "--no-write"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lost 0, duplicated 0, corrupted streams 0" in done.stdout
    assert "steps 0:" not in done.stdout  # streams were actually checked
    assert "server log errors: 0" in done.stdout
