"""The real `tritonclient.http` reads rnnserve's configuration, statistics, repository index and
classification answers (a real `rnnserve serve` process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from tests.support.models import RANDOM_MODELS, RandomRepository
from tests.support.reference import card_of, run_alone
from tests.support.servers import DEMO_REPOSITORY
from tests.support.v2 import random_batch

pytestmark = pytest.mark.e2e


def connect(server: Any) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.base_url.removeprefix("http://"))


def test_config_statistics_and_index_through_tritonclient(
    server_factory: Any, random_repository: RandomRepository
) -> None:
    client = connect(server_factory(random_repository.path))
    config = client.get_model_config("lstm3")
    assert config["max_batch_size"] > 0 and "sequence_batching" in config
    assert [(i["name"], i["optional"]) for i in config["input"]] == [
        ("x", False),
        ("seq_lens", True),
        ("h0", True),
        ("c0", True),
    ]
    card = card_of(random_repository.path / "lstm3" / "1")
    for batch in (2, 1):
        x = triton.InferInput("x", [batch, 3, card["input_size"]], "FP32")
        x.set_data_from_numpy(random_batch(card, batch, 3, np.random.default_rng(batch)))
        client.infer("lstm3", [x])
    stats = client.get_inference_statistics("lstm3")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("lstm3", "1")]
    assert stats[0]["inference_stats"]["success"]["count"] == 2
    assert stats[0]["inference_count"] == 3
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == set(RANDOM_MODELS)
    index = client.get_model_repository_index()
    assert sorted(m["name"] for m in index) == sorted(RANDOM_MODELS)
    assert {m["state"] for m in index} == {"READY"}


def test_classification_through_tritonclient_class_count(server_factory: Any) -> None:
    client = connect(server_factory(DEMO_REPOSITORY))
    version_dir = DEMO_REPOSITORY / "digits-rnn" / "1"
    card = card_of(version_dir)
    x_array = random_batch(card, 3, 8, np.random.default_rng(5))
    x = triton.InferInput("x", list(x_array.shape), "FP32")
    x.set_data_from_numpy(x_array)
    for binary in (True, False):
        outputs = [triton.InferRequestedOutput("y", binary_data=binary, class_count=2)]
        top = client.infer("digits-rnn", [x], outputs=outputs).as_numpy("y")
        assert top.shape == (3, 2)
        for i in range(3):
            scores = run_alone(version_dir, x_array[i]).y[-1]
            best = int(np.argmax(scores))
            item = top[i, 0]
            value, index, label = (item.decode() if isinstance(item, bytes) else item).split(":")
            assert (int(index), label) == (best, card["labels"][best])
            assert float(value) == pytest.approx(float(scores[best]), abs=1e-5)
