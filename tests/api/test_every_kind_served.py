"""Every kind of everyday recurrent module, exported by the real exporter and then served: predict
over mixed lengths equals the module on each sequence alone, streamable ones stream exactly in
chunks carrying all their states (which the session exports and takes back), V2 names every
state, and the ones that cannot stream refuse a session saying why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from export.api import export_module
from service.core.card import ModelCard
from tests.export.test_kinds import KINDS, Kind, _torch_alone
from tests.support.app import Harness, cpu_settings, running_app

LENGTHS = (7, 3, 1, 5)
CHUNKS = (1, 3, 2, 4)


def model_name(kind: str) -> str:
    return kind.replace("_", "-")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, nn.Module]]:
    """Every kind exported once into one repository."""
    repository = tmp_path_factory.mktemp("served-kinds")
    modules = {}
    for name, kind in KINDS.items():
        torch.manual_seed(1)
        module = kind.build().eval()
        export_module(module, name=model_name(name), repository=repository)
        modules[name] = module
    return repository, modules


@pytest.fixture
async def app(served: tuple[Path, dict[str, nn.Module]]) -> AsyncIterator[Harness]:
    async with running_app(cpu_settings(served[0])) as harness:
        yield harness


async def card_of(client: httpx.AsyncClient, name: str) -> ModelCard:
    described = await client.get(f"/v1/models/{model_name(name)}")
    return ModelCard.model_validate(described.json()["card"])


def inputs_for(card: ModelCard, rng: np.random.Generator, length: int) -> np.ndarray:
    if card.vocab_size is not None:
        return rng.integers(0, card.vocab_size, length).astype(np.int64)
    assert card.input_size is not None
    return rng.standard_normal((length, card.input_size)).astype(np.float32)


def expected_answer(module: nn.Module, kind: Kind, card: ModelCard, sequence: np.ndarray) -> Any:
    """What predict answers by default for one sequence: every step, or the last step's row."""
    y = _torch_alone(module, kind, sequence)
    return y if card.head.value == "per_step" and y.ndim == 2 else (y[-1] if y.ndim == 2 else y)


@pytest.mark.parametrize("name", list(KINDS))
async def test_predict_over_mixed_lengths_equals_the_module_on_each_sequence_alone(
    app: Harness, served: tuple[Path, dict[str, nn.Module]], name: str
) -> None:
    kind, module = KINDS[name], served[1][name]
    card = await card_of(app.client, name)
    rng = np.random.default_rng(3)
    sequences = [inputs_for(card, rng, n) for n in LENGTHS]
    response = await app.client.post(
        f"/v1/models/{model_name(name)}/predict", json={"inputs": [s.tolist() for s in sequences]}
    )
    assert response.status_code == 200, response.text
    for got, sequence in zip(response.json()["outputs"], sequences, strict=True):
        want = expected_answer(module, kind, card, sequence)
        np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=1e-5)


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k.streamable])
async def test_streaming_in_chunks_equals_the_module_on_each_prefix(
    app: Harness, served: tuple[Path, dict[str, nn.Module]], name: str
) -> None:
    kind, module = KINDS[name], served[1][name]
    card = await card_of(app.client, name)
    sequence = inputs_for(card, np.random.default_rng(8), sum(CHUNKS))
    opened = await app.client.post(f"/v1/models/{model_name(name)}/sessions")
    assert opened.status_code == 201, opened.text
    session = opened.json()["session_id"]
    done = 0
    for size in CHUNKS:
        body = {"seq": done, "inputs": sequence[done : done + size].tolist()}
        answer = await app.client.post(f"/v1/sessions/{session}/steps", json=body)
        assert answer.status_code == 200, answer.text
        outputs = np.asarray(answer.json()["outputs"], np.float32)
        done += size
        prefix = _torch_alone(module, kind, sequence[:done])
        if card.head.value == "per_step":
            np.testing.assert_allclose(outputs, prefix[-size:], atol=1e-5)
        elif card.head.value == "last_step":  # an answer at every step; the last is the prefix's
            assert outputs.shape[0] == size
            np.testing.assert_allclose(
                outputs[-1], prefix[-1] if prefix.ndim == 2 else prefix, atol=1e-5
            )
        else:  # per_sequence: one answer, for the sequence so far
            assert outputs.shape[0] == 1
            np.testing.assert_allclose(outputs[0], prefix, atol=1e-5)
    state = (await app.client.get(f"/v1/sessions/{session}/state")).json()["state"]
    assert list(state) == [s.name for s in card.states]
    for spec in card.states:
        assert np.asarray(state[spec.name]).shape == (spec.rows, spec.width)


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if not k.streamable])
async def test_a_model_that_cannot_stream_refuses_a_session_saying_why(
    app: Harness, name: str
) -> None:
    card = await card_of(app.client, name)
    refused = await app.client.post(f"/v1/models/{model_name(name)}/sessions")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "not_streamable"
    assert card.not_streamable_reason is not None
    assert card.not_streamable_reason in error["message"]


