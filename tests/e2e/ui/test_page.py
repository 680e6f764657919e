"""The live page in a real headless Chromium against a real `rnnserve serve` on the demo models.

Debian's `chromium` (.ci/run installs it) driven by Playwright with `executable_path`; Playwright
downloads no browser. Set RNNSERVE_UI_SCREENSHOT=docs/images/ui.png to refresh the README's
screenshot from the side-by-side test.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Playwright, WebSocket, sync_playwright
from rnnserve_client import Client, SessionNotFoundError

from export.datasets import load_digits
from tests.support.servers import DEMO_REPOSITORY, ServerProcess, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM.exists(), "Debian's chromium is needed: apt-get install chromium (.ci/run)"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # root in CI: Chromium's sandbox needs an unprivileged user namespace it may not get
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(DEMO_REPOSITORY, tmp_path_factory.mktemp("ui-server"))
    yield process
    process.stop()


class Watched:
    """A page with everything worth asserting on recorded: console errors, requests, frames."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.frames_received: dict[str, int] = {}
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("websocket", self._socket)
        self.page.goto(f"{base_url}/ui")

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _socket(self, socket: WebSocket) -> None:
        path = socket.url.split("/v1/", 1)[-1]
        self.frames_received.setdefault(path, 0)

        def count(_: Any) -> None:
            self.frames_received[path] += 1

        socket.on("framereceived", count)

    def ui(self, expression: str) -> Any:
        return self.page.evaluate(f"window.rnnserveUi.{expression}")

    def wait_for_cards(self, count: int) -> None:
        self.page.wait_for_function(f"Object.keys(window.rnnserveUi.cards).length >= {count}")


@pytest.fixture
def watched(browser: Browser, server: ServerProcess) -> Iterator[Watched]:
    page = Watched(browser, server.base_url)
    yield page
    page.page.close()


def forecasts_by_predict(base_url: str, values: list[float]) -> list[float]:
    """What one predict over the whole series answers, month by month."""
    with Client(base_url) as client:
        outputs = client.predict("co2-forecaster", [[[v] for v in values]], output="all")
    return [step[0] for step in outputs.outputs[0]]


def session_seq(base_url: str, session_id: str) -> int:
    with Client(base_url) as client:
        return client.session(session_id).seq


def run_forecaster(watched: Watched) -> None:
    watched.page.select_option("#co2-delay", "0")
    watched.page.click("#co2-start")


def draw_digit(watched: Watched, image: np.ndarray[Any, Any]) -> None:
    """Paint every non-zero pixel with its own ink value, the way a user would."""
    for row in range(8):
        for col in range(8):
            value = int(image[row, col])
            if value:
                watched.page.fill("#digits-ink", str(value))
                watched.page.click(f'#digits-grid .cell[data-row="{row}"][data-col="{col}"]')


def softmax(logits: list[float]) -> list[float]:
    peak = max(logits)
    weights = [math.exp(v - peak) for v in logits]
    return [w / sum(weights) for w in weights]


def test_the_page_loads_offline_without_console_errors_and_shows_every_card(
    watched: Watched, server: ServerProcess
) -> None:
    with Client(server.base_url) as client:
        models = client.models()
    watched.wait_for_cards(len(models))
    cards = watched.page.locator("#model-cards article")
    assert cards.count() == len(models)
    for info in models:
        text = watched.page.locator(f'article[data-model="{info.name}"]').inner_text()
        card = info.card
        assert card is not None
        mantissa, exponent = f"{card['parity']['max_abs_error']:.2e}".split("e")
        assert f"{mantissa}e{int(exponent)}" in text  # as JavaScript's toExponential(2) writes it
        assert card["head"] in text and "streamable" in text
        for state in card["states"]:
            assert f"{state['name']} [{state['rows']}x{state['width']}]" in text
    assert "ready" in watched.page.inner_text("#health")
    assert watched.console_errors == []
    outside = [url for url in watched.requests if not url.startswith(server.base_url)]
    assert outside == [], "the page must work without the internet"


