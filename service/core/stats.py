"""Per-request and per-batch figures of a batcher, recorded into the app's Prometheus metrics.

`/metrics` shows them and Triton's statistics extension (`service.edges.v2.stats`) reads them
back from the same registry, so both always agree. Durations come from `time.perf_counter`,
whatever clock the batcher schedules with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from service.metrics import Metrics

SUCCESS = "success"
FAILED = "failed"


class QueuedJob(Protocol):
    """What the recorder needs of a batch job."""

    @property
    def queued_at(self) -> float: ...


class BatchRecorder:
    """Records one batcher's batches (model, version and kind fixed at construction)."""

    def __init__(self, metrics: Metrics, *, model: str, version: str, kind: str) -> None:
        self._metrics = metrics
        self._labels = (model, version, kind)
        self._queue = metrics.queue_duration.labels(*self._labels)
        self._compute = metrics.request_compute.labels(*self._labels)
        self._outcomes: dict[str, tuple[Any, Any]] = {
            outcome: (
                metrics.request_duration.labels(*self._labels, outcome),
                metrics.model_requests.labels(*self._labels, outcome),
            )
            for outcome in (SUCCESS, FAILED)
        }
        self._by_size: dict[int, Any] = {}
        self._last = metrics.last_inference.labels(model, version)

    def succeeded(self, jobs: Sequence[QueuedJob], *, started: float, sequences: int) -> None:
        """A batch ran from `started` (perf_counter) until now."""
        finished = time.perf_counter()
        compute_s = finished - started
        batch = self._by_size.get(sequences)
        if batch is None:
            labels = (*self._labels, str(sequences))
            batch = self._by_size[sequences] = self._metrics.batch_compute.labels(*labels)
        batch.observe(compute_s)
        duration, count = self._outcomes[SUCCESS]
        for job in jobs:
            self._queue.observe(started - job.queued_at)
            self._compute.observe(compute_s)
            duration.observe(finished - job.queued_at)
            count.inc()
        self._last.set(time.time())

    def rejected(self) -> None:
        """A request refused before it queued (the queue was full)."""
        duration, count = self._outcomes[FAILED]
        duration.observe(0.0)
        count.inc()

    def failed(self, jobs: Sequence[QueuedJob]) -> None:
        """Requests whose batch failed to run."""
        finished = time.perf_counter()
        duration, count = self._outcomes[FAILED]
        for job in jobs:
            duration.observe(finished - job.queued_at)
            count.inc()
