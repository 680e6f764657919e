"""Before any load: each server's answers against local onnxruntime, so a fast wrong server
cannot win; and which routes rnnserve offers yet, so a missing feature is an n/a row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
from websockets.exceptions import InvalidHandshake

from bench.loadgen.rawhttp import Answer, encode_request, fetch
from bench.loadgen.streams import step_body, ws_connect
from bench.model import (
    HIDDEN_SIZE,
    NUM_LAYERS,
    TOLERANCE,
    Array,
    Reference,
    json_floats,
    max_error,
    v1_predict_body,
    v2_binary_body,
    v2_json_body,
    v2_outputs,
)


class Outcome(StrEnum):
    """What a check found."""

    OK = "ok"
    UNAVAILABLE = "n/a"
    FAILED = "error"
    WRONG = "wrong answers"


@dataclass(frozen=True)
class Check:
    """The outcome and a one-line explanation (the max error when it passed)."""

    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        """True when the server may be put under load."""
        return self.outcome is Outcome.OK


ROUTES = {
    "sessions": (r"/v1/models/\{[^}]+\}/sessions", r"/v1/sessions/\{[^}]+\}/steps"),
    "v2": (r"/v2/models/\{[^}]+\}/infer",),
}


async def offered_routes(port: int) -> set[str]:
    """The features whose routes rnnserve's OpenAPI lists (`sessions`, `v2`)."""
    answer = await fetch(port, encode_request("GET", "/openapi.json"))
    paths = list(orjson.loads(answer.body).get("paths", {})) if answer.status == 200 else []
    return {
        feature
        for feature, patterns in ROUTES.items()
        if all(any(re.fullmatch(p, path) for path in paths) for p in patterns)
    }


def _compare(answer: Any, expected: Array) -> Check:
    error = max_error(answer, expected)
    if error <= TOLERANCE:
        return Check(Outcome.OK, f"max error {error:.1e}")
    return Check(Outcome.WRONG, f"max error {error:.3g} vs onnxruntime (tolerance {TOLERANCE})")


def _http_failure(what: str, answer: Answer) -> Check:
    return Check(Outcome.FAILED, f"{what} answered HTTP {answer.status}: {answer.body[:160]!r}")


async def check_v1_predict(port: int, model: str, reference: Reference, xs: list[Array]) -> Check:
    """Each x [1,T,32] through v1 predict equals onnxruntime's y."""
    worst = Check(Outcome.OK, "max error 0")
    for x in xs:
        raw = encode_request("POST", f"/v1/models/{model}/predict", v1_predict_body(x))
        answer = await fetch(port, raw)
        if answer.status != 200:
            return _http_failure("predict", answer)
        expected, _ = reference.run(x)
        check = _compare(orjson.loads(answer.body)["outputs"], expected)
        if not check.ok:
            return check
        worst = check
    return worst


async def check_v2(port: int, model: str, reference: Reference, x: Array, *, binary: bool) -> Check:
    """One V2 infer (JSON tensors, or the binary extension both ways) equals onnxruntime."""
    path = f"/v2/models/{model}/infer"
    if binary:
        framed = v2_binary_body(x)
        raw = encode_request(
            "POST",
            path,
            framed.body,
            content_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(framed.header_length)},
        )
    else:
        raw = encode_request("POST", path, v2_json_body(x))
    answer = await fetch(port, raw)
    if answer.status != 200:
        return _http_failure("V2 infer", answer)
    if binary and answer.header_length is None:
        return Check(Outcome.FAILED, "binary_data was asked for but the answer is not binary")
    expected, _ = reference.run(x)
    return _compare(v2_outputs(answer.body, answer.header_length)["y"], expected)


async def _open_session(port: int, model: str) -> str | Check:
    answer = await fetch(port, encode_request("POST", f"/v1/models/{model}/sessions", b"{}"))
    if answer.status not in (200, 201):
        return _http_failure("opening a session", answer)
    session_id: str = orjson.loads(answer.body)["session_id"]
    return session_id


async def check_rest_stream(port: int, model: str, reference: Reference, steps: Array) -> Check:
    """Single REST steps of one session equal onnxruntime over the whole sequence."""
    session_id = await _open_session(port, model)
    if isinstance(session_id, Check):
        return session_id
    outputs = []
    for seq, step in enumerate(steps):
        body = step_body(seq, orjson.dumps(json_floats(step.reshape(1, -1))))
        raw = encode_request("POST", f"/v1/sessions/{session_id}/steps", body)
        answer = await fetch(port, raw)
        if answer.status != 200:
            return _http_failure("a step", answer)
        outputs.extend(orjson.loads(answer.body)["outputs"])
    await fetch(port, encode_request("DELETE", f"/v1/sessions/{session_id}"))
    expected, _ = reference.run(steps[None])
    return _compare([outputs], expected)


async def check_ws_stream(port: int, model: str, reference: Reference, steps: Array) -> Check:
    """Single WebSocket steps of one session equal onnxruntime over the whole sequence."""
    session_id = await _open_session(port, model)
    if isinstance(session_id, Check):
        return session_id
    try:
        socket = await ws_connect(f"ws://127.0.0.1:{port}/v1/sessions/{session_id}/stream")
    except InvalidHandshake as exc:
        return Check(Outcome.UNAVAILABLE, f"WS /v1/sessions/{{id}}/stream not offered yet ({exc})")
    outputs = []
    try:
        for seq, step in enumerate(steps):
            await socket.send(
                step_body(seq, orjson.dumps(json_floats(step.reshape(1, -1)))), text=True
            )
            message = orjson.loads(await socket.recv(decode=False))
            if "outputs" not in message:
                return Check(Outcome.FAILED, f"WS step answered {str(message)[:160]}")
            outputs.extend(message["outputs"])
    finally:
        await socket.close()
    await fetch(port, encode_request("DELETE", f"/v1/sessions/{session_id}"))
    expected, _ = reference.run(steps[None])
    return _compare([outputs], expected)


async def check_triton_stream(port: int, model: str, reference: Reference, steps: Array) -> Check:
    """V2 steps carrying h0/hn batch-major through the client equal onnxruntime."""
    state = np.zeros((1, NUM_LAYERS, HIDDEN_SIZE), dtype=np.float32)
    outputs = []
    for step in steps:
        body = v2_json_body(step.reshape(1, 1, -1), state)
        answer = await fetch(port, encode_request("POST", f"/v2/models/{model}/infer", body))
        if answer.status != 200:
            return _http_failure("V2 step", answer)
        decoded = v2_outputs(answer.body, answer.header_length)
        state = decoded["hn"]
        outputs.append(decoded["y"][0, 0])
    expected, _ = reference.run(steps[None])
    return _compare([outputs], expected)
