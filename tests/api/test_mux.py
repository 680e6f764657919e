"""The mux stream in process: many sessions per RNM1 frame, exactly once, one store with REST."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest

from service.edges.mux_wire import MAGIC, MuxStatus, encode_frame
from tests.support.app import Harness, WebSocketClosedError, cpu_settings, running_app
from tests.support.models import RandomRepository
from tests.support.mux import Step, control, open_slots, send_steps
from tests.support.reference import assert_close, card_of, random_steps, run_alone

RNN_OUT = 3  # rnn-feat: 4 features in, 3 outputs per step


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    # a small step batch so that a frame of many sessions runs as several batches
    settings = cpu_settings(random_repository.path, max_step_batch_size=16, max_steps=50)
    async with running_app(settings) as harness:
        yield harness


def steps_of(repo: RandomRepository, name: str, length: int, seed: int) -> list[list[float]]:
    card = card_of(repo.path / name / "1")
    return random_steps(card, length, np.random.default_rng(seed))


async def test_a_frame_of_many_sessions_equals_each_session_run_alone(
    app: Harness, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "rnn-feat" / "1"
    inputs = {
        slot: steps_of(random_repository, "rnn-feat", 1 + slot % 4, slot) for slot in range(40)
    }
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, range(40))
        frame = [Step(slot, 0, inputs[slot]) for slot in range(40)]
        answers = await send_steps(ws, frame, output_size=RNN_OUT)
    for slot, answer in enumerate(answers):
        assert (answer.status, answer.seq) == (MuxStatus.APPLIED, len(inputs[slot]))
        assert_close(answer.outputs, run_alone(version_dir, inputs[slot]).y)


async def test_mux_steps_equal_rest_steps_and_a_session_moves_between_them(
    app: Harness, random_repository: RandomRepository
) -> None:
    chunks = [steps_of(random_repository, "rnn-feat", n, 10 + n) for n in (2, 3, 1)]
    rest = await app.client.post("/v1/models/rnn-feat/sessions")
    rest_id = rest.json()["session_id"]
    rest_outputs = []
    for seq, chunk in zip((0, 2, 5), chunks, strict=True):
        answer = await app.client.post(
            f"/v1/sessions/{rest_id}/steps", json={"seq": seq, "inputs": chunk}
        )
        rest_outputs.append(answer.json()["outputs"])
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        session_id = (await open_slots(ws, [5]))[5]
        (first,) = await send_steps(ws, [Step(5, 0, chunks[0])], output_size=RNN_OUT)
    # the same session continues over REST, then on a new mux connection
    middle = await app.client.post(
        f"/v1/sessions/{session_id}/steps", json={"seq": 2, "inputs": chunks[1]}
    )
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        attached = await control(ws, op="attach", slot=9, session_id=session_id)
        assert (attached["op"], attached["seq"]) == ("attached", 5)
        (last,) = await send_steps(ws, [Step(9, 5, chunks[2])], output_size=RNN_OUT)
    assert last.seq == 6
    for got, want in zip(
        (first.outputs, middle.json()["outputs"], last.outputs), rest_outputs, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


async def test_a_resent_frame_is_answered_again_and_not_applied_twice(
    app: Harness, random_repository: RandomRepository
) -> None:
    a, b = (
        steps_of(random_repository, "rnn-feat", 2, 1),
        steps_of(random_repository, "rnn-feat", 3, 2),
    )
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, [0, 1])
        frame = [Step(0, 0, a), Step(1, 0, b)]
        first = await send_steps(ws, frame, output_size=RNN_OUT)
        again = await send_steps(ws, frame, output_size=RNN_OUT)
        assert [r.status for r in again] == [MuxStatus.REPLAYED, MuxStatus.REPLAYED]
        assert [r.seq for r in again] == [2, 3]
        for one, two in zip(first, again, strict=True):
            np.testing.assert_array_equal(one.outputs, two.outputs)
        # other inputs under an applied seq, a gap, and an old seq: conflicts naming the next
        conflicts = await send_steps(
            ws, [Step(0, 0, b), Step(1, 9, a)], output_size=RNN_OUT, request_id=8
        )
    assert [(r.status, r.seq, r.outputs) for r in conflicts] == [
        (MuxStatus.CONFLICT, 2, None),
        (MuxStatus.CONFLICT, 3, None),
    ]
    assert app.metric("rnnserve_mux_records_total", {"status": "replayed"}) == 2
    assert app.metric("rnnserve_mux_records_total", {"status": "conflict"}) == 2


async def test_one_slot_twice_in_a_frame_applies_its_records_in_order(
    app: Harness, random_repository: RandomRepository
) -> None:
    steps = steps_of(random_repository, "rnn-feat", 5, 3)
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, [0, 1])
        answers = await send_steps(
            ws,
            [Step(0, 0, steps[:2]), Step(1, 0, steps), Step(0, 2, steps[2:])],
            output_size=RNN_OUT,
        )
    assert [(r.status, r.seq) for r in answers] == [
        (MuxStatus.APPLIED, 2),
        (MuxStatus.APPLIED, 5),
        (MuxStatus.APPLIED, 5),
    ]
    joined = np.concatenate([answers[0].outputs, answers[2].outputs])
    np.testing.assert_allclose(joined, answers[1].outputs, rtol=1e-6, atol=1e-7)


async def test_bad_records_fail_alone_with_their_status(
    app: Harness, random_repository: RandomRepository
) -> None:
    good = steps_of(random_repository, "rnn-feat", 2, 4)
    nan = [[float("nan")] * 4]
    too_long = steps_of(random_repository, "rnn-feat", 51, 5)  # max_steps is 50 here
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, range(4))
        answers = await send_steps(
            ws,
            [
                Step(0, 0, good),
                Step(1, 0, np.zeros((0, 4), np.float32)),
                Step(2, 0, nan),
                Step(3, 0, too_long),
                Step(77, 0, good),  # never bound
            ],
            output_size=RNN_OUT,
        )
        statuses = [r.status for r in answers]
        assert statuses == [
            MuxStatus.APPLIED,
            MuxStatus.INVALID,
            MuxStatus.INVALID,
            MuxStatus.OVER_LIMIT,
            MuxStatus.GONE,
        ]
        # the failed sessions did not move: seq 0 still applies
        retried = await send_steps(ws, [Step(1, 0, good), Step(2, 0, good)], output_size=RNN_OUT)
    assert [(r.status, r.seq) for r in retried] == [(MuxStatus.APPLIED, 2)] * 2


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"RNM", "header alone"),
        (b"XXXX" + struct.pack("<II", 42, 1), "starts with"),
        (MAGIC + struct.pack("<II", 42, 0), "at least one record"),
        (MAGIC + struct.pack("<II", 42, 2) + b"\0" * 8, "before the inputs"),
        (
            encode_frame(42, [0], [0], [np.zeros((2, 4), np.float32)], tokens=False)[:-4],
            "should have",
        ),
        (
            encode_frame(42, [0], [0], [np.zeros((1, 4), np.float32)], tokens=False) + b"\0",
            "should have",
        ),
    ],
)
async def test_a_malformed_frame_gets_an_error_naming_its_request_and_the_stream_goes_on(
    app: Harness, random_repository: RandomRepository, frame: bytes, reason: str
) -> None:
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, [0])
        await ws.send_bytes(frame)
        error = await ws.receive_json()
        assert (error["op"], error["type"]) == ("error", "malformed_frame")
        assert reason in error["message"]
        assert error.get("request_id") == (None if len(frame) < 8 else 42)
        step = steps_of(random_repository, "rnn-feat", 1, 6)
        (answer,) = await send_steps(ws, [Step(0, 0, step)], output_size=RNN_OUT)
    assert answer.status == MuxStatus.APPLIED


async def test_a_frame_over_the_record_limit_is_refused_whole(app: Harness) -> None:
    app.engine.settings.mux_max_records = 2
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        frame = encode_frame(
            5, [0, 1, 2], [0] * 3, [np.zeros((1, 4), np.float32)] * 3, tokens=False
        )
        await ws.send_bytes(frame)
        error = await ws.receive_json()
    assert (error["type"], error["request_id"]) == ("limit_exceeded", 5)


async def test_token_models_take_int64_ids(
    app: Harness, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "lstm-tok" / "1"
    inputs = [steps_of(random_repository, "lstm-tok", n, 20 + n) for n in (1, 4, 2)]
    async with app.ws("/v1/models/lstm-tok/mux") as ws:
        opened = await control(ws, op="open", slot=3)
        assert (opened["output_size"], opened["rows"]) == (11, "per_step")
        await open_slots(ws, [4, 5])
        answers = await send_steps(
            ws,
            [Step(3 + i, 0, ids) for i, ids in enumerate(inputs)],
            output_size=11,
            tokens=True,
        )
        out_of_vocab = await send_steps(ws, [Step(3, 1, [11])], output_size=11, tokens=True)
    for answer, ids in zip(answers, inputs, strict=True):
        assert answer.status == MuxStatus.APPLIED
        assert_close(answer.outputs, run_alone(version_dir, ids).y)
    assert out_of_vocab[0].status == MuxStatus.INVALID


async def test_control_messages_bind_detach_and_delete_sessions(
    app: Harness, random_repository: RandomRepository
) -> None:
    other = (await app.client.post("/v1/models/gru-last/sessions")).json()["session_id"]
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        session_id = (await open_slots(ws, [1]))[1]
        refusals = [
            await control(ws, op="open", slot=1),
            await control(ws, op="attach", slot=2, session_id="no-such-session"),
            await control(ws, op="attach", slot=2, session_id=other),
            await control(ws, op="attach", slot=2, session_id=session_id),
            await control(ws, op="detach", slot=3),
            await control(ws, op="fly", slot=3),
            await control(ws, op="open", slot=-1),
            await control(ws, op="open", slot=4, initial_state={"h": [[1.0]]}),
        ]
        assert [(r["op"], r["type"]) for r in refusals] == [
            ("error", "invalid_input"),
            ("error", "session_not_found"),
            ("error", "invalid_input"),
            ("error", "invalid_input"),
            ("error", "invalid_input"),
            ("error", "invalid_input"),
            ("error", "invalid_input"),
            ("error", "invalid_input"),
        ]
        assert refusals[0]["slot"] == 1
        assert await control(ws, op="detach", slot=1) == {"op": "detached", "slot": 1}
        (gone,) = await send_steps(ws, [Step(1, 0, [[0.0] * 4])], output_size=RNN_OUT)
        assert gone.status == MuxStatus.GONE
        assert (await control(ws, op="attach", slot=1, session_id=session_id))["seq"] == 0
        deleted = await control(ws, op="delete", slot=1)
        assert deleted == {"op": "deleted", "slot": 1, "session_id": session_id}
        await ws.send_text("not json")
        assert (await ws.receive_json())["type"] == "invalid_input"
    assert (await app.client.get(f"/v1/sessions/{session_id}")).status_code == 404


async def test_an_initial_state_opens_a_session_there(
    app: Harness, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "gru1" / "1"
    state = {"h": [[0.5, -0.25, 0.125, 1.0]]}
    steps = steps_of(random_repository, "gru1", 3, 7)
    async with app.ws("/v1/models/gru1/mux") as ws:
        opened = await control(ws, op="open", slot=0, initial_state=state)
        assert opened["op"] == "opened"
        (answer,) = await send_steps(ws, [Step(0, 0, steps)], output_size=1)
    assert_close(answer.outputs, run_alone(version_dir, steps, state).y)


async def test_a_model_that_cannot_stream_refuses_the_socket(app: Harness) -> None:
    async with app.ws("/v1/models/bi-rnn/mux") as ws:
        refusal = orjson.loads(await ws.receive_text())
        assert (refusal["op"], refusal["type"]) == ("error", "not_streamable")
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_text()
    assert closed.value.code == 4400


async def test_a_session_of_another_key_is_not_found(random_repository: RandomRepository) -> None:
    settings = cpu_settings(random_repository.path, api_keys="alpha,beta")
    async with running_app(settings) as app:
        alpha, beta = {"X-API-Key": "alpha"}, {"X-API-Key": "beta"}
        async with app.ws("/v1/models/rnn-feat/mux", alpha) as ws:
            session_id = (await open_slots(ws, [0]))[0]
        async with app.ws("/v1/models/rnn-feat/mux", beta) as ws:
            answer = await control(ws, op="attach", slot=0, session_id=session_id)
        assert answer["type"] == "session_not_found"


async def test_a_frame_of_single_steps_mixes_every_outcome_record_by_record(
    app: Harness, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "rnn-feat" / "1"
    first, second = steps_of(random_repository, "rnn-feat", 2, 8)
    async with app.ws("/v1/models/rnn-feat/mux") as ws:
        await open_slots(ws, range(5))
        warm = await send_steps(ws, [Step(s, 0, [first]) for s in range(5)], output_size=RNN_OUT)
        assert {r.status for r in warm} == {MuxStatus.APPLIED}
        answers = await send_steps(
            ws,
            [
                Step(0, 1, [second]),  # applied
                Step(1, 0, [first]),  # the last request again: replayed
                Step(2, 0, [second]),  # other inputs under an applied seq: conflict
                Step(3, 1, [[float("inf")] * 4]),  # invalid
                Step(9, 0, [first]),  # not bound
                Step(4, 1, [second]),  # applied
            ],
            output_size=RNN_OUT,
            request_id=9,
        )
    assert [(r.status, r.seq) for r in answers] == [
        (MuxStatus.APPLIED, 2),
        (MuxStatus.REPLAYED, 1),
        (MuxStatus.CONFLICT, 1),
        (MuxStatus.INVALID, 1),
        (MuxStatus.GONE, 0),
        (MuxStatus.APPLIED, 2),
    ]
    whole = run_alone(version_dir, [first, second]).y
    assert_close(answers[0].outputs, whole[1:])
    assert_close(answers[5].outputs, whole[1:])
    np.testing.assert_array_equal(answers[1].outputs, warm[1].outputs)
