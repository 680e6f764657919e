"""The soak's figures: growth after warm-up, the table in bench/RESULTS.md, the plot."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WARMUP_FRACTION = 0.2  # the first fifth of the run fills caches, pools and the session table
RSS_TOLERANCE = 0.10  # the last samples may sit at most 10 % above the end of warm-up...
RSS_SLACK_MIB = 16.0  # ...plus 16 MiB (allocator noise on a ~150 MiB process)
FD_SLACK = 16  # descriptors: client connections come and go
# shorter runs (CI's) are still warming up at the end: their growth is shown, not judged
MIN_GROWTH_MINUTES = 2.0
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
TABLE_ROWS = 20


@dataclass(frozen=True)
class Sample:
    """One sampler tick."""

    t_s: float
    rss_mib: float
    fds: int
    live_sessions: int
    p99_ms: float
    requests: int
    errors: int


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass(frozen=True)
class SoakResult:
    """A finished soak."""

    minutes: float
    samples: list[Sample]
    totals: dict[str, Any]
    workers: dict[str, int]
    ttl_s: float
    server_log_errors: int

    def _phase(self, attr: str) -> tuple[float, float]:
        """Median of `attr` over the three samples at the end of warm-up, and the last three."""
        n = len(self.samples)
        cut = max(1, int(n * WARMUP_FRACTION))
        warm = [float(getattr(s, attr)) for s in self.samples[max(0, cut - 3) : cut]]
        last = [float(getattr(s, attr)) for s in self.samples[-3:]]
        return _median(warm), _median(last)

    def growth(self) -> dict[str, tuple[float, float, bool]]:
        """RSS and fds: (after warm-up, at the end, within tolerance)."""
        rss_warm, rss_end = self._phase("rss_mib")
        fd_warm, fd_end = self._phase("fds")
        return {
            "rss_mib": (
                rss_warm,
                rss_end,
                rss_end <= rss_warm * (1 + RSS_TOLERANCE) + RSS_SLACK_MIB,
            ),
            "fds": (fd_warm, fd_end, fd_end <= fd_warm + FD_SLACK),
        }

    def passed(self) -> bool:
        """No step lost, duplicated or corrupted; no growth beyond the tolerance."""
        t = self.totals
        clean = t["lost"] == 0 and t["duplicated"] == 0 and t["corrupted"] == 0
        if self.minutes < MIN_GROWTH_MINUTES:
            return clean and t["steps_checked"] > 0
        return clean and bool(self.samples) and all(ok for *_, ok in self.growth().values())

    def summary(self) -> str:
        """The closing lines, for the console and the report."""
        t = self.totals
        first = self.samples[0] if self.samples else None
        last = self.samples[-1] if self.samples else None
        lines = [
            f"soak: {self.minutes:g} min, {t['requests']} requests, {t['errors']} errors "
            f"({t['retries']} retried), server log errors: {self.server_log_errors}",
            f"streams checked against predict: {t['streams_checked']}, steps "
            f"{t['steps_checked']}: lost {t['lost']}, duplicated {t['duplicated']}, "
            f"corrupted streams {t['corrupted']}",
        ]
        if first and last:
            lines.append(
                f"RSS first/last sample: {first.rss_mib:.1f} / {last.rss_mib:.1f} MiB; "
                f"fds {first.fds} / {last.fds}; live sessions max "
                f"{max(s.live_sessions for s in self.samples)}"
            )
        for name, (warm, end, ok) in self.growth().items():
            verdict = (
                ("ok" if ok else "GREW") if self.minutes >= MIN_GROWTH_MINUTES else "not judged"
            )
            lines.append(f"{name}: after warm-up {warm:.1f}, end {end:.1f}: {verdict}")
        lines.append("PASSED" if self.passed() else "FAILED")
        return "\n".join(lines)

    def table(self) -> str:
        """A markdown table of about TABLE_ROWS samples, evenly spaced."""
        step = max(1, len(self.samples) // TABLE_ROWS)
        rows = self.samples[::step]
        if self.samples and rows[-1] is not self.samples[-1]:
            rows.append(self.samples[-1])
        out = [
            "| t (s) | RSS (MiB) | open fds | live sessions | p99 (ms) | requests | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {s.t_s:.0f} | {s.rss_mib:.1f} | {s.fds} | {s.live_sessions} | {s.p99_ms:.1f} "
            f"| {s.requests} | {s.errors} |"
            for s in rows
        ]
        return "\n".join(out)


def plot(result: SoakResult, path: Path) -> None:
    """Four panels over time: RSS, fds, live sessions, p99 and errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in result.samples]
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    panels = [
        ("RSS (MiB)", [s.rss_mib for s in result.samples]),
        ("open fds", [s.fds for s in result.samples]),
        ("live sessions", [s.live_sessions for s in result.samples]),
        ("p99 latency (ms)", [s.p99_ms for s in result.samples]),
    ]
    for ax, (label, values) in zip(axes, panels, strict=True):
        ax.plot(t, values)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    warm = result.samples[max(0, int(len(t) * WARMUP_FRACTION) - 1)].t_s / 60 if t else 0
    for ax in axes:
        ax.axvline(warm, color="grey", linestyle="--", linewidth=0.8)
    errors = axes[3].twinx()
    errors.bar(t, [s.errors for s in result.samples], width=0.01, color="red", alpha=0.5)
    errors.set_ylim(0, max([1, *(s.errors for s in result.samples)]))
    errors.set_ylabel("errors per sample", color="red")
    axes[-1].set_xlabel("minutes (dashed: end of warm-up)")
    fig.suptitle(f"rnnserve soak, {result.minutes:g} min (Redis store, TTL {result.ttl_s:g} s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(result: SoakResult, bench_dir: Path) -> None:
    """Replace the soak section of RESULTS.md (or append one) and write soak.png."""
    plot(result, bench_dir / "soak.png")
    workers = ", ".join(f"{n} {kind}" for kind, n in result.workers.items())
    section = "\n".join(
        [
            START,
            f"## Soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"`python -m bench.soak --minutes {result.minutes:g}` (`make soak`): one server, "
            f"Redis session store, session TTL {result.ttl_s:g} s; workers: {workers}. The "
            "machine is shared (2 cores, other jobs running): latency figures are noisy. "
            f"Growth tolerance after warm-up (first {WARMUP_FRACTION:.0%}): RSS "
            f"+{RSS_TOLERANCE:.0%} + {RSS_SLACK_MIB:g} MiB, fds +{FD_SLACK}.",
            "",
            "```",
            result.summary(),
            "```",
            "",
            result.table(),
            "",
            "![soak](soak.png)",
            END,
        ]
    )
    results = bench_dir / "RESULTS.md"
    text = results.read_text()
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text)
