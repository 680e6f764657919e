"""Every kind of bad predict input gets its own clear error and status, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import app_client, cpu_settings
from tests.support.models import RandomRepository

FEATURES = "/v1/models/rnn-feat/predict"  # 4 features, 2 layers, hidden 8
TOKENS = "/v1/models/lstm-tok/predict"  # vocab 11, hidden 6
GOOD_STEP = [0.1, 0.2, 0.3, 0.4]

CASES: list[tuple[str, str, Any, int, str]] = [
    ("malformed json", FEATURES, b"{not json", 400, "invalid_input"),
    ("body not an object", FEATURES, [1, 2], 400, "invalid_input"),
    ("no inputs", FEATURES, {}, 400, "invalid_input"),
    ("inputs not a list", FEATURES, {"inputs": "abc"}, 400, "invalid_input"),
    ("empty batch", FEATURES, {"inputs": []}, 400, "invalid_input"),
    ("empty sequence", FEATURES, {"inputs": [[]]}, 400, "invalid_input"),
    ("wrong feature count", FEATURES, {"inputs": [[[0.1, 0.2]]]}, 400, "invalid_input"),
    ("ragged steps", FEATURES, {"inputs": [[GOOD_STEP, [0.1, 0.2]]]}, 400, "invalid_input"),
    ("strings as features", FEATURES, {"inputs": [[["a", "b", "c", "d"]]]}, 400, "invalid_input"),
    ("null feature", FEATURES, {"inputs": [[[None, 1, 2, 3]]]}, 400, "invalid_input"),
    ("token ids for a float model", FEATURES, {"inputs": [[1, 2, 3]]}, 400, "invalid_input"),
    ("floats for a token model", TOKENS, {"inputs": [[[0.5, 1.0]]]}, 400, "invalid_input"),
    ("fractional token", TOKENS, {"inputs": [[1.5, 2]]}, 400, "invalid_input"),
    ("token out of vocab", TOKENS, {"inputs": [[1, 11]]}, 400, "invalid_input"),
    ("negative token", TOKENS, {"inputs": [[-1]]}, 400, "invalid_input"),
    ("infinite value", FEATURES, b'{"inputs": [[[1e400, 0, 0, 0]]]}', 400, "invalid_input"),
    ("over float32 range", FEATURES, {"inputs": [[[1e39, 0, 0, 0]]]}, 400, "invalid_input"),
    (
        "state of wrong shape",
        FEATURES,
        {"inputs": [[GOOD_STEP]], "initial_state": [{"h": [[0.0] * 8]}]},
        400,
        "invalid_input",
    ),
    (
        "state count mismatch",
        FEATURES,
        {"inputs": [[GOOD_STEP]], "initial_state": []},
        400,
        "invalid_input",
    ),
    (
        "lstm state without c",
        TOKENS,
        {"inputs": [[1]], "initial_state": [{"h": [[0.0] * 6]}]},
        400,
        "invalid_input",
    ),
    (
        "nan state",
        FEATURES,
        b'{"inputs": [[[0,0,0,0]]], "initial_state": [{"h": [[1e999,0,0,0,0,0,0,0],'
        b"[0,0,0,0,0,0,0,0]]}]}",
        400,
        "invalid_input",
    ),
    (
        "bad output mode",
        FEATURES,
        {"inputs": [[GOOD_STEP]], "output": "middle"},
        400,
        "invalid_input",
    ),
    (
        "return_state not bool",
        FEATURES,
        {"inputs": [[GOOD_STEP]], "return_state": "yes"},
        400,
        "invalid_input",
    ),
    ("unknown field", FEATURES, {"inputs": [[GOOD_STEP]], "temperature": 2}, 400, "invalid_input"),
    ("too many sequences", FEATURES, {"inputs": [[GOOD_STEP]] * 5}, 413, "limit_exceeded"),
    ("too many steps", FEATURES, {"inputs": [[GOOD_STEP] * 11]}, 413, "limit_exceeded"),
    ("body too large", FEATURES, b'{"inputs": [[' + b" " * 5000 + b"]]}", 413, "limit_exceeded"),
    ("unknown model", "/v1/models/nope/predict", {"inputs": [[GOOD_STEP]]}, 404, "model_not_found"),
    (
        "bad version query",
        FEATURES + "?version=zero",
        {"inputs": [[GOOD_STEP]]},
        400,
        "invalid_input",
    ),
]


@pytest.fixture
async def limited_client(random_repository: RandomRepository) -> Any:
    settings = cpu_settings(
        random_repository.path, max_sequences=4, max_steps=10, max_body_bytes=4096
    )
    async for client in app_client(settings):
        yield client


@pytest.mark.parametrize(
    ("case", "path", "body", "status", "error_type"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_input_gets_a_clear_error_and_the_server_keeps_answering(
    limited_client: httpx.AsyncClient, case: str, path: str, body: Any, status: int, error_type: str
) -> None:
    if isinstance(body, bytes):
        response = await limited_client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await limited_client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    healthy = await limited_client.post(FEATURES, json={"inputs": [[GOOD_STEP]]})
    assert healthy.status_code == 200


async def test_unknown_route_answers_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
