"""Rows, ratios to the baselines, the bars of issues 12 and 6, and the markdown + JSON output."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCENARIOS = (
    "predict_c1",
    "predict_c32",
    "predict_mixed",
    "streams64_rest",
    "streams64_ws",
    "streams1024_ws",
    "streams10k_ws",
    "ort_ceiling",
    "mux_256",
    "mux_4096",
    "loadgen_ceiling",
    "step_batcher_off",
    "redis_store",
    "redis_mux",
    "perf_analyzer",
    "cold_start",
    "memory_10k",
    "memory_100k",
)
# Issue 12 compares the WebSocket streams (any count) and mux with the hand-tuned stateful
# WebSocket server, the variants with the hand-tuned per-step REST server (as issue 6 did);
# every other row is compared within its own scenario.
RATIO_SCENARIO = {
    "streams1024_ws": "streams64_ws",
    "streams10k_ws": "streams64_ws",
    "mux_256": "streams64_ws",
    "mux_4096": "streams64_ws",
    "redis_mux": "streams64_ws",
    "step_batcher_off": "streams64_rest",
    "redis_store": "streams64_rest",
}
HANDTUNED, TEXTBOOK, RNNSERVE = "hand-tuned", "textbook", "rnnserve"


@dataclass
class Row:
    """One line of the table: a figure, an n/a with its reason, or an error."""

    scenario: str
    server: str
    protocol: str
    concurrency: int | None = None
    value: float | None = None
    unit: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    requests: int | None = None
    batch_mean: float | None = None
    server_cpu_pct: float | None = None
    server_wait_pct: float | None = None
    client_cpu_pct: float | None = None
    generator: str = ""
    status: str = "ok"
    note: str = ""
    check: str = ""
    vs_handtuned: float | None = None
    vs_textbook: float | None = None


def unavailable(scenario: str, server: str, protocol: str, why: str) -> Row:
    """An explicit n/a row."""
    return Row(scenario, server, protocol, status="n/a", note=f"n/a: {why}")


def _reference(rows: list[Row], scenario: str, server: str) -> Row | None:
    target = RATIO_SCENARIO.get(scenario, scenario)
    for row in rows:
        same = row.scenario == target and row.server == server and row.status == "ok"
        if same and (target != "cold_start" or row.protocol == "bench model"):
            return row
    return None


def add_ratios(rows: list[Row]) -> None:
    """value / the same scenario's hand-tuned and textbook value (lower is better for s and B)."""
    for row in rows:
        if row.value is None or row.status != "ok" or row.unit.startswith("B/"):
            continue
        for server, attr in ((HANDTUNED, "vs_handtuned"), (TEXTBOOK, "vs_textbook")):
            ref = _reference(rows, row.scenario, server)
            if ref is not None and ref.value:
                setattr(row, attr, row.value / ref.value)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return ""
    if digits == 0 and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 2) if abs(value) < 100 else digits}f}"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else ""


COLUMNS = (
    "scenario", "server", "protocol", "c", "value", "unit", "p50 ms", "p99 ms", "errors",
    "mean batch", "server CPU", "CPU ms/op", "vs hand-tuned", "vs textbook", "note",
)  # fmt: skip


def _cells(row: Row) -> list[str]:
    status = "" if row.status in ("ok", "n/a") else f"**{row.status}** "
    return [
        row.scenario,
        row.server,
        row.protocol,
        "" if row.concurrency is None else str(row.concurrency),
        _fmt(row.value, 2 if row.unit == "s" else 0),
        row.unit,
        _fmt(row.p50_ms, 2),
        _fmt(row.p99_ms, 2),
        "" if row.errors is None else str(row.errors),
        _fmt(row.batch_mean, 1),
        _cpu(row),
        _cpu_per_op(row),
        _ratio(row.vs_handtuned),
        _ratio(row.vs_textbook),
        (status + row.note).replace("|", "/"),
    ]


def _cpu(row: Row) -> str:
    if row.server_cpu_pct is None:
        return ""
    waited = "" if row.server_wait_pct is None else f" (+{row.server_wait_pct:.0f}% waited)"
    return f"{row.server_cpu_pct:.0f}%{waited}"


def _cpu_per_op(row: Row) -> str:
    """Server CPU per request or step: steadier than throughput when other work steals the core."""
    if row.server_cpu_pct is None or not row.value or not row.unit.endswith("/s"):
        return ""
    return f"{10 * row.server_cpu_pct / row.value:.3f}"


def markdown_table(rows: list[Row]) -> str:
    """The table as GitHub markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(rows: list[Row]) -> str:
    """The table aligned for a terminal (notes last, unclipped)."""
    cells = [list(COLUMNS), *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in cells
    )


def write_outputs(
    out_dir: Path, rows: list[Row], bars: list[str], conditions: dict[str, Any]
) -> tuple[Path, Path]:
    """results.md (conditions, table, bars) and results.json (everything)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = ["# rnnserve benchmark", "", "## Conditions", ""]
    md += [f"- {key}: {value}" for key, value in conditions.items()]
    md += ["", "## Results", "", markdown_table(rows), "", "## The bars (issues 12 and 6)", ""]
    md += [f"- {line}" for line in bars]
    md += ["", LEGEND]
    md_path = out_dir / "results.md"
    md_path.write_text("\n".join(md) + "\n")
    json_path = out_dir / "results.json"
    payload = {
        "conditions": conditions,
        "rows": [dataclasses.asdict(row) for row in rows],
        "bars": bars,
        "scenarios": sorted({row.scenario for row in rows}),
    }
    json_path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    return md_path, json_path


LEGEND = """Ratios are value / the hand-tuned (or textbook) value of the same scenario; the
1,024- and 10,000-stream WebSocket rows and the mux rows are divided by the hand-tuned
stateful *WebSocket* server's 64-stream figure (issue 12), the step-batcher-off and Redis store
rows by the hand-tuned *REST* 64-stream figure (issue 6). Mux throughput counts steps (records),
its latency is per frame. For cold start (s) lower is better. Latency is per
request (per step for streams), closed loop. `server CPU` is the CPU the server's process
group used during the window (100% = the one core it is pinned to); `waited` is the time its
threads were runnable but the core ran something else (other work on a shared machine, or its
own threads queueing behind each other): high CPU means a saturated server, low CPU with a
large wait a starved one, low CPU with no wait an idle one. `CPU ms/op` is that CPU divided
by the throughput: the server's own cost per request (or step), which other work on the
machine disturbs far less than the throughput itself."""
