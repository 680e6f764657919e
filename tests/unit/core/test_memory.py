"""The memory watermark: RSS and cgroup readings against their limits, cached briefly."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.memory import CgroupMemory, MemoryWatermark, read_rss_bytes
from service.errors import MemoryPressureError
from service.metrics import Metrics
from tests.support.clock import ManualClock


def watermark(rss: list[int], clock: ManualClock, **kwargs: object) -> MemoryWatermark:
    return MemoryWatermark(
        rss_limit_bytes=kwargs.pop("rss_limit_bytes", 1000),  # type: ignore[arg-type]
        cgroup_fraction=kwargs.pop("cgroup_fraction", 1.0),  # type: ignore[arg-type]
        metrics=Metrics(),
        read_rss=lambda: rss[0],
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_process_rss_is_read_from_proc() -> None:
    assert read_rss_bytes() > 1024 * 1024
    assert read_rss_bytes(Path("/nonexistent")) == 0


def test_above_the_rss_watermark_refuses_and_recovers_once_memory_drops() -> None:
    rss, clock = [999], ManualClock()
    guard = watermark(rss, clock)
    guard.check()
    rss[0] = 1001
    guard.check()  # cached: the reading is at most REFRESH_S old
    clock.advance(1.0)
    with pytest.raises(MemoryPressureError) as refused:
        guard.check()
    assert refused.value.limit == "memory" and refused.value.retry_after_s == 5.0
    rss[0] = 10
    clock.advance(1.0)
    guard.check()


def test_off_reads_nothing() -> None:
    def boom() -> int:
        raise AssertionError("read while off")

    guard = MemoryWatermark(
        rss_limit_bytes=0, cgroup_fraction=0.9, metrics=Metrics(), read_rss=boom, cgroup=None
    )
    assert not guard.enabled
    guard.check()


def test_a_cgroup_limit_trips_at_its_fraction(tmp_path: Path) -> None:
    current = tmp_path / "memory.current"
    current.write_text("850\n")
    cgroup = CgroupMemory(current, limit_bytes=1000)
    clock = ManualClock()
    guard = watermark([0], clock, rss_limit_bytes=0, cgroup_fraction=0.9, cgroup=cgroup)
    guard.check()
    current.write_text("901\n")
    clock.advance(1.0)
    with pytest.raises(MemoryPressureError, match="cgroup"):
        guard.check()


def test_a_cgroup_without_a_limit_or_v2_is_not_used(tmp_path: Path) -> None:
    assert CgroupMemory.find(tmp_path) is None
