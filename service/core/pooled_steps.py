"""A batch of session steps run from the device state pool: states gathered by slot, the model
run with them bound on the device, the new states scattered back; only inputs and outputs cross
to the host (plus the new states when the store needs them: Redis is written through).

The contract is the host path's (`batching.run_batch` from each record's host state): same
outputs and states bit for bit, since gather and scatter only move float32 values; the tests
check it for chunked steps, replays, lost compare-and-sets, resets, exports and eviction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.core.batching import BatchJob, JobResult, SequenceResult, pad_sequences, run_jobs
from service.core.runtime import ModelRunner
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.state_pool import StatePool, StateTag

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PooledStep:
    """One session's steps in a pooled batch.

    `tag` names the stored write the steps start from and `state` is that write's host state,
    loaded only when the pool does not hold it; `new_tag` names the write the steps make if
    the store's compare-and-set accepts them (the pool is tagged with it either way: a lost
    compare-and-set leaves a tag no record carries, so the next step reloads).
    """

    session_id: str
    sequence: SequenceArray
    tag: StateTag
    state: RecurrentState
    new_tag: StateTag


@dataclass(frozen=True, slots=True)
class PooledResult:
    """One session's outputs; its new state on the host only when asked for."""

    y: FloatArray
    state: RecurrentState | None


def run_pooled_steps(
    runner: ModelRunner, pool: StatePool, steps: Sequence[PooledStep], *, host_states: bool
) -> list[PooledResult]:
    """Run one step request per session (distinct sessions) from the pool; one result each."""
    misses = [s for s in steps if not pool.holds(s.session_id, s.tag)]
    pool.count_lookups(len(steps) - len(misses), len(misses))
    pool.put_many(
        [s.session_id for s in misses], [s.tag for s in misses], [s.state for s in misses]
    )
    lengths = np.fromiter((len(s.sequence) for s in steps), np.int64, len(steps))
    if runner.card.padding_safe or len(set(lengths.tolist())) == 1:
        return _run_group(runner, pool, steps, host_states=host_states)
    # a model that is not padding-safe runs each length on its own, as the host path does
    results: list[PooledResult | None] = [None] * len(steps)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length).tolist()
        group = _run_group(runner, pool, [steps[r] for r in rows], host_states=host_states)
        for row, result in zip(rows, group, strict=True):
            results[row] = result
    return [r for r in results if r is not None]


def _run_group(
    runner: ModelRunner, pool: StatePool, steps: Sequence[PooledStep], *, host_states: bool
) -> list[PooledResult]:
    ids = [s.session_id for s in steps]
    inputs, seq_lens = pad_sequences([s.sequence for s in steps])
    y, new_states = runner.run_device_states(inputs, seq_lens, pool.gather(ids))
    # copied out before the scatter: the buffers belong to this thread's next run
    # owned_rows copies each row out: on the CPU `numpy()` is a view of this thread's buffer
    host = (
        RecurrentState(tuple(v.numpy() for v in new_states)).owned_rows() if host_states else None
    )
    pool.scatter(ids, [s.new_tag for s in steps], new_states)
    per_step = y.ndim == 3
    return [
        PooledResult(
            y[row, :length] if per_step else y[row : row + 1],
            None if host is None else host[row],
        )
        for row, length in enumerate(seq_lens.tolist())
    ]


def run_pooled_jobs(
    jobs: list[BatchJob], runner: ModelRunner, *, pool: StatePool
) -> list[JobResult]:
    """The step batcher's batch through the pool when every sequence is a keyed session step
    of a distinct session; otherwise (a job without keys or answered whole, two requests
    racing for one session) the host path, which the pool's tags make safe to mix with it."""
    keys = [key for job in jobs for key in (job.keys or ())]
    sessions = {key.session_id for key in keys}
    unkeyed = any(job.whole or job.keys is None or job.states is None for job in jobs)
    if unkeyed or len(sessions) != len(keys):
        return run_jobs(jobs, runner)
    steps = [
        PooledStep(key.session_id, sequence, key.tag, job.states.rows(row, row + 1), key.new_tag)
        for job in jobs
        if job.keys is not None and job.states is not None
        for row, (sequence, key) in enumerate(zip(job.sequences, job.keys, strict=True))
    ]
    try:
        pooled = run_pooled_steps(runner, pool, steps, host_states=True)
    except Exception:
        # the pool is a cache: whatever broke it (a device error, a bug), the host path
        # still answers
        log.exception("state pool batch failed; running it from the host states")
        for key in keys:  # their slots may hold half-written states tagged as the new writes
            pool.drop(key.session_id)
        return run_jobs(jobs, runner)
    results = iter(pooled)
    out: list[JobResult] = []
    for job in jobs:
        rows = [next(results) for _ in range(job.size)]
        out.append([SequenceResult(r.y, r.state) for r in rows if r.state is not None])
    return out
