"""Generate text from the character LM token by token over one WebSocket.

    python examples/generate_text.py [--url http://127.0.0.1:8000] [--model char-lm]
                                     [--prompt "def "] [--length 300]
                                     [--temperature 0.8] [--top-k 20] [--seed 0]

The server carries the LSTM state; the client sends the prompt once, then one sampled
character per message, and samples from the logits it gets back (temperature and top-k on
the client side). If the socket drops, the client reconnects to the same session and resends
its last message with the same `seq`: the server answers it again without advancing, so the
text goes on exactly where it was. Needs only websockets and httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
from typing import Any

import httpx
import websockets


def sample(logits: list[float], temperature: float, top_k: int, rng: random.Random) -> int:
    """A token id drawn from softmax(logits / temperature), keeping the top_k best (0: all)."""
    if temperature <= 0:
        return max(range(len(logits)), key=logits.__getitem__)
    ranked = sorted(range(len(logits)), key=logits.__getitem__, reverse=True)
    kept = ranked[:top_k] if top_k > 0 else ranked
    peak = logits[kept[0]]
    weights = [math.exp((logits[i] - peak) / temperature) for i in kept]
    return rng.choices(kept, weights=weights)[0]


class Stream:
    """One session over a WebSocket that reconnects and resends on a dropped connection."""

    def __init__(self, ws_url: str, model: str) -> None:
        self.ws_url = ws_url
        self.model = model
        self.session_id = ""
        self.socket: Any = None

    async def open(self) -> None:
        self.socket = await websockets.connect(f"{self.ws_url}/v1/models/{self.model}/stream")
        hello = json.loads(await self.socket.recv())
        if "error" in hello:
            sys.exit(f"cannot open a session: {hello['error']['message']}")
        self.session_id = hello["session_id"]

    async def step(self, seq: int, tokens: list[int]) -> dict[str, Any]:
        message = json.dumps({"seq": seq, "inputs": tokens})
        for attempt in range(5):
            try:
                await self.socket.send(message)
                answer: dict[str, Any] = json.loads(await self.socket.recv())
            except (websockets.ConnectionClosedError, OSError):
                await asyncio.sleep(0.2 * 2**attempt)
                url = f"{self.ws_url}/v1/sessions/{self.session_id}/stream"
                self.socket = await websockets.connect(url)
                continue
            if "error" in answer:
                sys.exit(f"\nserver error: {answer['error']}")
            return answer
        sys.exit("\nthe connection keeps dropping")

    async def close(self) -> None:
        await self.socket.close()


async def generate(args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=args.url, timeout=10) as client:
        card = (await client.get(f"/v1/models/{args.model}")).json()["card"]
    vocabulary: list[str] | None = card.get("labels")
    if vocabulary is None:  # a token model without a character table: show the ids
        vocabulary = [f"<{i}>" for i in range(card["vocab_size"])]
    index = {char: i for i, char in enumerate(vocabulary)}
    prompt = [index.get(char, 0) for char in args.prompt] or [0]
    rng = random.Random(args.seed)
    stream = Stream(args.url.replace("http", "ws", 1), args.model)
    await stream.open()
    print(args.prompt, end="", flush=True)
    answer = await stream.step(0, prompt)
    for _ in range(args.length):
        token = sample(answer["outputs"][-1], args.temperature, args.top_k, rng)
        print(vocabulary[token], end="", flush=True)
        answer = await stream.step(answer["seq"], [token])
    print(f"\n\n[session {stream.session_id}, {answer['seq']} steps]")
    await stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="char-lm")
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(generate(parser.parse_args()))


if __name__ == "__main__":
    main()
