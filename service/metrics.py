"""Prometheus metrics, in a registry of their own per app (no process-wide singletons)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rnnserve_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "rnnserve_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_requests = Counter(
            "rnnserve_model_requests",
            "Requests (predict or step jobs) run by the model's batchers, by outcome",
            ["model", "version", "kind", "outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "rnnserve_batch_size",
            "Sequences per onnxruntime call",
            ["model", "version", "kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "rnnserve_inference_seconds",
            "Time inside onnxruntime per batch",
            ["model", "version", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "rnnserve_queue_depth",
            "Sequences waiting for a batch",
            ["model", "version", "kind"],
            registry=r,
        )
        self.live_sessions = Gauge(
            "rnnserve_live_sessions", "Streaming sessions currently stored", registry=r
        )
        self.session_events = Counter(
            "rnnserve_session_events",
            "Session lifecycle events (opened, closed, reset, expired, rejected)",
            ["event"],
            registry=r,
        )
        self.session_steps = Counter(
            "rnnserve_session_steps",
            "Session step requests by outcome (applied, replayed, conflict)",
            ["outcome"],
            registry=r,
        )
        self.state_pool_lookups = Counter(
            "rnnserve_state_pool_lookups",
            "Session steps run from the device state pool: hit (state already on the device) "
            "or miss (loaded from the stored record)",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.mux_records = Counter(
            "rnnserve_mux_records",
            "Records of mux step frames by status (applied, replayed, conflict, gone, ...)",
            ["status"],
            registry=r,
        )
        self.store_up = Gauge(
            "rnnserve_session_store_up", "1 when the session store answers, else 0", registry=r
        )
        self.store_round_trip_commands = Histogram(
            "rnnserve_session_store_round_trip_commands",
            "Commands per round trip to the session store (a Redis pipeline); _count: round trips",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_ready = Gauge(
            "rnnserve_model_ready",
            "1 when the model version serves, else 0",
            ["model", "version", "provider"],
            registry=r,
        )

        # per request and per batch size, _count and _sum: what Triton's statistics report
        self.request_duration = Summary(
            "rnnserve_model_request_duration_seconds",
            "Inference requests from queueing to answer, by outcome",
            ["model", "version", "kind", "outcome"],
            registry=r,
        )
        self.queue_duration = Summary(
            "rnnserve_queue_duration_seconds",
            "Time an inference request waited for its batch",
            ["model", "version", "kind"],
            registry=r,
        )
        self.request_compute = Summary(
            "rnnserve_request_compute_seconds",
            "Time of the onnxruntime call each request was part of",
            ["model", "version", "kind"],
            registry=r,
        )
        self.batch_compute = Summary(
            "rnnserve_batch_compute_seconds",
            "onnxruntime calls and their time, by sequences in the batch",
            ["model", "version", "kind", "batch_size"],
            registry=r,
        )
        self.last_inference = Gauge(
            "rnnserve_last_inference_timestamp_seconds",
            "When the model version last answered a batch (Unix time)",
            ["model", "version"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
