"""Client-side streams for the real-server Redis tests: steps, answers, and what to expect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support.reference import assert_close, card_of, random_steps, run_alone

MODELS = ("lstm-tok", "gru1", "rnn-relu3")  # tokens and features; with and without a cell state


@dataclass
class Stream:
    """One client's session: its steps, the answers it got, the seq it believes is next."""

    model: str
    version_dir: Path
    steps: list[Any]
    session_id: str = ""
    outputs: list[Any] = field(default_factory=list)
    seq: int = 0
    retries: int = 0

    @property
    def done(self) -> bool:
        """Every step acknowledged."""
        return self.seq >= len(self.steps)

    def body(self, size: int = 1) -> dict[str, Any]:
        """The request for the next `size` steps."""
        return {"seq": self.seq, "inputs": self.steps[self.seq : self.seq + size]}

    def acknowledge(self, answer: dict[str, Any]) -> None:
        """Record an answer to `body()`."""
        assert answer["session_id"] == self.session_id
        self.outputs += answer["outputs"]
        self.seq = answer["seq"]

    def check(self) -> None:
        """The acknowledged outputs equal one uninterrupted run over the same steps."""
        if self.seq == 0:  # a loaded machine can stop a server before a stream's first step
            assert self.outputs == []
            return
        expected = run_alone(self.version_dir, self.steps[: self.seq])
        assert_close(self.outputs, expected.y)

    def check_state(self, state: dict[str, Any]) -> None:
        """The stored state equals the state after the acknowledged steps."""
        expected = run_alone(self.version_dir, self.steps[: self.seq])
        assert_close(state["h"], expected.h)
        if expected.c is not None:
            assert_close(state["c"], expected.c)


def make_streams(repository: Path, count: int, length: int, *, seed: int = 0) -> list[Stream]:
    """`count` streams of `length` random steps, over MODELS in turn."""
    rng = np.random.default_rng(seed)
    streams = []
    for i in range(count):
        model = MODELS[i % len(MODELS)]
        version_dir = repository / model / "1"
        streams.append(Stream(model, version_dir, random_steps(card_of(version_dir), length, rng)))
    return streams


async def open_stream(client: httpx.AsyncClient, stream: Stream) -> None:
    """Open the stream's session."""
    opened = await client.post(f"/v1/models/{stream.model}/sessions")
    assert opened.status_code == 201, opened.text
    stream.session_id = opened.json()["session_id"]


async def patiently(
    send: Callable[[], Awaitable[httpx.Response]], within_s: float = 30.0
) -> httpx.Response:
    """Send until the answer is not a 503 (what a client does with Retry-After); a loaded
    machine can starve Redis past the store timeout. `within_s` guards against hanging."""
    deadline = time.monotonic() + within_s
    while True:
        answer = await send()
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


async def stored_session(client: httpx.AsyncClient, stream: Stream) -> dict[str, Any]:
    """What a replica says about the session: its seq and its state."""
    url = f"/v1/sessions/{stream.session_id}"
    described = await patiently(lambda: client.get(url))
    assert described.status_code == 200, described.text
    state = await patiently(lambda: client.get(f"{url}/state"))
    assert state.status_code == 200, state.text
    return {"seq": described.json()["seq"], "state": state.json()["state"]}


def metric(text: str, name: str, labels: str = "") -> float:
    """A sample from a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} " if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
