"""Dynamic batching of variable-length sequences with their initial states.

Predict requests and streaming steps share this machinery (two instances per model): the
queue collects sequences while the previous batch runs, pads them to the longest, passes
`seq_lens`, runs once and scatters the rows back.

A model whose card says it is not padding-safe (its outputs would change if a sequence were
padded) runs each length in a batch as its own call: still exact, still batched under load.

Small batches (at most `inline_max_steps` padded steps) run on the event loop itself: handing
them to the worker thread costs more CPU than running them (measured ~60 us per hand-off on
one core, against ~30 us for a batch of single steps). Larger batches go to the model's
worker thread so the loop keeps parsing and answering meanwhile — when there is another CPU to
do so: a process that may run on one CPU only runs every batch inline (`default_inline_max_steps`),
since there the thread cannot overlap with the loop and the hand-off and the GIL switches are
pure cost (predict B=1 T=50 c=32 on one core: 18% less server CPU per request, p99 down by a
third, bench predict_c32).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

from service.core.runtime import ModelRunner, RnnBatch, RnnResult
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.core.state_pool import PoolKey
from service.core.stats import BatchRecorder
from service.errors import InferenceError, NotReadyError, QueueFullError
from service.logs import request_id_var
from service.metrics import Metrics

log = logging.getLogger(__name__)

INLINE_MAX_STEPS_MULTICORE = 256


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_inline_max_steps(cpus: int) -> int:
    """Every batch inline on one CPU; batches up to 256 padded steps inline otherwise."""
    return sys.maxsize if cpus <= 1 else INLINE_MAX_STEPS_MULTICORE


@dataclass(frozen=True, slots=True)
class SequenceResult:
    """One sequence's outputs and the state after its last step.

    `y` is `[steps, out]` for models that answer every step (only the sequence's own steps),
    `[1, out]` for per_sequence models.
    """

    y: FloatArray
    state: RecurrentState


JobResult = list[SequenceResult] | RnnResult


@dataclass(slots=True)
class BatchJob:
    """Sequences from one request, waiting for a batch; `states` None means zeros.

    A `whole` job holds sequences of one length already stacked (`[n, steps, ...]`) and gets
    its rows of the batch's outputs as one RnnResult (views, in job order) instead of a result
    per sequence: the caller stores them column-wise itself."""

    sequences: list[SequenceArray] | SequenceArray
    states: RecurrentState | None
    future: asyncio.Future[JobResult]
    whole: bool = False
    queued_at: float = field(default_factory=time.perf_counter)
    # session steps: which session and stored write each sequence belongs to (the state pool)
    keys: Sequence[PoolKey] | None = None
    # the request that queued it: a failed batch's log line names the requests it failed
    request_id: str = field(default_factory=request_id_var.get)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.sequences)


def pad_sequences(sequences: list[SequenceArray]) -> tuple[SequenceArray, npt.NDArray[np.int32]]:
    """Stack sequences into one zero-padded batch, with each one's length."""
    sizes = [len(s) for s in sequences]
    lengths = np.array(sizes, np.int32)
    if len(sequences) == 1:
        return sequences[0][None], lengths
    longest = max(sizes)
    first_shape = sequences[0].shape[1:]
    if min(sizes) == longest:
        # streaming steps: all of one length (usually 1), nothing to pad
        stacked = np.concatenate(sequences).reshape(len(sequences), longest, *first_shape)
        return cast(SequenceArray, stacked), lengths
    first = sequences[0]
    inputs = np.zeros((len(sequences), longest, *first.shape[1:]), first.dtype)
    for row, seq in enumerate(sequences):
        inputs[row, : len(seq)] = seq
    return inputs, lengths


def assemble_batch(jobs: list[BatchJob], runner: ModelRunner) -> RnnBatch:
    """Pad every job's sequences to the longest one and stack their states."""
    if len(jobs) == 1 and isinstance(jobs[0].sequences, np.ndarray):  # stacked already
        inputs = jobs[0].sequences
        lengths = np.full(len(inputs), inputs.shape[1], np.int32)
    else:
        inputs, lengths = pad_sequences([s for job in jobs for s in job.sequences])
    state = RecurrentState.stack([job.states or runner.zero_state(job.size) for job in jobs])
    return RnnBatch(inputs, lengths, state)


def run_batch(batch: RnnBatch, runner: ModelRunner) -> list[SequenceResult]:
    """One call, or one call per length when the model is not padding-safe; a result per row."""
    if runner.card.padding_safe or len(batch.seq_lens) == 1:
        return _split(batch.seq_lens, runner.run(batch))
    results: list[SequenceResult | None] = [None] * len(batch.seq_lens)
    for length in np.unique(batch.seq_lens):
        rows = np.flatnonzero(batch.seq_lens == length)
        part = RnnBatch(
            batch.inputs[rows, :length],
            batch.seq_lens[rows],
            RecurrentState(tuple(a[:, rows] for a in batch.state.arrays)),
        )
        for row, result in zip(rows, _split(part.seq_lens, runner.run(part)), strict=True):
            results[row] = result
    return [r for r in results if r is not None]


def _split(lengths: npt.NDArray[np.int32], result: RnnResult) -> list[SequenceResult]:
    if result.y.shape[0] != len(lengths):
        raise RuntimeError("batch axis changed inside the graph")
    per_step = result.y.ndim == 3
    # each row's state owns its memory: a stored view would pin the whole batch's state
    states = result.state.owned_rows()
    return [
        SequenceResult(result.y[row, :length] if per_step else result.y[row : row + 1], state)
        for (row, length), state in zip(enumerate(lengths.tolist()), states, strict=True)
    ]


def run_jobs(jobs: list[BatchJob], runner: ModelRunner) -> list[JobResult]:
    """One batch for all jobs, split back per job (and per sequence, unless the job is whole)."""
    batch = assemble_batch(jobs, runner)
    lengths = batch.seq_lens
    if not (runner.card.padding_safe or lengths.min() == lengths.max()):
        rows = run_batch(batch, runner)
        return [_rows_of(job, rows[a:b]) for job, (a, b) in zip(jobs, _spans(jobs), strict=True)]
    result = runner.run(batch)
    if result.y.shape[0] != len(lengths):
        raise RuntimeError("batch axis changed inside the graph")
    out: list[JobResult] = []
    for job, (a, b) in zip(jobs, _spans(jobs), strict=True):
        part = RnnResult(result.y[a:b], result.state.rows(a, b))
        out.append(part if job.whole else _split(lengths[a:b], part))
    return out


def _spans(jobs: list[BatchJob]) -> list[tuple[int, int]]:
    ends = np.cumsum([job.size for job in jobs]).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _rows_of(job: BatchJob, rows: list[SequenceResult]) -> JobResult:
    if not job.whole:
        return rows
    return RnnResult(np.stack([r.y for r in rows]), RecurrentState.stack([r.state for r in rows]))


JobRunner = Callable[[list[BatchJob], ModelRunner], list[JobResult]]


class Batcher:
    """Queues jobs for one model version and runs them in batches, one batch at a time
    (`run` runs one batch: `run_jobs`, or the state pool's `run_pooled_jobs` for steps)."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        kind: str,
        executor: Executor,
        metrics: Metrics,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue_size: int,
        inline_max_steps: int = 0,
        clock: Callable[[], float] = time.monotonic,
        run: JobRunner = run_jobs,
    ) -> None:
        self._runner = runner
        self._run = run
        self._kind = kind
        self._executor = executor
        self._max_batch = max_batch_size
        self._max_delay_s = max_delay_ms / 1000.0
        self._max_queue = max_queue_size
        self._clock = clock
        self._pending: deque[tuple[float, BatchJob]] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inline_max_steps = inline_max_steps
        labels = (runner.card.name, str(runner.card.version), kind)
        self._name = f"batcher-{'-'.join(labels)}"
        self._queue_depth = metrics.queue_depth.labels(*labels)
        self._inference_seconds = metrics.inference_seconds.labels(*labels)
        self._batch_size = metrics.batch_size.labels(*labels)
        self._recorder = BatchRecorder(metrics, model=labels[0], version=labels[1], kind=kind)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Refuse new work, finish every queued job, then stop the loop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def submit(
        self,
        sequences: list[SequenceArray],
        states: RecurrentState | None = None,
        keys: Sequence[PoolKey] | None = None,
    ) -> list[SequenceResult]:
        """Queue sequences (and their initial states, and for session steps their `keys`);
        returns one result per sequence."""
        rows = await self._queue(sequences, states, whole=False, keys=keys)
        assert isinstance(rows, list)
        return rows

    async def submit_whole(self, inputs: SequenceArray, states: RecurrentState) -> RnnResult:
        """Queue sequences of one length, stacked (`[n, steps, ...]`); returns their rows of the
        batch's outputs at once (`y` and the states after each sequence, in order; views)."""
        result = await self._queue(inputs, states, whole=True)
        assert isinstance(result, RnnResult)
        return result

    async def _queue(
        self,
        sequences: list[SequenceArray] | SequenceArray,
        states: RecurrentState | None,
        *,
        whole: bool,
        keys: Sequence[PoolKey] | None = None,
    ) -> JobResult:
        if self._closing:
            raise NotReadyError("the server is shutting down", retry_after_s=1.0)
        if self._queued + len(sequences) > self._max_queue:
            self._recorder.rejected()
            raise QueueFullError(
                f"the {self._kind} queue of {self._runner.card.name} is full", retry_after_s=1.0
            )
        future = asyncio.get_running_loop().create_future()
        job = BatchJob(sequences, states, future, whole, keys=keys)
        self._pending.append((self._clock(), job))
        self._queued += job.size
        self._queue_depth.set(self._queued)
        self._wakeup.set()
        return await job.future

    async def _next_batch(self) -> list[BatchJob]:
        while not self._pending:
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        first_at, first = self._pending.popleft()
        jobs, size = [first], first.size
        while size < self._max_batch:
            if not self._pending:
                remaining = first_at + self._max_delay_s - self._clock()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                continue
            if size + self._pending[0][1].size > self._max_batch:
                break
            _, job = self._pending.popleft()
            jobs.append(job)
            size += job.size
        self._queued -= size
        self._queue_depth.set(self._queued)
        return jobs

    def _fail(self, jobs: list[BatchJob], exc: Exception) -> None:
        """Fail only this batch's jobs: one log line with the traceback, a typed error each."""
        self._recorder.failed(jobs)
        card = self._runner.card
        ids = [job.request_id for job in jobs]
        log.error(
            "%s batch of %d requests failed on %s v%d: %s",
            self._kind,
            len(jobs),
            card.name,
            card.version,
            type(exc).__name__,
            exc_info=exc,
            extra={"model": card.name, "request_ids": ids},
        )
        for job in jobs:
            if not job.future.done():
                error = InferenceError(
                    f"inference failed on model {card.name!r} v{card.version}",
                    detail={"model": card.name, "version": card.version},
                )
                error.__cause__ = exc
                job.future.set_exception(error)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if not jobs:
                return
            live = [job for job in jobs if not job.future.done()]
            if not live:
                continue
            sequences = sum(job.size for job in live)
            padded_steps = sequences * max(len(s) for job in live for s in job.sequences)
            started = time.perf_counter()
            try:
                if padded_steps <= self._inline_max_steps:
                    results = self._run(live, self._runner)
                else:
                    results = await loop.run_in_executor(
                        self._executor, self._run, live, self._runner
                    )
            except Exception as exc:
                self._fail(live, exc)
                continue
            self._inference_seconds.observe(time.perf_counter() - started)
            self._batch_size.observe(sequences)
            self._recorder.succeeded(live, started=started, sequences=sequences)
            for job, rows in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(rows)
            # let the answers go out before the next batch, which may also run inline
            await asyncio.sleep(0)
