"""The benchmark harness in quick mode: it runs, starts and stops its servers, and prints a
table with every scenario (a figure or an explicit n/a). No assertion on absolute times."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.procs import group_members, process_starttime
from bench.report import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
TIME_BUDGET_S = 600


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `python -m bench --quick` run shared by the tests below."""
    out = tmp_path_factory.mktemp("bench-out")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_BUDGET_S,
    )
    return done, out


@pytest.mark.slow
@pytest.mark.e2e
def test_quick_mode_exits_zero_and_writes_both_reports(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "results.md").read_text().startswith("# rnnserve benchmark")
    assert "The bars (issues 12 and 6)" in done.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_quick_mode_reports_every_scenario_as_a_figure_or_an_explicit_na(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    rows = orjson.loads((out / "results.json").read_bytes())["rows"]
    for scenario in SCENARIOS:
        mine = [row for row in rows if row["scenario"] == scenario]
        assert mine, f"{scenario} missing from the table"
        for row in mine:
            if row["status"] == "ok":
                assert row["value"] is not None and row["unit"], row
            else:
                assert row["status"] in ("n/a", "error"), row
                assert row["note"], row
    table = (out / "results.md").read_text()
    assert all(f"| {scenario} |" in table for scenario in SCENARIOS)


@pytest.mark.slow
@pytest.mark.e2e
def test_quick_mode_leaves_no_server_it_started_running(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    records = orjson.loads((out / "pids.json").read_bytes())
    assert records, "the harness recorded no server"
    for record in records:
        started = record["starttime"]
        alive = started is not None and process_starttime(record["pid"]) == started
        assert not alive, f"{record['name']} (pid {record['pid']}) still running"
        assert not group_members(record["pgid"]), f"{record['name']}'s process group survived"
