"""The real, unmodified `tritonclient.grpc` against a real `rnnserve serve` with gRPC on."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.models import RANDOM_MODELS, RandomRepository
from tests.support.reference import assert_close, card_of, run_alone
from tests.support.servers import DEMO_REPOSITORY, free_port
from tests.support.v2 import DATATYPES, input_name, random_batch

pytestmark = pytest.mark.e2e

STREAM_TIMEOUT_S = 30


def start(server_factory: Any, repository: Path, **env: str) -> tuple[Any, str]:
    port = free_port()
    server = server_factory(repository, env={"RNNSERVE_GRPC_PORT": str(port), **env})
    return server, f"127.0.0.1:{port}"


def infer_input(name: str, array: np.ndarray) -> tg.InferInput:
    tensor = tg.InferInput(name, list(array.shape), DATATYPES[array.dtype])
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_metadata_and_config_over_grpc(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server, address = start(server_factory, random_repository.path)
    client = tg.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("lstm-tok") and not client.is_model_ready("nope")
    assert "statistics" in client.get_server_metadata().extensions
    meta = client.get_model_metadata("lstm-tok", as_json=True)
    http_meta = httpx.get(f"{server.base_url}/v2/models/lstm-tok").json()
    assert [(i["name"], [int(d) for d in i["shape"]]) for i in meta["inputs"]] == [
        (i["name"], i["shape"]) for i in http_meta["inputs"]
    ]
    config = client.get_model_config("lstm-tok").config
    http_config = httpx.get(f"{server.base_url}/v2/models/lstm-tok/config").json()
    assert config.max_batch_size == http_config["max_batch_size"]
    assert [(i.name, list(i.dims), i.optional) for i in config.input] == [
        (i["name"], i["dims"], i["optional"]) for i in http_config["input"]
    ]
    assert config.HasField("sequence_batching")
    index = client.get_model_repository_index(as_json=True)["models"]
    assert sorted(m["name"] for m in index) == sorted(RANDOM_MODELS)


@pytest.mark.parametrize("name", ["rnn-feat", "lstm-tok", "gru-last"])
def test_infer_over_grpc_equals_onnxruntime(
    server_factory: Any, random_repository: RandomRepository, name: str
) -> None:
    _, address = start(server_factory, random_repository.path)
    client = tg.InferenceServerClient(address)
    version_dir = random_repository.path / name / "1"
    card = card_of(version_dir)
    x = random_batch(card, 3, 5, np.random.default_rng(7))
    result = client.infer(name, [infer_input(input_name(card), x)], request_id="r-1")
    assert result.get_response().id == "r-1"
    for i in range(3):
        expected = run_alone(version_dir, x[i])
        assert_close(result.as_numpy("y")[i], expected.y)
        assert_close(result.as_numpy("hn")[i], expected.h)
    stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) == 1


def test_typed_contents_answer_like_raw_contents(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    _, address = start(server_factory, random_repository.path)
    card = card_of(random_repository.path / "gru1" / "1")
    x = random_batch(card, 2, 3, np.random.default_rng(8))
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=list(x.shape))
    typed = pb.ModelInferRequest(model_name="gru1", inputs=[tensor])
    typed.inputs[0].contents.fp32_contents.extend(x.ravel().tolist())
    raw = pb.ModelInferRequest(model_name="gru1", inputs=[tensor], raw_input_contents=[x.tobytes()])
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = [stub.ModelInfer(message) for message in (typed, raw)]
        short = pb.ModelInferRequest(model_name="gru1", inputs=[tensor], raw_input_contents=[b"1"])
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(short)
    assert answers[0].raw_output_contents == answers[1].raw_output_contents
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw bytes do not match" in error.value.details()


def test_errors_map_to_status_codes(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    _, address = start(server_factory, random_repository.path)
    client = tg.InferenceServerClient(address)
    x = infer_input("x", np.zeros((1, 2, 2), np.float32))
    cases = [
        ("nope", [x], "StatusCode.NOT_FOUND"),
        ("gru1", [infer_input("x", np.zeros((1, 2, 5), np.float32))], "INVALID_ARGUMENT"),
    ]
    for model, inputs, status in cases:
        with pytest.raises(InferenceServerException) as error:
            client.infer(model, inputs)
        assert status in str(error.value.status())
    with pytest.raises(InferenceServerException) as error:
        client.unregister_system_shared_memory()
    assert "system shared memory extension is not supported" in error.value.message()


def test_api_keys_are_checked_from_metadata(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    _, address = start(server_factory, random_repository.path, RNNSERVE_API_KEYS="k1")
    client = tg.InferenceServerClient(address)
    assert client.is_server_live()
    x = infer_input("x", np.zeros((1, 2, 2), np.float32))
    with pytest.raises(InferenceServerException) as error:
        client.infer("gru1", [x])
    assert "UNAUTHENTICATED" in str(error.value.status())
    answered = client.infer("gru1", [x], headers={"authorization": "Bearer k1"})
    assert answered.as_numpy("y").shape == (1, 2, 1)


def test_interleaved_sequences_over_one_stream_equal_one_v1_predict_each(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server, address = start(server_factory, random_repository.path)
    name = "lstm3"
    card = card_of(random_repository.path / name / "1")
    rng = np.random.default_rng(9)
    lengths = [5, 1, 7, 3, 6, 2]
    signals = {100 + i: random_batch(card, 1, n, rng)[0] for i, n in enumerate(lengths)}
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = tg.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = 0
    for step in range(max(lengths)):
        for sequence_id, signal in signals.items():
            if step >= len(signal):
                continue
            client.async_stream_infer(
                name,
                [infer_input("x", signal[step][None, None])],
                request_id=f"{sequence_id}:{step}",
                sequence_id=sequence_id,
                sequence_start=step == 0,
                sequence_end=step == len(signal) - 1,
            )
            sent += 1
    streamed: dict[int, dict[int, np.ndarray]] = {s: {} for s in signals}
    for _ in range(sent):
        result, error = answers.get(timeout=STREAM_TIMEOUT_S)
        assert error is None, error
        sequence_id, step = result.get_response().id.split(":")
        streamed[int(sequence_id)][int(step)] = result.as_numpy("y")[0, 0]
    client.stop_stream()
    for sequence_id, signal in signals.items():
        predicted = httpx.post(
            f"{server.base_url}/v1/models/{name}/predict",
            json={"inputs": [signal.tolist()], "output": "all"},
        ).json()["outputs"][0]
        got = np.stack([streamed[sequence_id][t] for t in range(len(signal))])
        assert_close(got, np.asarray(predicted, np.float32))
    live = httpx.get(f"{server.base_url}/metrics").text
    assert "rnnserve_live_sessions 0.0" in live


def test_stream_errors_come_in_band_and_the_stream_goes_on(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    _, address = start(server_factory, random_repository.path)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = tg.InferenceServerClient(address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    x = infer_input("x", np.ones((1, 1, 2), np.float32))
    client.async_stream_infer("gru1", [x], request_id="lost", sequence_id=5)
    client.async_stream_infer("gru1", [x], request_id="ok", sequence_id=6, sequence_start=True)
    outcomes = [answers.get(timeout=STREAM_TIMEOUT_S) for _ in range(2)]
    client.stop_stream()
    errors = [error for _, error in outcomes if error is not None]
    results = [result for result, error in outcomes if error is None]
    assert len(errors) == 1 and "sequence 5 is unknown" in errors[0].message()
    assert [r.get_response().id for r in results] == ["ok"]


def test_classification_over_grpc_answers_labelled_top_k(server_factory: Any) -> None:
    _, address = start(server_factory, DEMO_REPOSITORY)
    client = tg.InferenceServerClient(address)
    version_dir = DEMO_REPOSITORY / "digits-rnn" / "1"
    card = card_of(version_dir)
    x = random_batch(card, 2, 8, np.random.default_rng(10))
    outputs = [tg.InferRequestedOutput("y", class_count=3)]
    top = client.infer("digits-rnn", [infer_input("x", x)], outputs=outputs).as_numpy("y")
    assert top.shape == (2, 3)
    for i in range(2):
        scores = run_alone(version_dir, x[i]).y[-1]
        ranked = [item.decode().split(":") for item in top[i]]
        expected = np.argsort(-scores, kind="stable")[:3]
        assert [(int(j), label) for _, j, label in ranked] == [
            (j, card["labels"][j]) for j in expected
        ]
