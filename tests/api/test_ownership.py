"""Another key's session answers exactly as a session that never existed: same status, same
body (but for the id it names), on v1 REST, the WebSocket stream and V2 sequences. A foreign
key cannot tell whether a session exists."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from tests.support.app import Harness, WebSocketClosedError, cpu_settings, running_app
from tests.support.models import RandomRepository
from tests.support.v2 import json_tensor

STEP = [0.1, 0.2, 0.3, 0.4]  # one step of rnn-feat
A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
ROUTES = (
    ("GET", "", None),
    ("GET", "/state", None),
    ("POST", "/reset", None),
    ("POST", "/steps", {"seq": 0, "inputs": [STEP]}),
    ("DELETE", "", None),
)


@pytest.fixture
async def app(random_repository: RandomRepository) -> AsyncIterator[Harness]:
    settings = cpu_settings(random_repository.path, api_keys="key-a,key-b")
    async with running_app(settings) as harness:
        yield harness


def unnamed(text: str, session_id: str) -> str:
    return text.replace(session_id, "<id>")


@pytest.mark.parametrize(("method", "suffix", "body"), ROUTES)
async def test_a_foreign_session_answers_exactly_as_a_missing_one(
    app: Harness, method: str, suffix: str, body: Any
) -> None:
    mine = (await app.client.post("/v1/models/rnn-feat/sessions", headers=A)).json()["session_id"]
    never = secrets.token_urlsafe(16)
    foreign = await app.client.request(method, f"/v1/sessions/{mine}{suffix}", json=body, headers=B)
    missing = await app.client.request(
        method, f"/v1/sessions/{never}{suffix}", json=body, headers=B
    )
    assert foreign.status_code == missing.status_code == 404
    assert unnamed(foreign.text, mine) == unnamed(missing.text, never)
    # and the owner still has it, untouched
    described = await app.client.get(f"/v1/sessions/{mine}", headers=A)
    assert described.status_code == 200 and described.json()["seq"] == 0


async def first_frames(app: Harness, session_id: str) -> tuple[str, int]:
    async with app.ws(f"/v1/sessions/{session_id}/stream", B) as ws:
        frame = await ws.receive_text()
        with pytest.raises(WebSocketClosedError) as closed:
            await ws.receive_text()
    return unnamed(frame, session_id), closed.value.code


async def test_a_foreign_session_stream_is_refused_exactly_as_a_missing_one(app: Harness) -> None:
    mine = (await app.client.post("/v1/models/rnn-feat/sessions", headers=A)).json()["session_id"]
    foreign = await first_frames(app, mine)
    missing = await first_frames(app, secrets.token_urlsafe(16))
    assert foreign == missing
    assert foreign[1] == 4404


async def test_a_v2_sequence_id_is_scoped_by_key(app: Harness) -> None:
    x = np.full((1, 1, 4), 0.5, np.float32)

    async def infer(headers: dict[str, str], sequence_id: int, start: bool) -> Any:
        body = {
            "inputs": [json_tensor("x", x)],
            "parameters": {"sequence_id": sequence_id, "sequence_start": start},
        }
        return await app.client.post("/v2/models/rnn-feat/infer", json=body, headers=headers)

    assert (await infer(A, 42, True)).status_code == 200
    foreign = await infer(B, 42, False)  # A's sequence 42, continued by B
    missing = await infer(B, 43, False)  # a sequence nobody started
    assert foreign.status_code == missing.status_code
    assert foreign.text.replace("42", "<n>") == missing.text.replace("43", "<n>")
    assert (await infer(A, 42, False)).status_code == 200  # A's sequence is still there
