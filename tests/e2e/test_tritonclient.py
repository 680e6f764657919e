"""The real `tritonclient.http` against a real `rnnserve serve` process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support.models import RANDOM_MODELS, RandomRepository
from tests.support.reference import assert_close, card_of, run_alone
from tests.support.servers import DEMO_REPOSITORY
from tests.support.v2 import DATATYPES, input_name, random_batch

pytestmark = pytest.mark.e2e


def connect(server: Any) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.base_url.removeprefix("http://"))


def infer_input(name: str, array: np.ndarray, *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), DATATYPES[array.dtype])
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def demo_version_dirs() -> list[Path]:
    return sorted(p for p in DEMO_REPOSITORY.glob("*/*") if (p / "model.json").is_file())


def test_metadata_and_readiness(server_factory: Any, random_repository: RandomRepository) -> None:
    client = connect(server_factory(random_repository.path))
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("lstm-tok")
    assert meta["inputs"][0] == {"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}
    assert [o["name"] for o in meta["outputs"]] == ["y", "hn", "cn"]
    assert client.is_model_ready("lstm-tok") and client.is_model_ready("lstm-tok", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("lstm-tok", "2")


def check_json_and_binary_infer(client: triton.InferenceServerClient, version_dir: Path) -> None:
    card = card_of(version_dir)
    x = random_batch(card, 2, 9, np.random.default_rng(4))
    for binary in (True, False):
        inputs = [infer_input(input_name(card), x, binary=binary)]
        # no requested outputs: the client asks for every output in binary (its default)
        outputs = None if binary else [triton.InferRequestedOutput("y", binary_data=False)]
        result = client.infer(
            card["name"], inputs, outputs=outputs, model_version=str(card["version"])
        )
        y = result.as_numpy("y")
        assert y.shape == (2, 9, card["output_size"])
        for i in range(2):
            expected = run_alone(version_dir, x[i])
            assert_close(y[i], expected.y)
            if binary:
                assert_close(result.as_numpy("hn")[i], expected.h)
        if not binary:
            assert result.as_numpy("hn") is None


def test_json_and_binary_infer_for_every_model(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    client = connect(server_factory(random_repository.path))
    for name in sorted(RANDOM_MODELS):
        check_json_and_binary_infer(client, random_repository.path / name / "1")


def test_json_and_binary_infer_for_every_demo_model(server_factory: Any) -> None:
    demo = demo_version_dirs()
    assert demo, "models/ holds the demo models"
    client = connect(server_factory(DEMO_REPOSITORY))
    for version_dir in demo:
        check_json_and_binary_infer(client, version_dir)


def test_gzip_and_deflate_requests_are_inflated_and_answers_stay_plain(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    client = connect(server_factory(random_repository.path))
    version_dir = random_repository.path / "gru1" / "1"
    x = random_batch(card_of(version_dir), 1, 30, np.random.default_rng(6))
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            "gru1",
            [infer_input("x", x, binary=True)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert_close(result.as_numpy("y")[0], run_alone(version_dir, x[0]).y)


def test_errors_surface_as_inference_server_exceptions_with_the_reason(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    client = connect(server_factory(random_repository.path))
    x = np.zeros((1, 5, 4), np.float32)
    wrong_type = infer_input("x", x.astype(np.int64), binary=True)
    mismatch = infer_input("x", x, binary=False)
    mismatch.set_shape([1, 6, 4])  # the data still holds 20 values
    cases = [
        ("rnn-feat", wrong_type, "400", "datatype 'INT64'; the model takes FP32"),
        ("rnn-feat", mismatch, "400", "needs 24 values, data has 20"),
        ("nope", infer_input("x", x, binary=True), "404", "model 'nope' not found"),
    ]
    for model, tensor, status, message in cases:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [tensor])
        assert caught.value.status() == status
        assert message in caught.value.message()


def v1_predict(server: Any, model: str, sequence: np.ndarray) -> np.ndarray:
    response = httpx.post(
        f"{server.base_url}/v1/models/{model}/predict",
        json={"inputs": [sequence.tolist()], "output": "all"},
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"][0], np.float32)


@pytest.mark.parametrize("sequence_id", [1001, "a4f1-stream"])
def test_single_step_sequence_equals_one_v1_predict_over_the_whole_sequence(
    server_factory: Any, random_repository: RandomRepository, sequence_id: int | str
) -> None:
    server = server_factory(random_repository.path)
    client = connect(server)
    for name in ("rnn-feat", "lstm-tok", "gru-last"):
        card = card_of(random_repository.path / name / "1")
        x = random_batch(card, 1, 12, np.random.default_rng(8))
        ys = []
        for t in range(12):
            result = client.infer(
                name,
                [infer_input(input_name(card), x[:, t : t + 1], binary=True)],
                sequence_id=sequence_id,
                sequence_start=t == 0,
                sequence_end=t == 11,
            )
            ys.append(result.as_numpy("y")[0])
        assert_close(np.concatenate(ys), v1_predict(server, name, x[0]))


def test_many_interleaved_sequences_run_concurrently(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    server = server_factory(random_repository.path)
    client = triton.InferenceServerClient(server.base_url.removeprefix("http://"), concurrency=16)
    version_dir = random_repository.path / "lstm3" / "1"
    x = random_batch(card_of(version_dir), 32, 6, np.random.default_rng(12))
    ys: list[list[np.ndarray]] = [[] for _ in range(32)]
    for t in range(6):
        pending = [
            client.async_infer(
                "lstm3",
                [infer_input("x", x[i : i + 1, t : t + 1], binary=True)],
                sequence_id=100 + i,
                sequence_start=t == 0,
                sequence_end=t == 5,
            )
            for i in range(32)
        ]
        for i, request in enumerate(pending):
            ys[i].append(request.get_result().as_numpy("y")[0])
    for i in range(32):
        assert_close(np.concatenate(ys[i]), run_alone(version_dir, x[i]).y)
    client.close()


def test_unknown_sequence_surfaces_as_an_exception_naming_it(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    client = connect(server_factory(random_repository.path))
    tensor = infer_input("x", np.zeros((1, 1, 4), np.float32), binary=True)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("rnn-feat", [tensor], sequence_id=77)
    assert caught.value.status() == "400"
    assert "sequence 77 is unknown or has ended" in caught.value.message()
