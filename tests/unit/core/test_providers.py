"""Providers are honest: what a model asked for and what it got are logged (JSON), a required
provider that is missing stops the load, and provider options reach onnxruntime validated."""

from __future__ import annotations

import logging

import onnxruntime as ort
import orjson
import pytest
from pydantic import ValidationError

from service.core.providers import (
    CPU,
    CUDA,
    DEFAULT_OPTIONS,
    ProviderConfig,
    check_actual_providers,
    choose_providers,
    device_id_of,
    provider_config,
    uses_io_binding,
)
from service.core.repository import Repository
from service.errors import ProviderUnavailableError
from service.logs import JsonFormatter
from service.settings import DeviceFeature, Settings
from tests.support.models import RandomRepository

CUDA_HERE = CUDA in ort.get_available_providers()
needs_no_cuda = pytest.mark.skipif(CUDA_HERE, reason="CUDA is available here")


def json_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """Every captured record as rnnserve's JSON log line would carry it."""
    formatter = JsonFormatter()
    return [orjson.loads(formatter.format(r)) for r in caplog.records]


@needs_no_cuda
def test_each_model_that_asked_for_cuda_warns_in_json_naming_what_it_runs_on(
    random_repository: RandomRepository, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        repository = Repository.load(
            random_repository.path, providers=[CUDA, CPU], intra_op_threads=1
        )
    lines = json_lines(caplog)
    per_model = {line["model"]: line for line in lines if "failed_providers" in line}
    assert set(per_model) == {e.name for e in repository.entries()}
    gru = per_model["gru1"]
    assert gru["level"] == "warning"
    assert gru["failed_providers"] == [CUDA]
    assert gru["requested_providers"] == [CUDA, CPU]
    assert gru["provider"] == CPU == repository.get("gru1").runner.provider
    assert any(line.get("missing_providers") == [CUDA] for line in lines)


def test_a_model_on_the_provider_it_asked_for_says_nothing(
    random_repository: RandomRepository, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        Repository.load(random_repository.path, providers=[CPU], intra_op_threads=1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@needs_no_cuda
def test_a_required_provider_missing_here_stops_the_load_before_any_model() -> None:
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider is not available"):
        choose_providers([CUDA, CPU], ProviderConfig(required=CUDA))
    with pytest.raises(ProviderUnavailableError, match="is not requested"):
        choose_providers([CPU], ProviderConfig(required=CUDA))


def test_a_model_off_the_required_provider_is_an_error_not_a_warning() -> None:
    with pytest.raises(ProviderUnavailableError, match="runs on CPUExecutionProvider"):
        check_actual_providers(
            model="m",
            version=1,
            requested=[CUDA, CPU],
            actual=[CPU],
            config=ProviderConfig(required=CUDA),
        )


def test_the_required_provider_when_present_loads_every_model(
    random_repository: RandomRepository,
) -> None:
    config = ProviderConfig(required=CPU)
    repository = Repository.load(
        random_repository.path, providers=[CPU], intra_op_threads=1, config=config
    )
    assert {e.runner.provider for e in repository.entries() if e.runner} == {CPU}


def test_provider_options_come_from_json_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "RNNSERVE_PROVIDER_OPTIONS",
        '{"CUDAExecutionProvider": {"device_id": 1, "gpu_mem_limit": 2147483648,'
        ' "do_copy_in_default_stream": true}}',
    )
    monkeypatch.setenv("RNNSERVE_REQUIRE_PROVIDER", CUDA)
    monkeypatch.setenv("RNNSERVE_IO_BINDING", "on")
    config = provider_config(Settings())
    cuda, cpu = config.options_for([CUDA, CPU])
    assert cuda == {
        **DEFAULT_OPTIONS[CUDA],
        "device_id": "1",
        "gpu_mem_limit": "2147483648",
        "do_copy_in_default_stream": "1",
    }
    assert cpu == {}
    assert device_id_of(config, CUDA) == 1 and device_id_of(config, CPU) == 0
    assert config.required == CUDA and config.io_binding is DeviceFeature.ON


def test_cudnn_conv_search_is_heuristic_unless_a_deployment_says_otherwise() -> None:
    assert ProviderConfig().options_for([CUDA]) == [
        {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
    ]
    settings = Settings(
        provider_options={CUDA: {"cudnn_conv_algo_search": "EXHAUSTIVE"}}  # type: ignore[dict-item]
    )
    assert provider_config(settings).options_for([CUDA])[0]["cudnn_conv_algo_search"] == (
        "EXHAUSTIVE"
    )


@pytest.mark.parametrize(
    "value",
    [
        '{"cuda": {"device_id": "0"}}',
        '{"CUDAExecutionProvider": ["device_id"]}',
        '{"CUDAExecutionProvider": {"device_id": {"x": 1}}}',
        "not json",
    ],
)
def test_malformed_provider_options_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RNNSERVE_PROVIDER_OPTIONS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_require_provider_takes_a_provider_name_or_nothing() -> None:
    assert Settings(require_provider="").require_provider is None
    with pytest.raises(ValidationError):
        Settings(require_provider="cuda")


def test_a_device_id_that_is_not_a_number_is_a_provider_error() -> None:
    config = ProviderConfig(options={CUDA: {"device_id": "first"}})
    with pytest.raises(ProviderUnavailableError, match="device_id"):
        device_id_of(config, CUDA)


@pytest.mark.parametrize(
    ("mode", "provider", "bound"),
    [
        (DeviceFeature.AUTO, CUDA, True),
        (DeviceFeature.AUTO, CPU, False),
        (DeviceFeature.ON, CPU, True),
        (DeviceFeature.OFF, CUDA, False),
    ],
)
def test_io_binding_auto_means_on_cuda_only(
    mode: DeviceFeature, provider: str, bound: bool
) -> None:
    assert uses_io_binding(ProviderConfig(io_binding=mode), provider) is bound
