"""The bars of issues 12 and 6, judged from one run's rows: met, missed (by how much), or not
measured. Each ratio is of figures from the same run; CPU ms/op ratios ride along because
other work on a shared machine disturbs them less than throughput."""

from __future__ import annotations

from bench.model import HIDDEN_SIZE, NUM_LAYERS
from bench.report import HANDTUNED, RNNSERVE, TEXTBOOK, Row

ONNXRUNTIME, BARE = "onnxruntime", "bare"

RAW_STATE_BYTES = NUM_LAYERS * HIDDEN_SIZE * 4

RAW_STATE_FACTOR = 2.0
COLD_START_S = 2.0


def _find(rows: list[Row], scenario: str, server: str, protocol: str | None = None) -> Row | None:
    for row in rows:
        same = row.scenario == scenario and row.server == server and row.status == "ok"
        if same and (protocol is None or row.protocol == protocol):
            return row
    return None


def _short(ratio: float, target: float) -> str:
    return f"MISSED (reaches {100 * ratio / target:.0f}% of the bar)"


def _ratio_bar(label: str, ours: Row | None, ref: Row | None, target: float) -> str:
    if ours is None or ref is None or not ours.value or not ref.value:
        return f"{label} >= {target}x hand-tuned: not measured in this run"
    ratio = ours.value / ref.value
    verdict = "met" if ratio >= target else _short(ratio, target)
    return (
        f"{label} >= {target}x hand-tuned: {ratio:.2f}x "
        f"({ours.value:,.0f} vs {ref.value:,.0f} {ours.unit}) — {verdict}"
    )


def _predict_bars(rows: list[Row]) -> list[str]:
    ours = _find(rows, "predict_c32", RNNSERVE, "v1 JSON")
    tuned = _find(rows, "predict_c32", HANDTUNED)
    textbook = _find(rows, "predict_c32", TEXTBOOK)
    lines = [_ratio_bar("predict v1 JSON c=32", ours, tuned, 1.5)]
    if ours and textbook and textbook.value and ours.value:
        ratio = ours.value / textbook.value
        verdict = "met" if ratio >= 4 else _short(ratio, 4.0)
        lines.append(f"predict v1 JSON c=32 >= 4x textbook: {ratio:.2f}x — {verdict}")
    if ours and tuned and ours.p99_ms is not None and tuned.p99_ms is not None:
        verdict = (
            "met"
            if ours.p99_ms <= tuned.p99_ms
            else f"MISSED: {ours.p99_ms / tuned.p99_ms:.2f}x the hand-tuned p99"
        )
        lines.append(
            f"predict c=32 p99 no worse than hand-tuned: {ours.p99_ms:.2f} ms vs "
            f"{tuned.p99_ms:.2f} ms — {verdict}"
        )
    else:
        lines.append("predict c=32 p99 no worse than hand-tuned: not measured in this run")
    return lines


def _stream_bars(rows: list[Row]) -> list[str]:
    tuned_rest = _find(rows, "streams64_rest", HANDTUNED)
    lines = [
        _ratio_bar(
            "64 streams over REST", _find(rows, "streams64_rest", RNNSERVE), tuned_rest, 1.3
        ),
        _ratio_bar(
            "64 streams over the WebSocket (vs hand-tuned per-step REST)",
            _find(rows, "streams64_ws", RNNSERVE),
            tuned_rest,
            4.0,
        ),
    ]
    large = _find(rows, "streams1024_ws", RNNSERVE)
    if large is None:
        lines.append("1024 WebSocket streams, no errors: not measured in this run")
    else:
        batch = f"{large.batch_mean:.1f}" if large.batch_mean is not None else "not reported"
        verdict = "met" if large.errors == 0 and large.batch_mean is not None else "MISSED"
        lines.append(
            f"1024 WebSocket streams: {large.value:,.0f} steps/s, mean step batch {batch}, "
            f"{large.errors} errors — {verdict}"
        )
    return lines


def _ops_bars(rows: list[Row]) -> list[str]:
    lines = []
    memory = _find(rows, "memory_100k", RNNSERVE)
    if memory is None or memory.value is None:
        lines.append("memory per session at 100k <= 2x raw state: not measured in this run")
    else:
        raw = float(RAW_STATE_BYTES)
        factor = memory.value / raw
        verdict = (
            "met"
            if factor <= RAW_STATE_FACTOR
            else f"MISSED by {memory.value - RAW_STATE_FACTOR * raw:,.0f} B per session"
        )
        lines.append(
            f"memory per session at 100k <= 2x raw state: {memory.value:,.0f} B = "
            f"{factor:.2f}x raw ({raw:.0f} B) — {verdict}"
        )
    cold = _find(rows, "cold_start", RNNSERVE, "demo repository")
    if cold is None or cold.value is None:
        lines.append("cold start <= 2 s for the demo repository: not measured in this run")
    else:
        verdict = (
            "met" if cold.value <= COLD_START_S else f"MISSED by {cold.value - COLD_START_S:.2f} s"
        )
        lines.append(f"cold start <= 2 s for the demo repository: {cold.value:.2f} s — {verdict}")
    return lines


def judge(rows: list[Row]) -> list[str]:
    """One line per bar: issue 12's first, then issue 6's (its predict and REST bars are
    issue 12's too)."""
    issue6 = [*_predict_bars(rows), *_stream_bars(rows), *_ops_bars(rows)]
    return [*issue12_bars(rows), *(f"(issue 6) {line}" for line in issue6)]


