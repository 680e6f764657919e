"""The binary tensor extension on the wire, with bodies built by hand (no client library)."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from tests.support.models import RandomRepository
from tests.support.reference import assert_close, card_of, run_alone
from tests.support.v2 import binary_body, random_batch, random_states, split_binary_response

HEADER = "Inference-Header-Content-Length"


async def post_binary(
    client: httpx.AsyncClient, model: str, body: bytes, length: int
) -> httpx.Response:
    return await client.post(
        f"/v2/models/{model}/infer",
        content=body,
        headers={HEADER: str(length), "Content-Type": "application/octet-stream"},
    )


async def test_binary_inputs_and_outputs_round_trip_with_triton_framing(
    client: httpx.AsyncClient, random_repository: RandomRepository
) -> None:
    version_dir = random_repository.path / "lstm3" / "1"
    card = card_of(version_dir)
    rng = np.random.default_rng(2)
    x = random_batch(card, 2, 5, rng)
    states = random_states(card, 2, rng)
    lengths = np.array([5, 3], np.int32)
    body, length = binary_body(
        {"x": x, "seq_lens": lengths, **states}, parameters={"binary_data_output": True}
    )
    response = await post_binary(client, "lstm3", body, length)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers[HEADER])
    out = split_binary_response(response.content, header_length)
    assert list(out) == ["y", "hn", "cn"]
    for i, n in enumerate(lengths):
        expected = run_alone(version_dir, x[i, :n], {"h": states["h0"][i], "c": states["c0"][i]})
        assert_close(out["y"][i, :n], expected.y)
        assert_close(out["hn"][i], expected.h)
        assert_close(out["cn"][i], expected.c)
    assert not out["y"][1, 3:].any()


async def test_per_output_binary_flag_mixes_json_and_binary_outputs(
    client: httpx.AsyncClient,
) -> None:
    x = np.ones((1, 4, 2), np.float32)
    body, length = binary_body(
        {"x": x}, outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "hn"}]
    )
    response = await post_binary(client, "gru1", body, length)
    header_length = int(response.headers[HEADER])
    head = orjson.loads(response.content[:header_length])
    assert [o["name"] for o in head["outputs"]] == ["y", "hn"]
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 4 * 4 * 1}
    assert "data" in head["outputs"][1]
    assert len(response.content) == header_length + 16


async def test_json_response_when_no_output_is_binary(client: httpx.AsyncClient) -> None:
    body, length = binary_body({"x": np.ones((1, 2, 2), np.float32)})
    response = await post_binary(client, "gru1", body, length)
    assert response.headers["content-type"] == "application/json"
    assert HEADER.lower() not in response.headers
    assert [o["name"] for o in response.json()["outputs"]] == ["y", "hn"]


@pytest.mark.parametrize("offset", [-1, 1])
async def test_declared_size_off_by_one_answers_400(client: httpx.AsyncClient, offset: int) -> None:
    x = np.ones((1, 3, 2), np.float32)
    body, length = binary_body({"x": x}, size_offsets={"x": offset})
    response = await post_binary(client, "gru1", body, length)
    assert response.status_code == 400
    assert f"binary_data_size {x.nbytes + offset} does not match" in response.json()["error"]


@pytest.mark.parametrize("cut", [-1, 1])
async def test_body_one_byte_short_or_long_answers_400(client: httpx.AsyncClient, cut: int) -> None:
    body, length = binary_body({"x": np.ones((1, 3, 2), np.float32)})
    body = body[:-1] if cut < 0 else body + b"\0"
    response = await post_binary(client, "gru1", body, length)
    assert response.status_code == 400
    assert "binary" in response.json()["error"]


@pytest.mark.parametrize("shift", [-1, 1])
async def test_header_length_off_by_one_answers_400(client: httpx.AsyncClient, shift: int) -> None:
    body, length = binary_body({"x": np.ones((1, 3, 2), np.float32)})
    response = await post_binary(client, "gru1", body, length + shift)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
