"""The serving process's own settings: open-files limit and garbage-collector thresholds."""

from __future__ import annotations

import gc
import resource
from collections.abc import Iterator

import pytest

from service.cli import GC_THRESHOLDS, prepare_process


@pytest.fixture
def restored() -> Iterator[None]:
    """prepare_process changes this process: put everything back afterwards."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_a_server_process_may_open_as_many_files_as_the_hard_limit_allows(
    restored: None,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    prepare_process()
    now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert now == hard if hard != resource.RLIM_INFINITY else now >= soft


def test_startup_objects_are_frozen_out_of_collections_and_young_ones_collected_less_often(
    restored: None,
) -> None:
    prepare_process()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