async def test_every_state_of_a_multi_state_model_moves_between_sessions_and_over_v2(
    app: Harness, served: tuple[Path, dict[str, nn.Module]]
) -> None:
    name = "lstm_into_gru"
    kind, module = KINDS[name], served[1][name]
    card = await card_of(app.client, name)
    sequence = inputs_for(card, np.random.default_rng(4), 9)
    first = (await app.client.post(f"/v1/models/{model_name(name)}/sessions")).json()
    head = {"seq": 0, "inputs": sequence[:5].tolist()}
    await app.client.post(f"/v1/sessions/{first['session_id']}/steps", json=head)
    state = (await app.client.get(f"/v1/sessions/{first['session_id']}/state")).json()["state"]
    assert set(state) == {"encoder.h", "encoder.c", "decoder.h"}
    # a second session starts from the exported states and continues the same stream
    second = await app.client.post(
        f"/v1/models/{model_name(name)}/sessions", json={"initial_state": state}
    )
    tail = {"seq": 0, "inputs": sequence[5:].tolist()}
    continued = await app.client.post(
        f"/v1/sessions/{second.json()['session_id']}/steps", json=tail
    )
    whole = _torch_alone(module, kind, sequence)
    np.testing.assert_allclose(continued.json()["outputs"], whole[5:], atol=1e-5)
    # predict takes and answers every state by name too
    predicted = await app.client.post(
        f"/v1/models/{model_name(name)}/predict",
        json={"inputs": [sequence[5:].tolist()], "initial_state": [state], "return_state": True},
    )
    assert predicted.status_code == 200, predicted.text
    np.testing.assert_allclose(predicted.json()["outputs"][0], whole[5:], atol=1e-5)
    assert set(predicted.json()["state"][0]) == {"encoder.h", "encoder.c", "decoder.h"}
    # V2 names each state as an optional input and an output, batch-first
    meta = (await app.client.get(f"/v2/models/{model_name(name)}")).json()
    inputs = {i["name"]: i["shape"] for i in meta["inputs"]}
    outputs = {o["name"]: o["shape"] for o in meta["outputs"]}
    for spec in card.states:
        assert inputs[spec.input] == outputs[spec.output] == [-1, spec.rows, spec.width]


async def test_a_model_that_is_not_padding_safe_is_still_exact_batched_with_other_lengths(
    app: Harness, served: tuple[Path, dict[str, nn.Module]]
) -> None:
    name = "last_step_of_padded"
    kind, module = KINDS[name], served[1][name]
    card = await card_of(app.client, name)
    assert not card.padding_safe
    rng = np.random.default_rng(6)
    sequences = [inputs_for(card, rng, n) for n in (6, 2, 6, 4, 2)]
    response = await app.client.post(
        f"/v1/models/{model_name(name)}/predict", json={"inputs": [s.tolist() for s in sequences]}
    )
    for got, sequence in zip(response.json()["outputs"], sequences, strict=True):
        np.testing.assert_allclose(got, _torch_alone(module, kind, sequence), atol=1e-5)
    # one batch of five, run as one call per length (3 calls), answered as one request
    assert (
        app.metric(
            "rnnserve_batch_size_count",
            {"model": model_name(name), "version": "1", "kind": "predict"},
        )
        == 1
    )
