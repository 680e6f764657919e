"""Faults inside the model call: onnxruntime raising fails only its batch, logged once, and a
failed step leaves its session where it was (the same seq is then retried and applied).

The model stays a real exported graph: the wrapper below feeds the real onnxruntime session
an input of the wrong dtype when a step carries the marker value, so the error is onnxruntime's
own (INVALID_ARGUMENT), raised from inside the batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from service.app import create_app
from service.core.repository import Repository
from service.core.runtime import ModelRunner, RnnBatch, RnnResult
from service.edges.mux_wire import MuxStatus, encode_frame
from tests.support.app import Harness, cpu_settings
from tests.support.models import RandomRepository
from tests.support.mux import Step, open_slots, send_steps
from tests.support.reference import assert_close, run_alone

MARKER = 1234.5  # a step whose first feature is this makes onnxruntime raise
STEP = [0.1, 0.2, 0.3, 0.4]
POISON = [MARKER, 0.2, 0.3, 0.4]


class FaultyRunner:
    """A real ModelRunner whose onnxruntime call gets a float64 input on marked batches."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def run(self, batch: RnnBatch) -> RnnResult:
        self.calls += 1
        if batch.inputs.dtype == np.float32 and np.any(batch.inputs[..., 0] == MARKER):
            # the graph declares float32: onnxruntime itself refuses this (INVALID_ARGUMENT)
            batch = dataclasses.replace(batch, inputs=batch.inputs.astype(np.float64))
        return self._runner.run(batch)


def faulty_repository(path: Any) -> Repository:
    loaded = Repository.load(path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    entries = [
        dataclasses.replace(e, runner=FaultyRunner(e.runner)) if e.runner else e  # type: ignore[arg-type]
        for e in loaded.entries()
    ]
    return Repository(entries, root=path)


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    application = create_app(
        cpu_settings(random_repository.path),
        repository=faulty_repository(random_repository.path),
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://rnnserve") as client:
            yield Harness(application, client)


def batch_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_failing_batch_answers_500_with_the_request_id_and_logs_once(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = await app.client.post(
        "/v1/models/rnn-feat/predict",
        json={"inputs": [[STEP, POISON]]},
        headers={"X-Request-ID": "poisoned-1"},
    )
    assert answer.status_code == 500
    body = answer.json()["error"]
    assert body["type"] == "inference_failed"
    assert "poisoned-1" in body["message"] and answer.headers["x-request-id"] == "poisoned-1"
    assert "float" not in body["message"].lower()  # onnxruntime's text stays in the log
    (record,) = batch_failures(caplog)
    assert record.exc_info is not None and record.request_ids == ["poisoned-1"]  # type: ignore[attr-defined]
    assert (
        app.metric(
            "rnnserve_model_requests_total",
            {"model": "rnn-feat", "version": "1", "kind": "predict", "outcome": "failed"},
        )
        == 1
    )

    healthy = await app.client.post("/v1/models/rnn-feat/predict", json={"inputs": [[STEP]]})
    assert healthy.status_code == 200  # the next batch runs


async def test_a_failed_step_does_not_advance_and_its_seq_is_retried(
    app: Harness, random_repository: RandomRepository
) -> None:
    session_id = (await app.client.post("/v1/models/rnn-feat/sessions")).json()["session_id"]
    steps = f"/v1/sessions/{session_id}/steps"
    assert (await app.client.post(steps, json={"seq": 0, "inputs": [STEP]})).status_code == 200
    state_before = (await app.client.get(f"/v1/sessions/{session_id}/state")).content

    failed = await app.client.post(steps, json={"seq": 1, "inputs": [POISON]})
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "inference_failed"
    assert (await app.client.get(f"/v1/sessions/{session_id}")).json()["seq"] == 1
    assert (await app.client.get(f"/v1/sessions/{session_id}/state")).content == state_before

    retried = await app.client.post(steps, json={"seq": 1, "inputs": [STEP, STEP]})
    assert retried.status_code == 200 and retried.json()["seq"] == 3
    expected = run_alone(random_repository.path / "rnn-feat" / "1", [STEP] * 3).y
    assert_close(retried.json()["outputs"], expected[1:])


async def test_a_failed_step_over_a_websocket_is_an_in_band_error_and_the_stream_goes_on(
    app: Harness,
) -> None:
    async with app.ws("/v1/models/rnn-feat/stream") as ws:
        hello = await ws.receive_json()
        await ws.send_json({"seq": 0, "inputs": [POISON]})
        error = await ws.receive_json()
        assert error["error"]["type"] == "inference_failed"
        await ws.send_json({"seq": 0, "inputs": [STEP]})
        answer = await ws.receive_json()
        assert (answer["session_id"], answer["seq"]) == (hello["session_id"], 1)


async def test_only_the_failing_batch_fails_under_concurrent_load(app: Harness) -> None:
    import asyncio

    async def predict(step: list[float]) -> int:
        body = orjson.dumps({"inputs": [[step] * 3]})
        headers = {"content-type": "application/json"}
        answer = await app.client.post("/v1/models/rnn-feat/predict", content=body, headers=headers)
        return answer.status_code

    statuses = await asyncio.gather(*(predict(STEP) for _ in range(20)), predict(POISON))
    assert statuses[-1] == 500
    # the healthy requests batched with the poisoned one fail with it, no other does
    failed = app.metric(
        "rnnserve_model_requests_total",
        {"model": "rnn-feat", "version": "1", "kind": "predict", "outcome": "failed"},
    )
    assert statuses.count(500) == failed >= 1
    assert statuses.count(200) == 21 - failed
    assert (await predict(STEP)) == 200


async def test_a_mux_frame_whose_batch_fails_is_refused_whole_and_can_be_resent(
    app: Harness,
) -> None:
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, [0, 1])
        await ws.send_bytes(
            encode_frame(
                5,
                [0, 1],
                [0, 0],
                [np.array([STEP], np.float32), np.array([POISON], np.float32)],
                tokens=False,
            )
        )
        error = await ws.receive_json()
        assert (error["op"], error["type"], error["request_id"]) == ("error", "inference_failed", 5)
        # nothing moved: the same seqs apply, and the stream goes on
        answers = await send_steps(ws, [Step(0, 0, [STEP]), Step(1, 0, [STEP])], output_size=3)
    assert [(a.status, a.seq) for a in answers] == [(MuxStatus.APPLIED, 1)] * 2
