"""FastAPI's OpenTelemetry hooks are off unless the environment configures OpenTelemetry."""

from __future__ import annotations

import os

import pytest

from service.app import telemetry_config


def test_no_opentelemetry_in_the_environment_turns_the_hooks_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE", raising=False)
    assert telemetry_config() == {"tracing": False, "metrics": False, "logs": False}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider"),
        ("FASTAPI_OTEL_AUTO_CONFIGURE", "true"),
    ],
)
def test_an_opentelemetry_environment_keeps_fastapis_defaults(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)
    assert telemetry_config() == {}
