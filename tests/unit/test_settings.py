"""Settings come from RNNSERVE_* variables, are validated, and print with secrets masked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_variables_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSERVE_PORT", "9001")
    monkeypatch.setenv("RNNSERVE_PROVIDERS", "CPUExecutionProvider")
    monkeypatch.setenv("RNNSERVE_API_KEYS", "alpha, beta")
    settings = Settings()
    assert settings.port == 9001
    assert settings.providers == ["CPUExecutionProvider"]
    assert [k.get_secret_value() for k in settings.api_keys] == ["alpha", "beta"]


def test_constructor_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSERVE_PORT", "9001")
    assert Settings(port=9002).port == 9002


@pytest.mark.parametrize(
    "bad",
    [{"max_batch_size": 0}, {"max_queue_delay_ms": -1}, {"log_level": "loud"}, {"port": 70000}],
)
def test_invalid_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_masked_settings_hide_keys_and_store_passwords() -> None:
    shown = Settings(api_keys=["secret"], session_store="redis://user:pw@redis:6379/0").masked()
    assert "secret" not in str(shown)
    assert "pw" not in shown["session_store"]
    assert shown["session_store"].endswith("redis:6379/0")


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import build_parser, settings_from

    monkeypatch.setenv("RNNSERVE_PORT", "9001")
    monkeypatch.setenv("RNNSERVE_MAX_BATCH_SIZE", "7")
    args = build_parser().parse_args(
        ["serve", "--port", "9100", "--providers", "CPUExecutionProvider"]
    )
    settings = settings_from(args)
    assert (settings.port, settings.max_batch_size, settings.providers) == (
        9100,
        7,
        ["CPUExecutionProvider"],
    )


def test_the_step_queue_has_its_own_bound_above_the_predict_queue() -> None:
    settings = Settings()
    assert settings.max_step_queue_size >= 10_000 > settings.max_queue_size
    assert settings.inline_max_steps is None
    with pytest.raises(ValidationError):
        Settings(max_step_queue_size=0)