def test_the_forecaster_chart_gets_every_month_over_the_websocket_equal_to_predict(
    watched: Watched, server: ServerProcess
) -> None:
    watched.wait_for_cards(3)
    started = time.perf_counter()
    run_forecaster(watched)
    watched.page.wait_for_function(
        "window.rnnserveUi.co2.seq > 0 && !window.rnnserveUi.co2.running"
    )
    elapsed = time.perf_counter() - started
    x, observed, forecast = watched.ui("co2.chart.data")
    values = watched.ui("co2.values")
    points = [v for v in forecast if v is not None]
    assert len(points) == len(values) == watched.ui("co2.seq")
    # the greeting plus one answer per month, all over the one socket
    assert watched.frames_received[f"models/{'co2-forecaster'}/stream"] == len(values) + 1
    assert observed[: len(values)] == values
    expected = forecasts_by_predict(server.base_url, values)
    # forecast[i + 1] is the answer to month i: the chart draws it at the month it forecasts
    gap = float(np.max(np.abs(np.asarray(forecast[1:], dtype=np.float64) - expected)))
    np.testing.assert_allclose(forecast[1:], expected, rtol=1e-6, atol=0)
    print(f"\nco2: {len(points)} points over the WebSocket in {elapsed:.2f} s")
    print(f"co2: max |chart - predict| = {gap:.3g} ppm")
    assert len(x) == len(values) + 1
    assert watched.console_errors == []


def test_the_forecaster_resumes_its_session_after_the_socket_drops(
    watched: Watched, server: ServerProcess
) -> None:
    watched.wait_for_cards(3)
    watched.page.select_option("#co2-delay", "15")
    watched.page.click("#co2-start")
    watched.page.wait_for_function("window.rnnserveUi.co2.seq >= 12")
    session_id = watched.ui("co2.sessionId")
    watched.page.evaluate("window.rnnserveUi.co2.socket.socket.close(1000)")  # the socket is lost
    watched.page.wait_for_function("!window.rnnserveUi.co2.running")
    stopped_at = watched.ui("co2.seq")
    watched.page.select_option("#co2-delay", "0")
    watched.page.click("#co2-start")
    watched.page.wait_for_function(
        "window.rnnserveUi.co2.seq === window.rnnserveUi.co2.values.length && "
        "!window.rnnserveUi.co2.running"
    )
    assert watched.ui("co2.sessionId") == session_id, "the page opened a new session"
    assert watched.frames_received[f"sessions/{session_id}/stream"] >= 1  # the greeting
    values = watched.ui("co2.values")
    assert session_seq(server.base_url, session_id) == len(values) > stopped_at
    forecast = watched.ui("co2.chart.data")[2]
    np.testing.assert_allclose(
        forecast[1:], forecasts_by_predict(server.base_url, values), rtol=1e-6
    )


def test_generated_text_grows_token_by_token_from_the_prompt(watched: Watched) -> None:
    watched.wait_for_cards(3)
    labels = watched.ui("cards['char-lm'].card.labels")
    prompt, length = "class ", 80
    watched.page.fill("#lm-prompt", prompt)
    watched.page.fill("#lm-length", str(length))
    watched.page.fill("#lm-temperature", "0.7")
    watched.page.click("#lm-generate")
    seen: list[int] = []
    while not seen or seen[-1] < len(prompt) + length:
        watched.page.wait_for_function(
            f"document.querySelector('#lm-output').textContent.length > {seen[-1] if seen else 0}"
        )
        seen.append(len(watched.page.inner_text("#lm-output")))
    watched.page.wait_for_function("!window.rnnserveUi.lm.running")
    text = watched.ui("lm.text")
    assert text.startswith(prompt) and len(text) == len(prompt) + length
    assert len(seen) >= 3, f"text arrived in {len(seen)} jumps, not token by token"
    assert set(text[len(prompt) :]) <= set(labels)
    assert watched.ui("lm.steps") == len(prompt) + length
    assert watched.console_errors == []


def test_a_test_set_digit_drawn_on_the_grid_is_classified_row_by_row(
    watched: Watched, server: ServerProcess
) -> None:
    watched.wait_for_cards(3)
    test_set = load_digits().test
    images = [image.astype(int) for image in test_set.x[:20]]
    with Client(server.base_url) as client:
        answer = client.predict("digits-rnn", [image.tolist() for image in images], output="all")
    right = [i for i, out in enumerate(answer.outputs) if np.argmax(out[-1]) == test_set.y[i]]
    index = right[0]
    draw_digit(watched, images[index])
    assert watched.ui("digits.pixels") == images[index].ravel().tolist()
    watched.page.click("#digits-classify")
    watched.page.wait_for_function(
        "window.rnnserveUi.digits.rows.length === 8 && "
        "!document.querySelector('#digits-classify').disabled"
    )
    assert watched.ui("digits.predicted") == str(test_set.y[index])
    assert watched.page.inner_text("#digits-class") == str(test_set.y[index])
    # one probability vector per row, each the softmax of the logits predict gives at that row
    for shown, logits in zip(watched.ui("digits.rows"), answer.outputs[index], strict=True):
        np.testing.assert_allclose(shown, softmax(logits), rtol=1e-5, atol=1e-7)
    assert watched.page.locator("#digits-history tbody tr").count() == 8
    assert watched.console_errors == []


