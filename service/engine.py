"""The composition root: builds the core (repository, batchers, session store) and stops it.

Operations receive what they need from here through narrow protocols: the repository as a
model lookup, `run_sequences` and `run_steps` as the batched runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from service.core.batching import (
    Batcher,
    JobRunner,
    SequenceResult,
    default_inline_max_steps,
    run_jobs,
    usable_cpus,
)
from service.core.inputs import Limits
from service.core.memory import CgroupMemory, MemoryWatermark
from service.core.pooled_steps import run_pooled_jobs
from service.core.providers import enabled_on, provider_config
from service.core.repository import ModelEntry, Repository, RepositoryChange
from service.core.runtime import RnnResult
from service.core.sessions import log_sessions_on_exit, open_store
from service.core.state import RecurrentState, SequenceArray
from service.core.state_pool import PoolGraphs, PoolKey, StatePool
from service.core.version import LoadedModel
from service.errors import ModelNotFoundError, NotReadyError
from service.metrics import Metrics
from service.operations.sessions import SessionManager, SessionSettings
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelWorkers:
    """A model version's worker thread and the two batchers that feed it."""

    executor: ThreadPoolExecutor
    predict: Batcher
    step: Batcher


class Engine:
    """Everything a request needs, built once per app from the settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        repository: Repository | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.metrics = Metrics()
        self.limits = Limits(max_sequences=settings.max_sequences, max_steps=settings.max_steps)
        self._preloaded = repository
        self._repository: Repository | None = None
        self._workers: dict[tuple[str, int], ModelWorkers] = {}
        self._sessions: SessionManager | None = None
        self._changing = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    @property
    def repository(self) -> Repository:
        """The loaded repository; NotReadyError before start() finished."""
        if self._repository is None:
            raise NotReadyError("the model repository is still loading", retry_after_s=1.0)
        return self._repository

    @property
    def sessions(self) -> SessionManager:
        """The streaming sessions; NotReadyError before start() finished."""
        if self._sessions is None:
            raise NotReadyError("the session store is starting", retry_after_s=1.0)
        return self._sessions

    @property
    def ready(self) -> bool:
        """True once every ready model has its batchers running."""
        return self._repository is not None

    async def start(self) -> None:
        """Load the repository off the event loop, then start one worker set per model."""
        s = self.settings
        repository = self._preloaded
        if repository is None:
            repository = await asyncio.to_thread(
                Repository.load,
                s.repository,
                providers=s.providers,
                intra_op_threads=s.intra_op_threads,
                strict=s.strict,
                config=provider_config(s),
            )
        for entry in repository.entries():
            self._show(entry)
        for model in repository.ready_models():
            self._workers[(model.name, model.version)] = self._start_workers(model)
        self._repository = repository
        self._sessions = SessionManager(
            models=repository,
            runner=self,
            store=open_store(s, self.metrics, clock=self._clock),
            settings=SessionSettings(ttl_s=s.session_ttl_s, max_steps=s.max_steps),
            metrics=self.metrics,
            clock=self._clock,
            watermark=MemoryWatermark(
                rss_limit_bytes=s.memory_watermark_bytes,
                cgroup_fraction=s.memory_watermark_fraction,
                cgroup=CgroupMemory.find(),
                metrics=self.metrics,
            ),
        )
        self._sessions.start()
        if s.repository_poll_s > 0:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(s.repository_poll_s), name="repository-poller"
            )

    async def load_model(self, name: str | None = None) -> RepositoryChange:
        """Serve the versions that appeared on disk (of `name`, or of every model) and drop
        those whose directory is gone; `name` also reloads its unloaded versions."""
        async with self._changing:
            change = await asyncio.to_thread(self.repository.scan, name)
            await self._apply(change)
            return change

    async def unload_model(self, name: str) -> RepositoryChange:
        """Stop serving every version of `name`; requests already queued still finish."""
        async with self._changing:
            change = self.repository.unload(name)
            await self._apply(change)
            return change

    async def _apply(self, change: RepositoryChange) -> None:
        self.repository.apply(change)
        for entry in change.removed:
            workers = self._workers.pop((entry.name, entry.version), None)
            self.metrics.model_ready.labels(
                entry.name, str(entry.version), entry.runner.provider if entry.runner else "none"
            ).set(0)
            log.info("model %s v%d no longer served", entry.name, entry.version)
            if workers is not None:
                await self._stop_workers(workers)
        for entry in change.added:
            self._show(entry)
            if entry.runner is not None:
                model = self.repository.get(entry.name, entry.version)
                self._workers[(model.name, model.version)] = self._start_workers(model)

    def _show(self, entry: ModelEntry) -> None:
        provider = entry.runner.provider if entry.runner else "none"
        self.metrics.model_ready.labels(entry.name, str(entry.version), provider).set(
            1 if entry.runner else 0
        )

    async def _poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                change = await self.load_model()
            except Exception:  # the poller must outlive a bad scan (a directory mid-copy)
                log.exception("repository rescan failed")
                continue
            for entry in change.added:
                log.info(
                    "repository poll: %s v%d is %s", entry.name, entry.version, entry.status.value
                )

    def _start_workers(self, model: LoadedModel) -> ModelWorkers:
        s = self.settings
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{model.name}")
        inline_max_steps = s.inline_max_steps
        if inline_max_steps is None:
            inline_max_steps = default_inline_max_steps(usable_cpus())

        def batcher(
            kind: str, max_batch_size: int, max_delay_ms: float, queue: int, run: JobRunner
        ) -> Batcher:
            return Batcher(
                model.runner,
                kind=kind,
                executor=executor,
                metrics=self.metrics,
                max_batch_size=max_batch_size,
                max_delay_ms=max_delay_ms,
                max_queue_size=queue,
                inline_max_steps=inline_max_steps,
                run=run,
            )

        predict = batcher(
            "predict", s.max_batch_size, s.max_queue_delay_ms, s.max_queue_size, run_jobs
        )
        step_run = run_jobs
        if model.card.streamable and enabled_on(s.state_pool, model.runner.provider):
            step_run = partial(run_pooled_jobs, pool=self._new_pool(model))
        step = batcher(
            "step", s.max_step_batch_size, s.max_step_delay_ms, s.max_step_queue_size, step_run
        )
        predict.start()
        step.start()
        return ModelWorkers(executor, predict, step)

    def _new_pool(self, model: LoadedModel) -> StatePool:
        runner = model.runner
        graphs = PoolGraphs(provider=runner.provider, device_id=runner.device_id)
        log.info(
            "model %s v%d keeps session states on %s (up to %d)",
            model.name,
            model.version,
            runner.provider,
            self.settings.state_pool_slots,
            extra={"model": model.name, "state_pool_slots": self.settings.state_pool_slots},
        )
        lookups = self.metrics.state_pool_lookups
        hit = lookups.labels(model.name, str(model.version), "hit")
        miss = lookups.labels(model.name, str(model.version), "miss")

        def count(hits: int, misses: int) -> None:
            hit.inc(hits)
            miss.inc(misses)

        return StatePool(
            model.card.states,
            graphs,
            max_slots=self.settings.state_pool_slots,
            on_lookups=count,
        )

    async def stop(self) -> None:
        """Finish queued work (steps still write their state), then close the session store."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for workers in self._workers.values():
            await self._stop_workers(workers)
        self._workers.clear()
        if self._sessions is not None:
            await log_sessions_on_exit(self._sessions.store)
            await self._sessions.stop()
            self._sessions = None

    @staticmethod
    async def _stop_workers(workers: ModelWorkers) -> None:
        await workers.predict.stop()
        await workers.step.stop()
        # the thread finishes the batch it runs; nothing waits on the loop for it
        await asyncio.to_thread(workers.executor.shutdown, wait=True)

    def _workers_of(self, model: LoadedModel) -> ModelWorkers:
        workers = self._workers.get((model.name, model.version))
        if workers is None:  # unloaded between the lookup and now
            raise ModelNotFoundError(
                f"model {model.name!r} v{model.version} was unloaded",
                detail={"model": model.name, "version": model.version},
            )
        return workers

    async def run_sequences(
        self, model: LoadedModel, sequences: list[SequenceArray], states: RecurrentState | None
    ) -> list[SequenceResult]:
        """Sequences through the model's predict batcher."""
        return await self._workers_of(model).predict.submit(sequences, states)

    async def run_steps(
        self,
        model: LoadedModel,
        sequence: SequenceArray,
        state: RecurrentState,
        key: PoolKey | None = None,
    ) -> SequenceResult:
        """One session's steps through the model's step batcher."""
        keys = None if key is None else [key]
        (result,) = await self._workers_of(model).step.submit([sequence], state, keys)
        return result

    async def run_step_batch(
        self,
        model: LoadedModel,
        sequences: list[SequenceArray],
        states: RecurrentState,
        keys: list[PoolKey] | None = None,
    ) -> list[SequenceResult]:
        """Many sessions' steps through the step batcher, in jobs of at most one batch each
        (they queue together, so a large set still runs back to back)."""
        step = self._workers_of(model).step
        size = self.settings.max_step_batch_size
        if len(sequences) <= size:
            return await step.submit(sequences, states, keys)
        parts = await asyncio.gather(
            *(
                step.submit(
                    sequences[start : start + size],
                    states.rows(start, start + size),
                    None if keys is None else keys[start : start + size],
                )
                for start in range(0, len(sequences), size)
            )
        )
        return [result for part in parts for result in part]

    async def run_step_rows(
        self, model: LoadedModel, inputs: SequenceArray, states: RecurrentState
    ) -> RnnResult:
        """Sequences of one length, stacked (`[n, steps, ...]`), through the step batcher; their
        outputs and final states returned whole (in jobs of at most one batch each, joined
        back in order)."""
        step = self._workers_of(model).step
        size = self.settings.max_step_batch_size
        if len(inputs) <= size:
            return await step.submit_whole(inputs, states)
        parts = await asyncio.gather(
            *(
                step.submit_whole(inputs[start : start + size], states.rows(start, start + size))
                for start in range(0, len(inputs), size)
            )
        )
        return RnnResult(
            np.concatenate([p.y for p in parts]), RecurrentState.stack([p.state for p in parts])
        )
