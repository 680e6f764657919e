"""The batcher without HTTP: batch formation, limits, draining, and result scattering."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.core.batching import Batcher, default_inline_max_steps, usable_cpus
from service.core.repository import Repository
from service.core.runtime import ModelRunner
from service.errors import NotReadyError, QueueFullError
from service.metrics import Metrics
from tests.support.clock import ManualClock
from tests.support.models import RandomRepository
from tests.support.reference import assert_close, run_alone


@pytest.fixture(scope="module")
def runner(random_repository: RandomRepository) -> ModelRunner:
    repository = Repository.load(
        random_repository.path, providers=["CPUExecutionProvider"], intra_op_threads=1
    )
    return repository.get("lstm3").runner


def make_batcher(
    runner: ModelRunner,
    *,
    inline_max_steps: int = 0,
    max_batch_size: int = 8,
    max_delay_ms: float = 0.0,
    max_queue_size: int = 64,
    clock: ManualClock | None = None,
) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    batcher = Batcher(
        runner,
        kind="predict",
        executor=ThreadPoolExecutor(1),
        metrics=metrics,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        max_queue_size=max_queue_size,
        inline_max_steps=inline_max_steps,
        clock=clock or ManualClock(),
    )
    return batcher, metrics


def batch_sizes(metrics: Metrics) -> tuple[float, float]:
    """(number of onnxruntime calls, sequences run) from the batch-size histogram."""
    calls = metrics.registry.get_sample_value(
        "rnnserve_batch_size_count", {"model": "lstm3", "version": "1", "kind": "predict"}
    )
    total = metrics.registry.get_sample_value(
        "rnnserve_batch_size_sum", {"model": "lstm3", "version": "1", "kind": "predict"}
    )
    return calls or 0.0, total or 0.0


def sequence(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(length, 2)).astype(np.float32)


@pytest.mark.parametrize("inline_max_steps", [0, 1000], ids=["worker-thread", "inline"])
async def test_jobs_queued_together_run_in_one_call_and_scatter_back(
    runner: ModelRunner, random_repository: RandomRepository, inline_max_steps: int
) -> None:
    batcher, metrics = make_batcher(runner, inline_max_steps=inline_max_steps)
    sequences = [sequence(n, n) for n in (3, 9, 1, 4)]
    tasks = [asyncio.ensure_future(batcher.submit([s])) for s in sequences]
    batcher.start()
    results = await asyncio.gather(*tasks)
    await batcher.stop()
    assert batch_sizes(metrics) == (1.0, 4.0)
    for seq, [result] in zip(sequences, results, strict=True):
        expected = run_alone(random_repository.path / "lstm3" / "1", seq)
        assert result.y.shape == (len(seq), 2)
        assert_close(result.y, expected.y)
        assert_close(result.state.arrays[0][:, 0], expected.h)


async def test_a_batch_never_exceeds_max_batch_size(runner: ModelRunner) -> None:
    batcher, metrics = make_batcher(runner, max_batch_size=3)
    tasks = [
        asyncio.ensure_future(batcher.submit([sequence(2, i), sequence(2, i + 1)]))
        for i in range(4)
    ]
    batcher.start()
    await asyncio.gather(*tasks)
    await batcher.stop()
    assert batch_sizes(metrics) == (4.0, 8.0)


async def test_without_delay_a_lone_job_runs_at_once(runner: ModelRunner) -> None:
    batcher, metrics = make_batcher(runner, max_delay_ms=0.0)
    batcher.start()
    await batcher.submit([sequence(2, 0)])
    await batcher.submit([sequence(2, 1)])
    await batcher.stop()
    assert batch_sizes(metrics) == (2.0, 2.0)


async def test_with_a_delay_the_batch_waits_for_late_jobs_until_the_clock_passes_it(
    runner: ModelRunner,
) -> None:
    clock = ManualClock()
    batcher, metrics = make_batcher(runner, max_delay_ms=60_000.0, clock=clock)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit([sequence(2, 0)]))
    await asyncio.sleep(0.05)
    assert not first.done(), "the batch waits while the deadline is ahead"
    second = asyncio.ensure_future(batcher.submit([sequence(3, 1)]))
    await asyncio.sleep(0.05)
    clock.now += 61.0
    third = asyncio.ensure_future(batcher.submit([sequence(1, 2)]))
    await asyncio.gather(first, second, third)
    await batcher.stop()
    assert batch_sizes(metrics) == (1.0, 3.0)


async def test_a_full_queue_rejects_with_queue_full(runner: ModelRunner) -> None:
    batcher, _ = make_batcher(runner, max_queue_size=2)
    pending = asyncio.ensure_future(batcher.submit([sequence(1, 0), sequence(1, 1)]))
    await asyncio.sleep(0)
    with pytest.raises(QueueFullError):
        await batcher.submit([sequence(1, 2)])
    batcher.start()
    await pending
    await batcher.stop()


async def test_stop_finishes_queued_jobs_then_refuses_new_ones(runner: ModelRunner) -> None:
    batcher, _ = make_batcher(runner)
    batcher.start()
    tasks = [asyncio.ensure_future(batcher.submit([sequence(5, i)])) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert all(t.done() and t.exception() is None for t in tasks)
    with pytest.raises(NotReadyError):
        await batcher.submit([sequence(1, 0)])


@pytest.mark.parametrize("inline_max_steps", [0, 1000], ids=["worker-thread", "inline"])
async def test_a_cancelled_request_does_not_break_its_batch(
    runner: ModelRunner, inline_max_steps: int
) -> None:
    batcher, _ = make_batcher(runner, inline_max_steps=inline_max_steps)
    doomed = asyncio.ensure_future(batcher.submit([sequence(2, 0)]))
    kept = asyncio.ensure_future(batcher.submit([sequence(2, 1)]))
    await asyncio.sleep(0)
    doomed.cancel()
    batcher.start()
    [result] = await kept
    await batcher.stop()
    assert result.y.shape == (2, 2)


def test_one_cpu_runs_every_batch_inline_and_more_cpus_only_small_ones() -> None:
    assert default_inline_max_steps(1) >= 10**9
    assert default_inline_max_steps(2) == 256
    assert usable_cpus() >= 1
