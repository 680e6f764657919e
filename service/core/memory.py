"""A memory watermark: above it the server refuses new sessions before the kernel kills it.

Two measures, either one can trip it: the process RSS against `memory_watermark_bytes`, and,
under a cgroup v2 memory limit (a container), the cgroup's usage against a fraction of its
`memory.max`. Readings come from /proc and /sys (a few microseconds) and are cached for
`REFRESH_S` so that a burst of session opens reads them once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import MemoryPressureError
from service.metrics import Metrics

REFRESH_S = 0.25
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STATM = Path("/proc/self/statm")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def read_rss_bytes(statm: Path = STATM) -> int:
    """The process's resident set size (0 where /proc is missing)."""
    try:
        return int(statm.read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """A cgroup v2 directory's usage and limit files."""

    current: Path
    limit_bytes: int

    @classmethod
    def find(cls, root: Path = CGROUP_ROOT) -> CgroupMemory | None:
        """This process's cgroup when it has a memory limit, else None."""
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
            # cgroup v2's line is "0::<path>" (v1 hierarchies, listed too on hybrid hosts, are
            # not read: their limit file has another name and meaning)
            path = next(line[3:] for line in lines if line.startswith("0::"))
            raw = (root / path.lstrip("/") / "memory.max").read_text().strip()
        except (OSError, StopIteration):
            return None
        if not raw.isdigit():  # "max": no limit
            return None
        return cls(root / path.lstrip("/") / "memory.current", int(raw))

    def usage_bytes(self) -> int:
        """The cgroup's current usage (0 if unreadable)."""
        try:
            return int(self.current.read_text().strip())
        except (OSError, ValueError):
            return 0


class MemoryWatermark:
    """Raises MemoryPressureError (429) while memory is above the configured watermark."""

    def __init__(
        self,
        *,
        rss_limit_bytes: int,
        cgroup_fraction: float,
        metrics: Metrics,
        read_rss: Callable[[], int] = read_rss_bytes,
        cgroup: CgroupMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rss_limit = rss_limit_bytes
        self._cgroup = cgroup if cgroup_fraction < 1.0 else None
        self._cgroup_limit = int(cgroup.limit_bytes * cgroup_fraction) if cgroup else 0
        self._read_rss = read_rss
        self._clock = clock
        self._metrics = metrics
        self._checked_at = float("-inf")
        self._over: str | None = None

    @property
    def enabled(self) -> bool:
        """False when neither measure is configured (nothing is read then)."""
        return self._rss_limit > 0 or self._cgroup is not None

    def _measure(self) -> str | None:
        if self._rss_limit > 0:
            rss = self._read_rss()
            self._metrics.memory_bytes.labels("rss").set(rss)
            if rss > self._rss_limit:
                return f"the process uses {rss} bytes, over its watermark of {self._rss_limit}"
        if self._cgroup is not None:
            used = self._cgroup.usage_bytes()
            self._metrics.memory_bytes.labels("cgroup").set(used)
            if used > self._cgroup_limit:
                return f"the cgroup uses {used} bytes, over its watermark of {self._cgroup_limit}"
        return None

    def check(self) -> None:
        """Pass, or raise MemoryPressureError while memory is above the watermark."""
        if not self.enabled:
            return
        now = self._clock()
        if now - self._checked_at >= REFRESH_S:
            self._checked_at = now
            self._over = self._measure()
        if self._over is not None:
            raise MemoryPressureError(
                f"{self._over}: no new sessions until it drops; existing sessions still step",
                limit="memory",
                retry_after_s=5.0,
            )
