"""The core property: streaming a sequence in any split, over REST and WebSocket mixed, gives
the per-step outputs and final state of one predict over the whole sequence, and of a
PyTorch loop that carries h_n."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import DEMO_REPOSITORY, RANDOM_MODELS, RandomRepository, cpu_settings
from tests.reference import assert_close, card_of
from tests.sessions.harness import (
    Harness,
    random_split,
    random_state,
    random_steps,
    running_app,
)

STREAMABLE = sorted(name for name, kw in RANDOM_MODELS.items() if not kw.get("bidirectional"))
LENGTH = 13


def demo_models() -> list[Any]:
    """Streamable demo models committed under models/ (their highest versions)."""
    found = []
    for card_path in sorted(DEMO_REPOSITORY.glob("*/*/model.json")):
        card = json.loads(card_path.read_text())
        if card.get("streamable"):
            found.append(pytest.param(card_path.parent, id=f"{card['name']}-v{card['version']}"))
    assert found, "models/ holds streamable demo models"
    return found


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    async with running_app(cpu_settings(random_repository.path)) as harness:
        yield harness


async def stream(
    app: Harness,
    model: str,
    steps: list[Any],
    sizes: list[int],
    *,
    initial: dict[str, Any] | None,
    rng: np.random.Generator,
) -> tuple[list[Any], dict[str, Any]]:
    """Open a session, send the chunks over REST or the WebSocket at random; outputs, state."""
    body = {"initial_state": initial} if initial else None
    opened = await app.client.post(f"/v1/models/{model}/sessions", json=body)
    session_id = opened.json()["session_id"]
    outputs: list[Any] = []
    seq = 0
    async with app.ws(f"/v1/sessions/{session_id}/stream") as ws:
        assert (await ws.receive_json())["seq"] == 0  # the greeting
        for size in sizes:
            request = {"seq": seq, "inputs": steps[seq : seq + size]}
            if rng.random() < 0.5:
                await ws.send_json(request)
                answer = await ws.receive_json()
            else:
                response = await app.client.post(f"/v1/sessions/{session_id}/steps", json=request)
                answer = response.json()
            assert answer.get("seq") == seq + size, answer
            outputs.extend(answer["outputs"])
            seq += size
    state = (await app.client.get(f"/v1/sessions/{session_id}/state")).json()["state"]
    return outputs, state


async def one_predict(
    app: Harness, model: str, steps: list[Any], initial: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [steps], "output": "all", "return_state": True}
    if initial:
        body["initial_state"] = [initial]
    response = await app.client.post(f"/v1/models/{model}/predict", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def assert_same_stream(
    outputs: list[Any], state: dict[str, Any], want_y: Any, want_state: dict[str, Any]
) -> None:
    assert_close(outputs, np.asarray(want_y, np.float32))
    assert set(state) == set(want_state)
    for key in want_state:
        assert_close(state[key], np.asarray(want_state[key], np.float32))


def sizes_for(split: str, rng: np.random.Generator) -> list[int]:
    return {
        "single": [1] * LENGTH,
        "random": random_split(LENGTH, rng),
        "whole": [LENGTH],
    }[split]


@pytest.mark.parametrize("initial", ["zeros", "given"])
@pytest.mark.parametrize("split", ["single", "random", "whole"])
@pytest.mark.parametrize("name", STREAMABLE)
async def test_streaming_in_any_split_equals_one_predict(
    app: Harness, random_repository: RandomRepository, name: str, split: str, initial: str
) -> None:
    card = card_of(random_repository.path / name / "1")
    rng = np.random.default_rng(zlib.crc32(f"{name}/{split}/{initial}".encode()))
    steps = random_steps(card, LENGTH, rng)
    state0 = random_state(card, rng) if initial == "given" else None
    outputs, state = await stream(app, name, steps, sizes_for(split, rng), initial=state0, rng=rng)
    whole = await one_predict(app, name, steps, state0)
    assert_same_stream(outputs, state, whole["outputs"][0], whole["state"][0])


def torch_loop(
    module: torch.nn.Module, steps: list[Any], tokens: bool, initial: dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any]]:
    """What a PyTorch user writes: one step at a time, h_n carried into the next call."""
    hidden: Any = None
    if initial is not None:
        h = torch.tensor(initial["h"], dtype=torch.float32)[:, None]
        hidden = (
            (h, torch.tensor(initial["c"], dtype=torch.float32)[:, None]) if "c" in initial else h
        )
    outputs = []
    with torch.no_grad():
        for step in steps:
            x = torch.tensor([[step]], dtype=torch.long if tokens else torch.float32)
            y, hidden = module(x, hidden)
            outputs.append(y.reshape(-1).tolist())  # per-step head: [1,1,out]; last-step: [1,out]
    if isinstance(hidden, tuple):
        return outputs, {"h": hidden[0][:, 0].tolist(), "c": hidden[1][:, 0].tolist()}
    return outputs, {"h": hidden[:, 0].tolist()}


@pytest.mark.parametrize("name", STREAMABLE)
async def test_streaming_matches_a_pytorch_loop_that_carries_h_n(
    app: Harness, random_repository: RandomRepository, name: str
) -> None:
    card = card_of(random_repository.path / name / "1")
    rng = np.random.default_rng(99)
    steps = random_steps(card, LENGTH, rng)
    state0 = random_state(card, rng)
    outputs, state = await stream(
        app, name, steps, random_split(LENGTH, rng), initial=state0, rng=rng
    )
    want_y, want_state = torch_loop(
        random_repository.modules[name], steps, bool(card.get("vocab_size")), state0
    )
    assert_same_stream(outputs, state, want_y, want_state)


@pytest.mark.parametrize("version_dir", demo_models())
async def test_demo_models_stream_like_one_predict(version_dir: Any) -> None:
    card = card_of(version_dir)
    name = card["name"]
    rng = np.random.default_rng(2)
    steps = random_steps(card, LENGTH, rng)
    async with running_app(cpu_settings(DEMO_REPOSITORY)) as app:
        for state0 in (None, random_state(card, rng)):
            outputs, state = await stream(
                app, name, steps, random_split(LENGTH, rng), initial=state0, rng=rng
            )
            whole = await one_predict(app, name, steps, state0)
            assert_same_stream(outputs, state, whole["outputs"][0], whole["state"][0])
