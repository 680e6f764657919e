"""Execution providers: which ones a model asks for, with which options, and what it got.

onnxruntime falls back to the CPU without a word when a provider it lists cannot be created
(CUDA libraries missing, no device), and silently drops providers it was not built with.
rnnserve says so instead: one warning per model naming what it asked for and what it runs on,
and, when `RNNSERVE_REQUIRE_PROVIDER` is set, a refusal to start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import onnxruntime as ort

from service.errors import ProviderUnavailableError
from service.settings import DeviceFeature, Settings

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


# Under the options a deployment gives. Recurrent graphs have no convolutions, so cuDNN's
# exhaustive conv-algorithm search (onnxruntime's default) would only add start-up time for a
# conv a model happens to contain; the heuristic pick is what an RNN server wants. TF32
# matmuls (onnxruntime's default on Ampere and later) round inputs to 10 mantissa bits: answers
# would drift ~1e-3 from the CPU's and from the exported model's parity check, so rnnserve
# computes in full float32 unless a deployment sets use_tf32=1.
DEFAULT_OPTIONS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {CUDA: MappingProxyType({"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"})}
)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What every model session is created with, beyond the provider names.

    `requested` is the provider list as configured, before filtering: each model is checked
    against it. `options` maps a provider name to its onnxruntime provider options (strings,
    as onnxruntime's Python API takes them), over DEFAULT_OPTIONS; `required`, when set, is the
    provider every model must actually run on (anything else is a ProviderUnavailableError).
    """

    requested: tuple[str, ...] = ()
    options: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    required: str | None = None
    io_binding: DeviceFeature = DeviceFeature.AUTO

    def options_for(self, providers: list[str]) -> list[dict[str, str]]:
        """One options dict per provider, in order: the defaults, then the configured ones."""
        return [{**DEFAULT_OPTIONS.get(p, {}), **self.options.get(p, {})} for p in providers]


DEFAULT_PROVIDERS = ProviderConfig()


def provider_config(settings: Settings) -> ProviderConfig:
    """The provider configuration the settings describe."""
    return ProviderConfig(
        requested=tuple(settings.providers),
        options=MappingProxyType(
            {p: MappingProxyType(dict(o)) for p, o in settings.provider_options.items()}
        ),
        required=settings.require_provider,
        io_binding=settings.io_binding,
    )


def choose_providers(requested: list[str], config: ProviderConfig = DEFAULT_PROVIDERS) -> list[str]:
    """Keep the requested providers onnxruntime can use here, in order; CPU as the last resort.

    With `config.required`, a required provider this onnxruntime build does not offer is a
    ProviderUnavailableError right away (before any model loads).
    """
    if CUDA in requested and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu does not search the CUDA/cuDNN wheels pip installed beside it by itself
        ort.preload_dlls()
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning(
            "execution providers not available here, skipped: %s",
            ", ".join(missing),
            extra={"missing_providers": missing, "available_providers": available},
        )
    if config.required is not None and config.required not in chosen:
        where = "is not requested" if config.required not in requested else "is not available"
        raise ProviderUnavailableError(
            f"required execution provider {config.required} {where} here "
            f"(onnxruntime {ort.__version__} offers {', '.join(available)})"
        )
    if not chosen:
        chosen = [CPU]
    return chosen


def check_actual_providers(
    *,
    model: str,
    version: int,
    requested: list[str],
    actual: list[str],
    config: ProviderConfig,
) -> None:
    """Warn when a model did not get a provider it asked for; raise when it is the required one."""
    failed = [p for p in requested if p not in actual]
    if failed:
        log.warning(
            "model %s v%d: execution providers %s could not be used; running on %s",
            model,
            version,
            ", ".join(failed),
            actual[0],
            extra={
                "model": model,
                "version": version,
                "requested_providers": requested,
                "failed_providers": failed,
                "provider": actual[0],
            },
        )
    if config.required is not None and actual[0] != config.required:
        raise ProviderUnavailableError(
            f"model {model} v{version} runs on {actual[0]}, "
            f"but RNNSERVE_REQUIRE_PROVIDER is {config.required}"
        )


def uses_io_binding(config: ProviderConfig, provider: str) -> bool:
    """Whether batches of a model on `provider` go through IOBinding."""
    return enabled_on(config.io_binding, provider)


def enabled_on(mode: DeviceFeature, provider: str) -> bool:
    """Whether a device-side feature is on for a model on `provider` (auto: on CUDA only)."""
    if mode is DeviceFeature.AUTO:
        return provider == CUDA
    return mode is DeviceFeature.ON


def device_id_of(config: ProviderConfig, provider: str) -> int:
    """The device a provider's memory is on (its `device_id` option; 0 by default)."""
    value = config.options_for([provider])[0].get("device_id", "0")
    try:
        return int(value)
    except ValueError:
        raise ProviderUnavailableError(
            f"{provider} option device_id must be an integer, not {value!r}"
        ) from None
