"""Triton's statistics extension (`GET /v2/models[/{m}[/versions/{v}]]/stats`) from `/metrics`.

The figures are read back from the app's Prometheus registry (`service.core.stats` records
them), so `/metrics` and the statistics always agree. Predict and step batches of a model
version count together, as Triton counts every request to a model; v1 predicts and sessions
count with V2 infers, since they share the batchers.

- `success` / `fail`: requests answered or failed by a batcher, and their time from queueing
  to answer; `queue`: time waiting for the batch; `compute_infer`: the onnxruntime call each
  request was part of (a batch's time counts once per request in it, as in Triton).
- `compute_input` / `compute_output`: counted with 0 ns: padding the batch and slicing the
  answers happen inside the timed call, so their time is in `compute_infer`.
- `batch_stats`: onnxruntime calls per batch size (sequences per call) and their time.
- `inference_count`: sequences inferred; `execution_count`: onnxruntime calls.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from service.core.stats import FAILED, SUCCESS
from service.edges.wire import parse_version
from service.engine import Engine
from service.metrics import Metrics

NS_PER_S = 1_000_000_000
MS_PER_S = 1000


@dataclass
class Duration:
    """A Triton `StatisticDuration`: a count and the total time in seconds."""

    count: int = 0
    seconds: float = 0.0

    def add(self, count: float, seconds: float) -> None:
        """Accumulate a summary's _count and _sum."""
        self.count += round(count)
        self.seconds += seconds

    def as_json(self) -> dict[str, int]:
        """`{"count", "ns"}`."""
        return {"count": self.count, "ns": round(self.seconds * NS_PER_S)}


@dataclass
class VersionFigures:
    """Everything the statistics report for one model version."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=lambda: defaultdict(Duration))
    last_inference_s: float = 0.0


def collect_figures(metrics: Metrics) -> dict[tuple[str, str], VersionFigures]:
    """The figures of every model version that has any, keyed by (model, version label)."""
    figures: dict[tuple[str, str], VersionFigures] = defaultdict(VersionFigures)
    families = {
        "rnnserve_model_request_duration_seconds",
        "rnnserve_queue_duration_seconds",
        "rnnserve_request_compute_seconds",
        "rnnserve_batch_compute_seconds",
    }
    for family in metrics.registry.collect():
        if family.name == "rnnserve_last_inference_timestamp_seconds":
            for sample in family.samples:
                key = (sample.labels["model"], sample.labels["version"])
                figures[key].last_inference_s = sample.value
            continue
        if family.name not in families:
            continue
        sums: dict[tuple[tuple[str, str], ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for sample in family.samples:
            slot = {"_count": 0, "_sum": 1}.get(sample.name.removeprefix(family.name))
            if slot is not None:
                labels = tuple(sorted(sample.labels.items()))
                sums[labels][slot] += sample.value
        for labels, (count, seconds) in sums.items():
            _add(figures, family.name, dict(labels), count, seconds)
    return figures


def _add(
    figures: dict[tuple[str, str], VersionFigures],
    family: str,
    labels: dict[str, str],
    count: float,
    seconds: float,
) -> None:
    entry = figures[(labels["model"], labels["version"])]
    if family == "rnnserve_model_request_duration_seconds":
        target = {SUCCESS: entry.success, FAILED: entry.fail}[labels["outcome"]]
    elif family == "rnnserve_queue_duration_seconds":
        target = entry.queue
    elif family == "rnnserve_request_compute_seconds":
        target = entry.compute
    else:
        target = entry.batches[int(labels["batch_size"])]
    target.add(count, seconds)


def version_statistics(name: str, version: int, figures: VersionFigures) -> dict[str, Any]:
    """One entry of `model_stats` in Triton's shape."""
    succeeded = figures.success.count
    zero = Duration(succeeded).as_json()
    batch_stats = [
        {
            "batch_size": size,
            "compute_input": Duration(d.count).as_json(),
            "compute_infer": d.as_json(),
            "compute_output": Duration(d.count).as_json(),
        }
        for size, d in sorted(figures.batches.items())
    ]
    return {
        "name": name,
        "version": str(version),
        "last_inference": round(figures.last_inference_s * MS_PER_S),
        "inference_count": sum(size * d.count for size, d in figures.batches.items()),
        "execution_count": sum(d.count for d in figures.batches.values()),
        "inference_stats": {
            "success": figures.success.as_json(),
            "fail": figures.fail.as_json(),
            "queue": figures.queue.as_json(),
            "compute_input": zero,
            "compute_infer": figures.compute.as_json(),
            "compute_output": zero,
            "cache_hit": Duration().as_json(),
            "cache_miss": Duration().as_json(),
        },
        "response_stats": {},
        "batch_stats": batch_stats,
        "memory_usage": [],
    }


def model_statistics(engine: Engine, name: str | None, version: str | None) -> dict[str, Any]:
    """`{"model_stats": [...]}` for every ready version, one model's, or one version's.

    An unknown model or version is the same 404 as everywhere under `/v2/models/`.
    """
    repository = engine.repository
    if name is None:
        models = repository.ready_models()
    elif version not in (None, ""):
        models = [repository.get(name, parse_version(version))]
    else:
        repository.get(name)
        models = [m for m in repository.ready_models() if m.name == name]
    figures = collect_figures(engine.metrics)
    return {
        "model_stats": [
            version_statistics(
                m.name, m.version, figures.get((m.name, str(m.version)), VersionFigures())
            )
            for m in sorted(models, key=lambda m: (m.name, m.version))
        ]
    }
