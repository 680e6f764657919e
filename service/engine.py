"""The composition root: builds the core (repository, batchers, session store) and stops it.

Operations receive what they need from here through narrow protocols: the repository as a
model lookup, `run_sequences` and `run_steps` as the batched runners.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.core.batching import Batcher, SequenceResult
from service.core.inputs import Limits
from service.core.repository import LoadedModel, Repository
from service.core.sessions import log_sessions_on_exit, open_store
from service.core.state import RecurrentState, SequenceArray
from service.errors import NotReadyError
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
            )
        for entry in repository.entries():
            provider = entry.runner.provider if entry.runner else "none"
            self.metrics.model_ready.labels(entry.name, str(entry.version), provider).set(
                1 if entry.runner else 0
            )
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
        )
        self._sessions.start()

    def _start_workers(self, model: LoadedModel) -> ModelWorkers:
        s = self.settings
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{model.name}")

        def batcher(kind: str, max_batch_size: int, max_delay_ms: float) -> Batcher:
            return Batcher(
                model.runner,
                kind=kind,
                executor=executor,
                metrics=self.metrics,
                max_batch_size=max_batch_size,
                max_delay_ms=max_delay_ms,
                max_queue_size=s.max_queue_size,
                inline_max_steps=s.inline_max_steps,
            )

        predict = batcher("predict", s.max_batch_size, s.max_queue_delay_ms)
        step = batcher("step", s.max_step_batch_size, s.max_step_delay_ms)
        predict.start()
        step.start()
        return ModelWorkers(executor, predict, step)

    async def stop(self) -> None:
        """Finish queued work (steps still write their state), then close the session store."""
        for workers in self._workers.values():
            await workers.predict.stop()
            await workers.step.stop()
            workers.executor.shutdown(wait=True)
        self._workers.clear()
        if self._sessions is not None:
            await log_sessions_on_exit(self._sessions.store)
            await self._sessions.stop()
            self._sessions = None

    async def run_sequences(
        self, model: LoadedModel, sequences: list[SequenceArray], states: RecurrentState | None
    ) -> list[SequenceResult]:
        """Sequences through the model's predict batcher."""
        return await self._workers[(model.name, model.version)].predict.submit(sequences, states)

    async def run_steps(
        self, model: LoadedModel, sequence: SequenceArray, state: RecurrentState
    ) -> SequenceResult:
        """One session's steps through the model's step batcher."""
        (result,) = await self._workers[(model.name, model.version)].step.submit([sequence], state)
        return result