def test_an_expired_session_is_shown_in_the_page_and_a_new_one_takes_over(
    browser: Browser, tmp_path: Path
) -> None:
    server = start_server(DEMO_REPOSITORY, tmp_path, env={"RNNSERVE_SESSION_TTL_S": "1"})
    try:
        watched = Watched(browser, server.base_url)
        watched.wait_for_cards(3)
        draw_digit(watched, np.eye(8, dtype=int) * 16)
        watched.page.click("#digits-classify")
        watched.page.wait_for_function("window.rnnserveUi.digits.rows.length === 8")
        expired = watched.ui("digits.sessionId")
        deadline = time.monotonic() + 30
        while True:
            try:
                session_seq(server.base_url, expired)
            except SessionNotFoundError:
                break
            assert time.monotonic() < deadline, "the session never expired"
            time.sleep(0.2)
        watched.page.wait_for_selector("#digits-classify:not([disabled])")
        watched.page.click("#digits-classify")
        error = watched.page.locator('#error-list li[data-type="session_not_found"]')
        error.wait_for()
        assert "404" in error.inner_text() and "expired" in error.inner_text()
        assert watched.page.is_visible("#errors")
        watched.page.wait_for_function(
            f"window.rnnserveUi.digits.rows.length === 8 && "
            f"window.rnnserveUi.digits.sessionId !== {expired!r}"
        )
        watched.page.close()
    finally:
        server.stop()


def test_with_api_keys_the_page_reports_401_then_streams_with_the_typed_key(
    browser: Browser, tmp_path: Path
) -> None:
    key = "page-key+/="
    server = start_server(DEMO_REPOSITORY, tmp_path, env={"RNNSERVE_API_KEYS": key})
    try:
        watched = Watched(browser, server.base_url)
        watched.page.locator('#error-list li[data-type="unauthorized"]').wait_for()
        watched.page.fill("#api-key", key)
        watched.page.dispatch_event("#api-key", "change")
        watched.wait_for_cards(3)
        watched.page.select_option("#co2-delay", "0")
        watched.page.click("#co2-start")
        watched.page.wait_for_function("window.rnnserveUi.co2.seq >= 24")
        watched.page.click("#co2-pause")
        assert not any("socket closed" in e["message"] for e in watched.ui("errors"))
        assert all(key not in url for url in watched.requests)
        watched.page.close()
        assert key not in server.log()
    finally:
        server.stop()


def test_swagger_ui_renders_offline_with_an_authorize_button(
    browser: Browser, server: ServerProcess
) -> None:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith(server.base_url) else outside.append(r.url)
    )
    page.goto(f"{server.base_url}/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "rnnserve" in page.inner_text(".swagger-ui .info .title")
    page.locator(".swagger-ui button.authorize").wait_for()
    assert page.locator(".swagger-ui .opblock").count() > 10
    assert outside == []
    page.close()


def test_all_three_demos_side_by_side_for_the_screenshot(watched: Watched, tmp_path: Path) -> None:
    watched.wait_for_cards(3)
    test_set = load_digits().test
    run_forecaster(watched)
    watched.page.fill("#lm-length", "400")
    watched.page.click("#lm-generate")
    draw_digit(watched, test_set.x[0].astype(int))
    watched.page.click("#digits-classify")
    watched.page.wait_for_function(
        "!window.rnnserveUi.co2.running && !window.rnnserveUi.lm.running && "
        "window.rnnserveUi.digits.rows.length === 8 && window.rnnserveUi.co2.seq > 0"
    )
    shot = tmp_path / "ui.png"
    watched.page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert watched.console_errors == []
    if target := os.environ.get("RNNSERVE_UI_SCREENSHOT"):
        shutil.copyfile(shot, target)