def _cpu_ms(row: Row) -> float | None:
    if row.server_cpu_pct is None or not row.value:
        return None
    return 10.0 * row.server_cpu_pct / row.value


def _against(label: str, ours: Row | None, ref: Row | None, target: float, what: str) -> str:
    """`label >= target x what: ratio (a vs b unit; CPU ms/op a vs b) — verdict`."""
    if ours is None or ref is None or not ours.value or not ref.value:
        return f"{label} >= {target}x {what}: not measured in this run"
    ratio = ours.value / ref.value
    verdict = "met" if ratio >= target else _short(ratio, target)
    cpu_ours, cpu_ref = _cpu_ms(ours), _cpu_ms(ref)
    cpu = (
        f"; CPU ms/op {cpu_ours:.4f} vs {cpu_ref:.4f}"
        if cpu_ours is not None and cpu_ref is not None
        else ""
    )
    return (
        f"{label} >= {target}x {what}: {ratio:.2f}x "
        f"({ours.value:,.0f} vs {ref.value:,.0f} {ours.unit}{cpu}) — {verdict}"
    )


def _protocol(rows: list[Row], scenario: str, protocol: str) -> Row | None:
    return _find(rows, scenario, RNNSERVE, protocol)


def issue12_bars(rows: list[Row]) -> list[str]:
    """The bars of issue 12, in its order, plus the load generators' headroom."""
    lines = []
    for scenario, batch in (("mux_256", 64), ("mux_4096", 256)):
        ceiling = _find(rows, "ort_ceiling", ONNXRUNTIME, f"InferenceSession.run, batch {batch}")
        ours = _find(rows, scenario, RNNSERVE)
        line = _against(
            f"[12] {scenario} (frames of {batch})",
            ours,
            ceiling,
            0.5,
            f"the onnxruntime ceiling at batch {batch}",
        )
        if ours is not None and ours.batch_mean is not None:
            line += f" (the server's mean step batch: {ours.batch_mean:.0f})"
        lines.append(line)
    ws64 = _find(rows, "streams64_ws", RNNSERVE)
    lines.append(
        _against(
            "[12] 64 WebSocket streams",
            ws64,
            _find(rows, "streams64_ws", HANDTUNED),
            1.5,
            "the hand-tuned stateful WebSocket server",
        )
    )
    for scenario, count in (("streams1024_ws", "1,024"), ("streams10k_ws", "10,000")):
        lines.append(
            _against(
                f"[12] {count} WebSocket streams",
                _find(rows, scenario, RNNSERVE),
                ws64,
                1.0,
                "the 64-stream figure",
            )
        )
    lines.append(
        _against(
            "[12] 64 REST streams",
            _find(rows, "streams64_rest", RNNSERVE),
            _find(rows, "streams64_rest", HANDTUNED),
            1.3,
            "hand-tuned REST",
        )
    )
    lines.append(
        _against(
            "[12] predict v1 JSON c=32",
            _find(rows, "predict_c32", RNNSERVE, "v1 JSON"),
            _find(rows, "predict_c32", HANDTUNED),
            1.5,
            "hand-tuned",
        )
    )
    for scenario, protocol in (("redis_store", "WS"), ("redis_mux", "mux")):
        lines.append(
            _against(
                f"[12] Redis {protocol}",
                _protocol(rows, scenario, f"{protocol}, Redis"),
                _protocol(rows, scenario, f"{protocol}, memory store"),
                0.8,
                "the memory store (same rounds)",
            )
        )
    lines.append(_p99_bar(rows))
    lines += _headroom(rows)
    return lines


def _p99_bar(rows: list[Row]) -> str:
    ours = _find(rows, "predict_c32", RNNSERVE, "v1 JSON")
    tuned = _find(rows, "predict_c32", HANDTUNED)
    if not ours or not tuned or ours.p99_ms is None or tuned.p99_ms is None:
        return "[12] predict c=32 p99 <= hand-tuned: not measured in this run"
    verdict = (
        "met"
        if ours.p99_ms <= tuned.p99_ms
        else f"MISSED: {ours.p99_ms / tuned.p99_ms:.2f}x the hand-tuned p99"
    )
    return (
        f"[12] predict c=32 p99 <= hand-tuned: {ours.p99_ms:.2f} ms vs {tuned.p99_ms:.2f} ms "
        f"— {verdict}"
    )


def _headroom(rows: list[Row]) -> list[str]:
    """Each load generator's ceiling (against the bare server) over rnnserve's figure."""
    pairs = (
        ("WS, 64 streams", "streams64_ws"),
        ("WS, 1024 streams", "streams1024_ws"),
        ("mux, 256 sessions", "mux_256"),
        ("mux, 4096 sessions", "mux_4096"),
    )
    lines = []
    for protocol, scenario in pairs:
        ceiling = _find(rows, "loadgen_ceiling", BARE, protocol)
        ours = _find(rows, scenario, RNNSERVE)
        if ceiling is None or ours is None or not ceiling.value or not ours.value:
            continue
        lines.append(
            f"[12] load generator, {protocol}: drives {ceiling.value:,.0f} steps/s against the "
            f"bare server = {ceiling.value / ours.value:.2f}x rnnserve's {scenario} figure"
        )
    return lines
