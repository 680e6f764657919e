"""The one settings object. Every field reads `RNNSERVE_<FIELD>`; tests build `Settings(...)`."""

from __future__ import annotations

import importlib.util
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class LogFormat(StrEnum):
    """How log lines are written."""

    JSON = "json"
    TEXT = "text"


class LogLevel(StrEnum):
    """The lowest level logged."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


class DeviceFeature(StrEnum):
    """Whether a device-side path is used: IOBinding, the device state pool."""

    AUTO = "auto"  # only for models on CUDA (on the CPU they cost more than they save)
    ON = "on"
    OFF = "off"


MEMORY_STORE = "memory"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Server settings; `rnnserve serve` flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="RNNSERVE_", extra="forbid")

    repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    strict: bool = False
    # > 0: rescan the repository this often and serve versions that appear (0: only at start
    # and through POST /v2/repository/models/{m}/load)
    repository_poll_s: float = Field(default=0.0, ge=0)

    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    intra_op_threads: int = Field(default=1, ge=0)
    # onnxruntime provider options by provider, as JSON: {"CUDAExecutionProvider": {...}},
    # over rnnserve's defaults (service/core/providers.py: DEFAULT_OPTIONS)
    provider_options: Annotated[dict[str, dict[str, str]], NoDecode] = Field(default_factory=dict)
    # set: every model must run on this provider, or the server refuses to start
    require_provider: str | None = None
    io_binding: DeviceFeature = DeviceFeature.AUTO
    # live sessions' states kept on the model's device between steps (service/core/state_pool.py)
    state_pool: DeviceFeature = DeviceFeature.AUTO
    state_pool_slots: int = Field(default=16_384, ge=1)

    max_batch_size: int = Field(default=64, ge=1)
    # 0 batches opportunistically: whatever queued while the previous batch ran goes together.
    # Waiting longer only pays when compute dominates; at concurrency 1 it is pure latency.
    max_queue_delay_ms: float = Field(default=0.0, ge=0)
    max_queue_size: int = Field(default=1024, ge=1)
    # batches of at most this many padded steps (sequences x longest) skip the worker thread;
    # None: every batch when the process may run on one CPU only, else 256 (core.batching)
    inline_max_steps: int | None = Field(default=None, ge=0)

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_sequences: int = Field(default=256, ge=1)
    max_steps: int = Field(default=10_000, ge=1)

    # hostile clients: a connection that sends nothing is closed after idle_timeout_s (also the
    # keep-alive wait between requests); a request must be received whole, headers and body,
    # within request_timeout_s of its first byte (byte-at-a-time senders are cut off)
    idle_timeout_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)

    # WebSocket limits, applied to every received message by service/edges/ws_guard.py
    ws_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # generous defaults: they bound a flood, not a busy client (the benchmark's 64 WebSocket
    # streams reach about 24,000 steps a second in all, README); the per-key budget applies
    # only with RNNSERVE_API_KEYS (keyless clients have the per-connection limit alone)
    ws_max_messages_per_s: float = Field(default=5_000.0, gt=0)
    ws_max_messages_per_s_per_key: float = Field(default=50_000.0, gt=0)
    ws_idle_timeout_s: float = Field(default=300.0, gt=0)

    # memory pressure: above the watermark new sessions get 429 (steps and predict still run).
    # memory_watermark_bytes is the process RSS (0: off); memory_watermark_fraction applies to
    # the cgroup's memory.max when the process runs under one (1.0: off)
    memory_watermark_bytes: int = Field(default=0, ge=0)
    memory_watermark_fraction: float = Field(default=0.9, gt=0, le=1)

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    session_store: str = MEMORY_STORE
    session_ttl_s: float = Field(default=600.0, gt=0)
    max_sessions: int = Field(default=100_000, ge=1)
    max_sessions_per_key: int = Field(default=10_000, ge=1)
    max_step_batch_size: int = Field(default=256, ge=1)
    max_step_delay_ms: float = Field(default=0.5, ge=0)
    # sessions' steps waiting for the step batcher; a mux frame queues all of its records
    max_step_queue_size: int = Field(default=16_384, ge=1)
    # records (sessions) in one binary step frame of WS /v1/models/{name}/mux
    mux_max_records: int = Field(default=4096, ge=1)
    store_timeout_s: float = Field(default=1.0, gt=0)

    # the live page at /ui (static files, no data of its own); RNNSERVE_UI=false removes it
    ui: bool = True

    # gRPC (KServe V2 + Triton's ModelStreamInfer) listens only when a port is set
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    # streamable models declare Triton's sequence_batching in their V2 config; off: every model
    # declares dynamic_batching (perf_analyzer then profiles stateless requests)
    v2_sequence_batching: bool = True

    shutdown_grace_s: float = Field(default=10.0, ge=0)
    access_log: bool = True
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.JSON

    @field_validator("providers", "api_keys", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("provider_options", mode="before")
    @classmethod
    def _provider_options(cls, value: Any) -> Any:
        # onnxruntime's Python API takes every option as a string; JSON numbers are fine here
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc.msg}): {value[:80]!r}") from None
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for provider, options in value.items():
            if not str(provider).endswith("ExecutionProvider"):
                raise ValueError(f"{provider!r} is not an onnxruntime execution provider name")
            if not isinstance(options, dict):
                raise ValueError(f"the options of {provider} must be a JSON object")
            for key, option in options.items():
                if isinstance(option, dict | list) or option is None:
                    raise ValueError(f"{provider} option {key!r} must be a string or a number")
            out[provider] = {
                str(k): str(int(v)) if isinstance(v, bool) else str(v) for k, v in options.items()
            }
        return out

    @field_validator("require_provider")
    @classmethod
    def _required(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.endswith("ExecutionProvider"):
            raise ValueError(f"{value!r} is not an onnxruntime execution provider name")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("session_store")
    @classmethod
    def _store(cls, value: str) -> str:
        if value == MEMORY_STORE:
            return value
        if not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"{value!r} is neither 'memory' nor a redis://host:port/db URL")
        if importlib.util.find_spec("redis") is None:
            raise ValueError(
                "the Redis session store needs the [redis] extra: pip install 'rnnserve[redis]'"
            )
        return value

    def masked(self) -> dict[str, Any]:
        """The effective settings as printable JSON, secrets masked."""
        shown = self.model_dump(mode="json")
        shown["api_keys"] = ["***"] * len(self.api_keys)
        if "@" in self.session_store:
            scheme, _, rest = self.session_store.partition("://")
            shown["session_store"] = f"{scheme}://***@{rest.rpartition('@')[2]}"
        return shown
